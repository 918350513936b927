"""The two long tables every evaluation writes and the statistics and report read.

``aggregates`` — one row per (text set, metric, statistic)::

    set_name, set_kind, condition, target, seed, source, generation,
    metric, family, higher_is_better, statistic, primary, value, ci_low, ci_high, n, n_undefined

``primary`` marks the one statistic per metric that the tests, concordance and plots use.

``per_item`` — one row per (text set, metric, item)::

    set_name, set_kind, condition, target, seed, source, generation, metric, item_id, value

``set_kind`` is "condition" (a model's responses to the test prompts), "source" (a source's
synthetic training answers) or "human" (the human references). Both are written as Parquet and
CSV; pandas and ``datasets`` read them directly.
"""

from __future__ import annotations

AGGREGATE_COLUMNS = [
    "set_name", "set_kind", "condition", "target", "seed", "source", "generation",
    "metric", "family", "higher_is_better", "statistic", "primary", "value", "ci_low", "ci_high", "n",
    "n_undefined",
]
PER_ITEM_COLUMNS = [
    "set_name", "set_kind", "condition", "target", "seed", "source", "generation", "metric", "item_id", "value",
]
SET_COLUMNS = ["set_name", "set_kind", "condition", "target", "seed", "source", "generation"]
