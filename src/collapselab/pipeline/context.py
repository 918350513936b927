"""What a runner may touch (:class:`StageContext`) and the model pool the executors share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab.config.spec import ExperimentSpec, ModelSpec, VllmRunSpec
from collapselab.models.base import LanguageModel
from collapselab.pipeline.stage import Stage
from collapselab.store.run import RunStore


class ModelPool:
    """Keeps the most recently used model loaded: consecutive stages on the same model (the
    shards of one source, say) load it once. One at a time, to bound memory.

    ``vllm/`` models (unless ``run.vllm`` asks for the in-process per-model path: ``shared_engine``
    false, one engine, no batch invariance, no separate interpreter) run on engine processes
    (:mod:`collapselab.models.vllm_engine`): with ``shared_engine`` one engine (or
    ``data_parallel`` engines) per base model serves every adapter of it, so all stages of the
    fine-tuned models of one base model that follow each other use one engine; another base model
    or any other model ends the engine processes, which frees their GPU memory. ``lora_rank``:
    the largest LoRA rank the run's adapters will have (engines start with LoRA on and that
    ``max_lora_rank``); ``log_dir``: where the engines' logs go. A custom ``loader`` (tests) is
    used for every model, vLLM ones included.
    """

    def __init__(self, loader: Callable[[ModelSpec], LanguageModel] | None = None, *,
                 vllm: VllmRunSpec | None = None, lora_rank: int | None = None,
                 log_dir: Path | None = None, ray_address: str | None = None) -> None:
        from collapselab.models.base import load_model

        self._loader = loader or load_model
        self._engines_allowed = loader is None
        self._vllm = vllm or VllmRunSpec()
        self._lora_rank = lora_rank
        self._log_dir = log_dir
        self._ray_address = ray_address
        self._key: str | None = None
        self._model: LanguageModel | None = None
        self._engines: Any = None  # a vllm_engine.EngineGroup

    @classmethod
    def for_run(cls, spec: ExperimentSpec, run_dir: Path | None = None) -> ModelPool:
        """The pool of a run: ``run.vllm``'s settings, the largest ``lora.r`` of the targets when
        the run fine-tunes them, the engines' logs in ``RUN_DIR/logs``."""
        rank = max((spec.lora_for(n).r for n in spec.target_names), default=None) if spec.trained_conditions \
            else None
        return cls(vllm=spec.run.vllm, lora_rank=rank, log_dir=Path(run_dir) / "logs" if run_dir else None,
                   ray_address=spec.run.ray_address)

    @property
    def key(self) -> str | None:
        """What is loaded: a model spec's JSON, ``engine:<base model>`` (a shared engine) or
        ``model:<model>`` (an engine process of one model); None when nothing is."""
        return self._key

    def get(self, spec: ModelSpec) -> LanguageModel:
        if self._engines_allowed:
            from collapselab.models.vllm_engine import uses_engine_process

            if uses_engine_process(spec, self._vllm):
                return self._engine_model(spec)
        key = spec.model_dump_json()
        if key != self._key:
            self.close()
            self._model, self._key = self._loader(spec), key
        assert self._model is not None
        return self._model

    def _engine_model(self, spec: ModelSpec) -> LanguageModel:
        from collapselab.models.vllm_engine import EngineGroup, engine_key

        key = engine_key(spec, self._vllm)
        if key != self._key:
            self.close()
            self._engines = EngineGroup(spec, self._vllm, lora_rank=self._lora_rank, log_dir=self._log_dir,
                                        ray_address=self._ray_address)
            self._key = key
        return self._engines.model(spec)

    def close(self) -> None:
        model, engines = self._model, self._engines
        self._model, self._engines, self._key = None, None, None
        if model is not None:
            model.close()
        if engines is not None:
            engines.close()


@dataclass
class StageContext:
    """Everything a runner may touch."""

    stage: Stage
    out: Path
    spec: ExperimentSpec
    store: RunStore
    models: ModelPool
    set_total: Callable[[int], None]
    advance: Callable[[int], None]

    def input_dir(self, stage: Stage) -> Path:
        return self.store.final_dir(stage.ref)
