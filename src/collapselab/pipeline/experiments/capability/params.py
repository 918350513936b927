"""Typed runtime parameters of the capability experiment's stage kinds (not part of any key)."""

from __future__ import annotations

from dataclasses import dataclass

from collapselab.config.spec import ModelSpec
from collapselab.pipeline.experiments.spine.params import CellParams


@dataclass(frozen=True)
class CapabilityParams(CellParams):
    """One model's lm-eval run: a cell (the vanilla target, or a fine-tuned adapter), the ``model``
    the runner loads (the target through transformers: a ``vllm/`` target's weights folder is the
    hf backend's; the executors and the memory estimate read it) and lm-eval's batch size
    (``capability.batch_size``: changes no score by design, so not in the key)."""

    model: ModelSpec | None = None
    batch_size: int = 8


def transformers_spec(target: ModelSpec) -> ModelSpec:
    """The target as the hf backend loads it (lm-eval's HF model needs a transformers model)."""
    return target if target.backend == "hf" else target.model_copy(update={"id": f"hf/{target.name}"})
