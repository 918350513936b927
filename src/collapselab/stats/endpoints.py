"""Primary endpoints and the correction across them (audit c5).

A run tests dozens of metric families; correcting only within each metric's pairs (the study's
Bonferroni) leaves the family-wise error across metrics uncontrolled. A config declares its primary
endpoints per experiment (``stats.primary``; by default the study's headline outcomes,
:data:`collapselab.config.spec.DEFAULT_PRIMARY`). Their pairwise tests form **one family**:

* the headline family of each scope only — the single seed's tests (items are the unit: the
  claim is about the trained models at hand); with several seeds the mixed model's (runs are the
  unit: the claim is about the recipes), or where it could not be fitted the seed-level tests, or
  else the pooled ones. The other families are replications of the same question, not new
  questions;
* corrected across all endpoints × pairs together with Holm (1979) (``correction: holm``) or
  Bonferroni, from the raw p-values: column ``p_primary``.

Every other row is ``endpoint = "exploratory"`` (its within-family ``p_adj`` stays as computed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from collapselab.stats.hypothesis import adjust_pvalues

#: the pairwise tests of every experiment's test table
PAIR_TESTS = ("mann_whitney", "van_elteren", "wilcoxon", "mixed_t")
#: with several seeds, the family whose pairs are the headline, in order of preference
HEADLINE_FAMILIES = ("mixed-model", "seed-level", "pooled")


def metric_base(name: object) -> str:
    """``lexical_diversity[mode=individual]`` → ``lexical_diversity`` (and ``x.stat`` → ``x``)."""
    return str(name).split("[", 1)[0].split(".", 1)[0]


def is_endpoint(metric: pd.Series, wanted: Sequence[str]) -> pd.Series:
    """Rows whose metric is one of ``wanted``: a base name covers every setting and statistic of
    the metric, an exact reported name only itself."""
    wanted = set(wanted)
    return metric.map(lambda m: str(m) in wanted or metric_base(m) in wanted).astype(bool)


def _headline(tests: pd.DataFrame) -> pd.Series:
    """Rows of each scope's headline family (module docstring)."""
    from collapselab.stats.summary import RESULT_COLUMNS

    if "seed" not in tests.columns:
        return pd.Series(True, index=tests.index)
    seed = tests["seed"].astype(str)
    keys = [c for c in tests.columns if c not in (*RESULT_COLUMNS, "endpoint", "p_primary")]
    scope = (pd.Series(list(zip(*(tests[k].map(str) for k in keys), strict=True)), index=tests.index) if keys
             else pd.Series([()] * len(tests), index=tests.index, dtype=object))
    tested = tests["test"].isin(PAIR_TESTS) & tests["p"].notna()
    chosen = pd.Series(False, index=tests.index)
    for _, idx in scope.groupby(scope, sort=False).groups.items():
        if not seed[idx].isin(HEADLINE_FAMILIES).any():  # one seed: every row of the scope is its family
            chosen[idx] = True
            continue
        family = next((f for f in HEADLINE_FAMILIES if (tested[idx] & (seed[idx] == f)).any()), None)
        chosen[idx] = seed[idx] == family  # none of them tested: no headline row (never the per-seed ones)
    return chosen


def unit_of(tests: pd.DataFrame) -> str:
    """"runs" when the primary rows (or else any rows) of a test table use runs as the unit, else
    "items"."""
    if tests.empty or "unit" not in tests.columns:
        return "items"
    rows = tests[tests["endpoint"] == "primary"] if "endpoint" in tests.columns else tests
    rows = rows if not rows.empty else tests
    return "runs" if (rows["unit"] == "runs").any() else "items"


def mark_endpoints(tests: Mapping[str, pd.DataFrame], primary: Mapping[str, Sequence[str]],
                   correction: str = "holm") -> dict[str, pd.DataFrame]:
    """Each experiment's test table with ``endpoint`` ("primary" | "exploratory") and ``p_primary``
    (the p-value corrected with ``correction`` across every primary row of every experiment; NaN
    elsewhere). ``primary``: ``{experiment: metric names}`` (:func:`is_endpoint`)."""
    if correction not in ("holm", "bonferroni"):
        raise ValueError(f"unknown correction {correction!r} for the primary endpoints; use 'holm' or 'bonferroni'")
    out = {name: frame.copy() for name, frame in tests.items()}
    chosen: list[tuple[str, pd.Index]] = []
    for name, frame in out.items():
        frame["endpoint"] = "exploratory"
        frame["p_primary"] = np.nan
        if frame.empty or "test" not in frame.columns:
            continue
        is_primary = (frame["test"].isin(PAIR_TESTS) & is_endpoint(frame["metric"], primary.get(name, ()))
                      & _headline(frame) & frame["p"].notna())
        frame.loc[is_primary, "endpoint"] = "primary"
        chosen.append((name, frame.index[is_primary]))
    raw = np.concatenate([out[name].loc[idx, "p"].to_numpy(dtype=float) for name, idx in chosen]) if chosen \
        else np.zeros(0)
    adjusted = adjust_pvalues(raw, correction) if raw.size else raw
    start = 0
    for name, idx in chosen:
        out[name].loc[idx, "p_primary"] = adjusted[start:start + len(idx)]
        start += len(idx)
    return out


def untested_endpoints(tests: Mapping[str, pd.DataFrame], primary: Mapping[str, Sequence[str]]) -> list[str]:
    """``experiment: metric`` for every declared primary endpoint without a primary test row (a
    corpus-level metric such as Heaps' β has no per-item values to test; a metric the run did not
    measure has none either)."""
    out = []
    for name, wanted in primary.items():
        frame = tests.get(name)
        rows = (frame.loc[frame["endpoint"] == "primary", "metric"]
                if frame is not None and not frame.empty and "endpoint" in frame.columns else pd.Series(dtype=object))
        out += [f"{name}: {m}" for m in wanted if not is_endpoint(rows, [m]).any()]
    return out
