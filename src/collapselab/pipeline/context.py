"""What a runner may touch (:class:`StageContext`) and the model pool the executors share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collapselab.config.spec import ExperimentSpec, ModelSpec
from collapselab.models.base import LanguageModel
from collapselab.pipeline.stage import Stage
from collapselab.store.run import RunStore


class ModelPool:
    """Keeps the most recently used model loaded: consecutive stages on the same model (the
    shards of one source, say) load it once. One at a time, to bound memory."""

    def __init__(self, loader: Callable[[ModelSpec], LanguageModel] | None = None) -> None:
        from collapselab.models.base import load_model

        self._loader = loader or load_model
        self._key: str | None = None
        self._model: LanguageModel | None = None

    def get(self, spec: ModelSpec) -> LanguageModel:
        key = spec.model_dump_json()
        if key != self._key:
            self.close()
            self._model, self._key = self._loader(spec), key
        assert self._model is not None
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
        self._model, self._key = None, None


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
