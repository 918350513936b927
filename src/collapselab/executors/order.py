"""The order the local executor runs stages in: graph order, except that a run with a shared vLLM
engine (``run.vllm.shared_engine``) groups the stages that use one engine.

A shared engine serves every adapter of one base model, but the pool keeps one engine at a time:
in graph order the stages of one base model are interleaved with other models' (the safety
judge's, a source's), and every switch ends an engine and starts another (minutes on a GPU).
:func:`engine_order` keeps every stage after its inputs and, among the stages whose inputs are
done, prefers one on the model or engine already loaded, then one that loads no model (the
engine stays up meanwhile), then one that does not start a vLLM engine (another model, training),
then the first in graph order. So the work of one engine is not cut by stages that could run
before it (a mock or hf judge's candidates, say). Where the order changes, nothing else does:
stage folders are content-addressed, so their contents do not depend on when they ran.

Which engine a stage uses is read from its params (``model``, else ``target``: the model the
runner loads, its adapter aside, which does not change the engine); a ``train`` stage closes the
pool; a model-loading stage whose model cannot be read (a curation step's) counts as a switch.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from collapselab.config.spec import ExperimentSpec, ModelSpec, VllmRunSpec
from collapselab.pipeline.kinds import stage_kind
from collapselab.pipeline.stage import Stage

#: stages of these kinds close the model pool (training needs the GPU's memory)
RELEASES = ("train",)
_RELEASE = "release"
_OTHER = "other"


def stage_model(stage: Stage) -> ModelSpec | None:
    """The model a model-loading stage's runner asks the pool for (:attr:`Stage.model`)."""
    return stage.model


def stage_engine(stage: Stage, settings: VllmRunSpec) -> str | None:
    """The engine a stage runs on (:func:`~collapselab.models.vllm_engine.engine_key`), None when
    it loads no model, ``"release"`` when it closes the pool, ``"other"`` for any other model."""
    from collapselab.models.vllm_engine import engine_key, uses_engine_process

    if stage.kind in RELEASES:
        return _RELEASE
    if not stage_kind(stage.kind).loads_model:
        return None
    model = stage_model(stage)
    if model is not None and uses_engine_process(model, settings):
        return engine_key(model, settings)
    return _OTHER + (f":{model.model_dump_json()}" if model is not None else "")


def engine_order(stages: Sequence[Stage], spec: ExperimentSpec,
                 is_done: Callable[[Stage], bool] = lambda s: False) -> list[Stage]:
    """``stages`` in the order to run them (see the module docstring): unchanged unless
    ``run.vllm.shared_engine`` is on and some stage runs on a vLLM engine process. ``is_done``:
    stages already done (skipped: they neither load nor release anything). Inputs missing from
    ``stages`` count as done (as the executors treat them)."""
    settings = spec.run.vllm
    if not settings.shared_engine:
        return list(stages)
    keys = [None if is_done(s) else stage_engine(s, settings) for s in stages]
    if not any(k is not None and k.startswith("engine:") for k in keys):
        return list(stages)
    index = {s.label: i for i, s in enumerate(stages)}
    waiting = [sum(1 for i in s.inputs if i.label in index) for s in stages]
    users: list[list[int]] = [[] for _ in stages]
    for i, s in enumerate(stages):
        for inp in s.inputs:
            if inp.label in index:
                users[index[inp.label]].append(i)
    ready_all: list[int] = []  # heaps of stage positions, with lazy removal of taken ones
    ready_no_engine: list[int] = []
    ready_by_key: dict[str | None, list[int]] = {}

    def make_ready(i: int) -> None:
        heapq.heappush(ready_all, i)
        heapq.heappush(ready_by_key.setdefault(keys[i], []), i)
        if keys[i] is None or not keys[i].startswith("engine:"):
            heapq.heappush(ready_no_engine, i)

    def pop(heap: list[int]) -> int | None:
        while heap and taken[heap[0]]:
            heapq.heappop(heap)
        return heapq.heappop(heap) if heap else None

    taken = [False] * len(stages)
    for i, n in enumerate(waiting):
        if n == 0:
            make_ready(i)
    order: list[Stage] = []
    current: str | None = None
    while len(order) < len(stages):
        pick = pop(ready_by_key.get(current, [])) if current is not None else None
        if pick is None:
            pick = pop(ready_by_key.get(None, []))
        if pick is None:
            pick = pop(ready_no_engine)
        if pick is None:
            pick = pop(ready_all)
        assert pick is not None, "the stage graph has a cycle"
        taken[pick] = True
        order.append(stages[pick])
        if keys[pick] == _RELEASE:
            current = None
        elif keys[pick] is not None:
            current = keys[pick]
        for user in users[pick]:
            waiting[user] -= 1
            if waiting[user] == 0:
                make_ready(user)
    return order
