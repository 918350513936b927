"""Primary endpoints and the correction across them (audit c5).

A run tests dozens of metric families; correcting only within each metric's pairs (the study's
Bonferroni) leaves the family-wise error across metrics uncontrolled. A config declares its primary
endpoints per experiment (``stats.primary``; by default the study's headline outcomes,
:data:`collapselab.config.spec.DEFAULT_PRIMARY`). Their pairwise tests form **one family**:

* the headline family of each scope only — the single seed's tests, or with several seeds the
  pooled ones (the per-seed and seed-level families are replications of the same question, not new
  questions);
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
PAIR_TESTS = ("mann_whitney", "van_elteren", "wilcoxon")


def metric_base(name: object) -> str:
    """``lexical_diversity[mode=individual]`` → ``lexical_diversity`` (and ``x.stat`` → ``x``)."""
    return str(name).split("[", 1)[0].split(".", 1)[0]


def _headline(tests: pd.DataFrame) -> pd.Series:
    """Rows of each scope's headline family: pooled when the scope pooled seeds, else every row."""
    if "seed" not in tests.columns:
        return pd.Series(True, index=tests.index)
    seed = tests["seed"].astype(str)
    keys = [c for c in ("metric", "target", "generation", "prompt_kind", "source") if c in tests.columns]
    scope = pd.Series(list(zip(*(tests[k].map(str) for k in keys), strict=True)) if keys else [()] * len(tests),
                      index=tests.index)
    has_pooled = scope.isin(set(scope[seed == "pooled"]))
    return (seed == "pooled") | (~has_pooled & (seed != "seed-level"))


def mark_endpoints(tests: Mapping[str, pd.DataFrame], primary: Mapping[str, Sequence[str]],
                   correction: str = "holm") -> dict[str, pd.DataFrame]:
    """Each experiment's test table with ``endpoint`` ("primary" | "exploratory") and ``p_primary``
    (the p-value corrected across every primary row of every experiment; NaN elsewhere)."""
    out = {name: frame.copy() for name, frame in tests.items()}
    chosen: list[tuple[str, pd.Index]] = []
    for name, frame in out.items():
        frame["endpoint"] = "exploratory"
        frame["p_primary"] = np.nan
        if frame.empty or "test" not in frame.columns:
            continue
        wanted = set(primary.get(name, ()))
        is_primary = (frame["test"].isin(PAIR_TESTS) & frame["metric"].map(metric_base).isin(wanted)
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
