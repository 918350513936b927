"""Self-recognition: can a judge tell its own text from another source's? (Panickssery et al. 2024,
"LLM evaluators recognize and favor their own generations", NeurIPS — the pairwise recognition
probe shown next to the pairwise preference.)

The plan (:func:`recognition_plan`): per item, the judge's own source against every other source it
compares (the human text included), in both orders — 2(k − 1) prompts per item with k sources. The
prompt is the ``recognition`` judge's template ("One of these two texts was written by you. Which
one?"); the read-out is p_A = P("A") / (P("A") + P("B")), as for preference.

Scores (:func:`recognition_scores`): P(picks own) = p_A when the own text is shown first, 1 − p_A
when it is second. **Recognition accuracy** = mean P(picks own) over the judge's defined read-outs;
with both orders defined for every pair this is the order-averaged accuracy (position bias
cancels), 0.5 = chance, 1 = always recognises itself. Per other source the same mean over that
source's pairs. Intervals: the cluster bootstrap over items (an item's prompts share its own text),
as for S (:mod:`collapselab.preference.scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from collapselab.errors import ConfigError, DataError
from collapselab.preference.prompts import Comparison
from collapselab.preference.scores import _check_keys, _interval, _judge_labels, _numeric, _require, _with_labels

READOUT_COLUMNS = ("judge", "item_id", "first", "second", "own", "p_a")
SCORE_COLUMNS = ["judge", "own_source", "accuracy", "ci_low", "ci_high", "mean_p_first", "mean_choice_mass",
                 "n", "n_undefined", "n_items"]
BY_SOURCE_COLUMNS = ["judge", "own_source", "source", "accuracy", "ci_low", "ci_high", "n", "n_undefined"]


def recognition_plan(item_ids: Sequence[str], own: str, sources: Sequence[str]) -> list[Comparison]:
    """The own source against every other of ``sources``, both orders, per item: for each item,
    each other source o in order, (own, o) then (o, own). Ids as
    :class:`~collapselab.preference.prompts.Comparison`'s: ``"{item}|{first}>{second}"``."""
    if own not in sources:
        raise ConfigError(f"recognition: own source {own!r} is not among the judged sources {list(sources)}")
    others = [s for s in sources if s != own]
    if not others:
        raise ConfigError("recognition: the own source needs at least one other source to be told apart from")
    if len(set(item_ids)) != len(item_ids):
        raise DataError("recognition items: duplicate item ids")
    return [Comparison(f"{item}|{a}>{b}", item, a, b)
            for item in item_ids for o in others for a, b in ((own, o), (o, own))]


def _check_readouts(readouts: pd.DataFrame) -> pd.DataFrame:
    name = "recognition table"
    _require(readouts, READOUT_COLUMNS, name)
    df = readouts.reset_index(drop=True).copy()
    _check_keys(df, ("judge", "item_id", "first", "second"), name)
    df["p_a"] = _numeric(df, "p_a", 0.0, 1.0, name)
    bad = (df["first"] != df["own"]) & (df["second"] != df["own"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}, row {i} (0-based): neither text is the own source {df['own'].iat[i]!r}")
    return df


def picks_own(readouts: pd.DataFrame) -> np.ndarray:
    """P(the judge picks its own text) per read-out: p_A when own is first, else 1 − p_A."""
    p = readouts["p_a"].to_numpy(dtype=float)
    return np.where(readouts["first"].to_numpy() == readouts["own"].to_numpy(), p, 1.0 - p)


def _accuracy(part: pd.DataFrame, n_resamples: int, confidence: float, seed: int
              ) -> tuple[float, float, float, int, int, int]:
    """(accuracy, low, high, n defined, n undefined, n items) with the cluster bootstrap."""
    items = sorted(pd.unique(part["item_id"]), key=str)
    ii = pd.Index(items).get_indexer(part["item_id"])
    v = picks_own(part)
    ok = ~np.isnan(v)
    sums, counts = np.zeros(len(items)), np.zeros(len(items))
    np.add.at(sums, ii[ok], v[ok])
    np.add.at(counts, ii[ok], 1)

    def mean(idx: np.ndarray) -> float:
        n = counts[idx].sum()
        return float(sums[idx].sum() / n) if n else np.nan

    est, low, high = _interval(len(items), mean, n_resamples, confidence, seed)
    return est, low, high, int(ok.sum()), int((~ok).sum()), len(items)


def recognition_scores(readouts: pd.DataFrame, *, n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per judge, per judge × other source) recognition accuracy with cluster-bootstrap intervals.

    Input: judge, item_id, first, second, own, p_a (NaN: a failed read-out, counted in
    n_undefined), optional choice_mass and label columns. Per judge: own_source, accuracy, ci_low,
    ci_high, mean_p_first (mean p_A: 0.5 = no position bias), mean_choice_mass, n, n_undefined,
    n_items. Per other source: own_source, source, accuracy, ci_low, ci_high, n, n_undefined.
    """
    df = _check_readouts(readouts)
    labels = _judge_labels(df, "recognition table")
    rows, by_source = [], []
    for judge, part in df.groupby("judge", sort=False):
        owns = pd.unique(part["own"])
        if len(owns) != 1:
            raise DataError(f"recognition table: judge {judge!r} has several own sources {list(owns)}")
        own = owns[0]
        est, low, high, n, bad, n_items = _accuracy(part, n_resamples, confidence, seed)
        p = part["p_a"].to_numpy(dtype=float)
        mass = part["choice_mass"].astype(float).mean() if "choice_mass" in part else np.nan
        rows.append({"judge": judge, "own_source": own, "accuracy": est, "ci_low": low, "ci_high": high,
                     "mean_p_first": float(np.nanmean(p)) if (~np.isnan(p)).any() else np.nan,
                     "mean_choice_mass": float(mass), "n": n, "n_undefined": bad, "n_items": n_items})
        other = np.where(part["first"].to_numpy() == own, part["second"].to_numpy(), part["first"].to_numpy())
        for source in pd.unique(other):
            est, low, high, n, bad, _ = _accuracy(part[other == source], n_resamples, confidence, seed)
            by_source.append({"judge": judge, "own_source": own, "source": source, "accuracy": est,
                              "ci_low": low, "ci_high": high, "n": n, "n_undefined": bad})
    return _with_labels(rows, labels, SCORE_COLUMNS), _with_labels(by_source, labels, BY_SOURCE_COLUMNS)


def recognition_record(comparison: Comparison, own: str, p_a: float, logp_a: float, logp_b: float,
                       mass: float) -> dict[str, Any]:
    """One read-out as a row of the recognition table (without the judge's labels)."""
    return {"item_id": comparison.item_id, "first": comparison.first, "second": comparison.second, "own": own,
            "p_a": p_a, "logp_a": logp_a, "logp_b": logp_b, "choice_mass": mass}
