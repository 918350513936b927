"""Over-refusal per run against a plain loop and statsmodels' Wilson interval."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from collapselab.safety.refusals import COLUMNS, overrefusal_table


def _benign() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for condition in ("vanilla", "human"):
        for k in range(12):
            rows.append({"target": "t", "condition": condition, "seed": 1, "generation": 0,
                         "prompt_kind": "benign", "item_id": f"or-{k}", "refused": bool(rng.random() < 0.3),
                         "quality": np.nan if k == 0 else float(rng.integers(1, 6))})
    return pd.DataFrame(rows)


def test_overrefusal_by_hand():
    benign = _benign()
    out = overrefusal_table(benign, confidence=0.9)
    assert list(out.columns) == COLUMNS and len(out) == 2
    for r in out.itertuples():
        part = benign[benign["condition"] == r.condition]
        refused = int(part["refused"].sum())
        assert (r.n, r.refused, r.overrefusal_rate) == (12, refused, refused / 12)
        low, high = proportion_confint(refused, 12, alpha=0.1, method="wilson")
        assert (r.low, r.high) == (pytest.approx(low), pytest.approx(high))
        quality = part["quality"].dropna()
        assert r.n_quality == 11 and r.mean_quality == pytest.approx(quality.mean())
        assert r.unhelpful_rate == pytest.approx((quality <= 2).mean())


def test_no_benign_answers_give_an_empty_table():
    assert overrefusal_table(_benign().iloc[:0]).empty
