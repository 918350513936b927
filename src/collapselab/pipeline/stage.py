"""One node of the stage graph.

A :class:`Stage` carries the settings that decide its content (hashed into its key together with
its inputs' keys and its kind's code version) and, separately, typed runtime parameters that do
not (model specs with non-semantic fields, the set a stage measures, ...): each kind's
``params`` type (see :mod:`collapselab.pipeline.kinds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from collapselab.pipeline.kinds import NoParams, stage_kind
from collapselab.store.keys import stage_key
from collapselab.store.run import StageRef


@dataclass(frozen=True, eq=False)
class Stage:
    """One node of the graph: ``kind/name``, its key settings, inputs and typed params."""

    kind: str
    name: str
    settings: dict[str, Any]
    inputs: tuple[Stage, ...] = ()
    params: Any = field(default_factory=NoParams)  # the kind's params type; not part of the key
    resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = stage_kind(self.kind)
        kind.check_params(self.params)
        if not self.resources:  # the kind's default request (a copy: run.gpus may add to it)
            object.__setattr__(self, "resources", dict(kind.resources))

    @cached_property
    def key(self) -> str:
        return stage_key(self.kind, stage_kind(self.kind).version, self.settings, [i.key for i in self.inputs])

    @property
    def ref(self) -> StageRef:
        return StageRef(self.kind, self.name, self.key)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def model(self) -> Any:
        """The model spec (a ``ModelSpec``) its runner asks the model pool for, its adapter aside,
        when its params name one (``model``, else ``target``); None otherwise."""
        from collapselab.config.spec import ModelSpec

        for name in ("model", "target"):
            value = getattr(self.params, name, None)
            if isinstance(value, ModelSpec):
                return value
        return None

    def input(self, kind: str, **match: Any) -> Stage:
        """The single input of a kind (optionally matching params fields), e.g. ``stage.input("prepare")``."""
        found = [s for s in self.inputs
                 if s.kind == kind and all(getattr(s.params, k, None) == v for k, v in match.items())]
        if len(found) != 1:
            raise LookupError(f"{self.label}: expected one {kind} input matching {match}, found {len(found)}")
        return found[0]
