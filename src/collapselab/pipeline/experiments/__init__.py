"""The experiments that plug into the spine.

Each experiment is a package exposing ``add_stages(spec, spine) -> list[Stage]`` (its stages,
built from the shared :class:`~collapselab.pipeline.experiments.spine.Spine`) and registering its
stage kinds when imported. :data:`EXPERIMENTS` lists them in the order their stages follow the
spine's; adding an experiment is one package and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments import collapse, preference, safety, spine
from collapselab.pipeline.stage import Stage

#: (name, add_stages) of every experiment, in graph order
EXPERIMENTS: tuple[tuple[str, Callable[[ExperimentSpec, spine.Spine], list[Stage]]], ...] = (
    ("collapse", collapse.add_stages),
    ("safety", safety.add_stages),
    ("preference", preference.add_stages),
)
