"""The experiments that plug into the spine.

Each experiment is a package (or a module) exposing ``add_stages(spec, spine) -> list[Stage]``
(its stages, built from the shared :class:`~collapselab.pipeline.experiments.spine.Spine`) and
registering its stage kinds when imported; :func:`register_experiment` adds it to
:data:`EXPERIMENTS`, whose order is the order the graph appends their stages in. The built-in
experiments register below; a plug-in registers the same way from its own module, which the
graph imports through the ``collapselab.plugins`` entry-point group (see docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable

from collapselab.config.spec import ExperimentSpec
from collapselab.pipeline.experiments import capability, collapse, preference, safety, spine
from collapselab.pipeline.stage import Stage
from collapselab.registry import Registry

AddStages = Callable[[ExperimentSpec, spine.Spine], list[Stage]]

#: every experiment's ``add_stages``, in the order their stages follow the spine's
EXPERIMENTS: Registry[AddStages] = Registry("experiment")


def register_experiment(name: str, add_stages: AddStages, *, description: str = "") -> AddStages:
    """Add an experiment: ``add_stages(spec, spine)`` returns its stages (an empty list when the
    spec does not enable it). Its stages come after those of the experiments registered before."""
    EXPERIMENTS.add(name, add_stages, description=description)
    return add_stages


register_experiment("collapse", collapse.add_stages, description="Experiment 1: distribution collapse")
register_experiment("safety", safety.add_stages, description="Experiment 2: safety under harmful and jailbreak prompts")
register_experiment("preference", preference.add_stages, description="Experiment 3: self-preference bias")
register_experiment("capability", capability.add_stages,
                    description="Capability alongside collapse: lm-evaluation-harness tasks on every model")
