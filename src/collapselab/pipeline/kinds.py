"""Stage kinds: each kind of stage is declared once, as a :class:`StageKind`, and registered in
:data:`STAGE_KINDS` by the experiment module that owns it (see :mod:`collapselab.pipeline.experiments`).

The graph (keys), the executors (runners, resources), ``plan`` (sizing), ``status``, ``lineage``,
``ls stages`` and the report (which files it reads) all read this registry; there is no other
table of kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from collapselab.registry import Registry

if TYPE_CHECKING:
    from collapselab.pipeline.context import StageContext
    from collapselab.pipeline.sizing import Estimate, PlanContext
    from collapselab.pipeline.stage import Stage


@dataclass(frozen=True)
class NoParams:
    """Runtime parameters of a kind that needs none beyond its settings and inputs."""


@dataclass(frozen=True)
class StageKind:
    """Everything collapselab knows about one kind of stage.

    * ``name`` — the kind's name, the first part of every stage label (``respond/...``);
    * ``version`` — bump it when the runner changes what it writes: the kind's folders (and
      everything downstream) are then recomputed instead of silently reused (part of every key);
    * ``run`` — the runner: reads its inputs' folders, writes into ``ctx.out``;
    * ``params`` — the frozen dataclass of the kind's runtime parameters (not part of the key);
    * ``plan`` — how ``collapselab plan`` sizes one stage (items and tokens) without running it;
      ``unit`` — what its item count counts;
    * ``loads_model`` — whether it loads a language model (and so asks for ``run.gpus`` GPUs);
      ``resources`` — its default resource request (``cpus``, ``gpus``) for the Ray executor;
    * ``outputs`` — the files of its folder that the report or later stages read; ``report`` —
      whether the report reads them (such stages must be done before a report is written);
    * ``description`` — one line for ``collapselab ls stages``; ``experiment`` — who owns it.
    """

    name: str
    version: int
    run: Callable[[StageContext], None]
    plan: Callable[[Stage, PlanContext], Estimate]
    unit: str
    params: type = NoParams
    loads_model: bool = False
    resources: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({"cpus": 1}))
    outputs: tuple[str, ...] = ()
    report: bool = False
    description: str = ""
    experiment: str = ""

    def check_params(self, params: Any) -> None:
        """A stage's params must be this kind's params type (a typo'd kind fails at build time)."""
        if not isinstance(params, self.params):
            raise TypeError(f"stage kind {self.name!r} takes {self.params.__name__} params, "
                            f"not {type(params).__name__}")


#: Every registered stage kind, in registration order (inputs' kinds before their consumers').
STAGE_KINDS: Registry[StageKind] = Registry("stage kind")


def register_kind(kind: StageKind) -> StageKind:
    """Register ``kind`` (a duplicate name is an error)."""
    STAGE_KINDS.add(kind.name, kind, description=kind.description, experiment=kind.experiment)
    return kind


def stage_kind(name: str) -> StageKind:
    """The registered kind ``name`` (an unknown name says which exist)."""
    return STAGE_KINDS.get(name)
