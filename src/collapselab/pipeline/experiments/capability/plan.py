"""How ``plan`` sizes a capability stage: lm-eval's task sizes are not read offline, so only the
bound ``limit`` gives (items per task × tasks)."""

from __future__ import annotations

from collapselab.pipeline.sizing import Estimate, PlanContext
from collapselab.pipeline.stage import Stage


def plan_capability(stage: Stage, ctx: PlanContext) -> Estimate:
    """Items: ``capability.limit`` × tasks when a limit is set (a group counts as one task here:
    lm-eval applies the limit to each of its tasks); tokens unknown offline (log-likelihood or
    generation, as each task defines)."""
    c = ctx.spec.capability
    tasks = len(stage.settings["tasks"])
    items = c.limit * tasks if c.limit is not None else None
    shots = "each task's default number of" if c.num_fewshot is None else str(c.num_fewshot)
    items_text = f"at most {c.limit} items each" if c.limit else "every item (no limit)"
    notes = [f"lm-eval: {tasks} task(s), {items_text}, {shots} few-shot examples",
             "tokens unknown offline: lm-eval builds each task's prompts when it runs"]
    # forward passes only for multiple-choice tasks; generate_until tasks also sample (unknown here)
    return Estimate(stage.model.id, items, 0, None, None, bound=c.limit is not None, notes=notes)
