"""Experiment 3's scores: from a judge's pairwise read-outs to S, self-preference and pro-synthetic
bias, position bias, preference matrices, ratings and the tests across judge conditions.

Input: the comparisons table
----------------------------
One row per judge prompt: ``judge`` (the judge's name, e.g. "smollm2/single:a/seed42"),
``item_id``, ``first``, ``second`` (the sources shown as "Text A" and "Text B"), ``p_a`` and
optional label columns ``target``, ``condition``, ``seed`` (constant within a judge; carried into
every output). ``p_a`` = P("A") / (P("A") + P("B")) from the judge's next-token distribution, NaN
when the read-out failed (no probability mass on either letter). Failed rows are **counted**
(``n_undefined``) and left out of every average — never dropped silently.

Definitions (PAPER.md, "Experiment 3 — self-preference bias")
--------------------------------------------------------------
In a comparison the first source gets p_A and the second 1 − p_A.

* **S(source)** = mean of the probabilities a source got over all its (defined) comparisons.
  With the counterbalanced plan (every pair in both orders, :func:`~collapselab.preference.prompts.
  comparison_plan`) and no failures, Σ_sources S = k/2: every comparison hands out a total of 1.
* **SPB** (self-preference bias) = S(own family) − mean S(other synthetic sources); the mean is an
  unweighted mean of the other sources' S values.
* **PSB** (pro-synthetic bias) = mean S(synthetic sources) − S(human).

The study's vanilla 8B judge: S = Llama 0.805, Qwen 0.568, Gemma 0.587, Falcon 0.487, human 0.053
(own = Llama) → SPB = 0.805 − 0.547 = 0.258 and PSB = 0.612 − 0.053 = 0.559 (0.558 in the paper,
which rounded differently).

Uncertainty: a **cluster bootstrap over items** (:func:`~collapselab.stats.bootstrap.
bootstrap_ci_func`): item ids are resampled with replacement and every statistic is recomputed from
*all* comparisons of the resampled items — an item's k(k − 1) comparisons share the item's texts,
so they are not independent and resampling single comparisons would understate the uncertainty.
Items are taken in sorted order and every statistic of a judge uses the same seed, so S of every
source, SPB and PSB are evaluated on the very same resamples (SPB's interval reflects the joint
variability of S(own) and the others' S) and results do not depend on the row order of the input.
``n_resamples = 0`` gives the estimates without intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from collapselab.errors import DataError
from collapselab.stats.bootstrap import bootstrap_ci, bootstrap_ci_func
from collapselab.stats.hypothesis import Correction
from collapselab.stats.summary import RESULT_COLUMNS, compare_conditions

#: label columns carried from the input into every per-judge output (when present)
LABELS = ("target", "condition", "seed", "generation")
COMPARISON_COLUMNS = ("judge", "item_id", "first", "second", "p_a")
RATING_COLUMNS = ("judge", "item_id", "source", "rating")
#: columns of the per-item table (plus the label columns after ``judge``)
PER_ITEM_COLUMNS = ("judge", "item_id", "source", "metric", "value", "n_comparisons", "n_undefined")
#: the ``source`` of per-item PSB rows (PSB involves every source)
PSB_SOURCE = "synthetic vs human"

Statistic = Callable[[np.ndarray], float]


# -- input checks ----------------------------------------------------------------------------------
def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; it has {list(frame.columns)}")


def _row_text(df: pd.DataFrame, i: int, name: str) -> str:
    """How an error names one row: position (0-based), judge and item."""
    return f"{name}, row {i} (0-based; judge {df['judge'].iat[i]!r}, item {df['item_id'].iat[i]!r})"


def _numeric(df: pd.DataFrame, column: str, low: float, high: float, name: str) -> pd.Series:
    """``column`` as floats (None → NaN); a value outside [low, high] is a :class:`DataError`."""
    values = pd.to_numeric(df[column], errors="coerce").astype(float)
    unreadable = values.isna() & df[column].notna() & ~df[column].map(_is_nan)
    bad = unreadable | (values.notna() & ((values < low) | (values > high)))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = df[column].iat[i]
        value = value.item() if isinstance(value, np.generic) else value  # 1.5, not np.float64(1.5)
        raise DataError(f"{_row_text(df, i, name)}: {column} = {value!r} is not a number "
                        f"in [{low:g}, {high:g}] (use NaN for a failed read-out)")
    return values


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _check_keys(df: pd.DataFrame, keys: Sequence[str], name: str) -> None:
    for column in keys:
        if df[column].isna().any():
            i = int(np.flatnonzero(df[column].isna().to_numpy())[0])
            raise DataError(f"{name}, row {i} (0-based): {column} is missing")
    dup = df.duplicated(list(keys), keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        what = ", ".join(f"{k}={df[k].iat[i]!r}" for k in keys)
        raise DataError(f"{name}, row {i} (0-based): duplicate of an earlier row ({what}); "
                        "each must appear once")


def _judge_labels(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The label columns present, one row per judge (index = judge); a label that varies within a
    judge is a :class:`DataError` (a judge is one model, one condition, one seed)."""
    present = [c for c in LABELS if c in df.columns]
    grouped = df.groupby("judge", sort=False)
    if present:
        varying = grouped[present].nunique(dropna=False)
        bad = varying[(varying > 1).any(axis=1)]
        if len(bad):
            cols = [c for c in present if bad.iloc[0][c] > 1]
            raise DataError(f"{name}: judge {bad.index[0]!r} has several values of {cols}; "
                            "label columns must be constant within a judge")
    return grouped[present].first() if present else pd.DataFrame(index=pd.unique(df["judge"]))


def _check_comparisons(comparisons: pd.DataFrame) -> pd.DataFrame:
    name = "comparisons table"
    _require(comparisons, COMPARISON_COLUMNS, name)
    df = comparisons.reset_index(drop=True).copy()
    _check_keys(df, ("judge", "item_id", "first", "second"), name)
    same = (df["first"] == df["second"]).to_numpy()
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise DataError(f"{_row_text(df, i, name)}: first and second are both {df['first'].iat[i]!r}")
    df["p_a"] = _numeric(df, "p_a", 0.0, 1.0, name)
    return df


def _with_labels(rows: list[dict[str, Any]], labels: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A table of ``rows`` with the judge's label columns right after ``judge``."""
    out = pd.DataFrame(rows, columns=list(columns))
    label_cols = list(labels.columns)
    if label_cols:
        out = out.merge(labels, left_on="judge", right_index=True, how="left")
    return out[["judge", *label_cols, *[c for c in columns if c != "judge"]]]


# -- per-judge tallies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tally:
    """One judge's comparisons summed per item × source: ``sums`` the probability each source got,
    ``counts`` its defined comparisons, ``undefined`` its failed ones (arrays n_items × k)."""

    items: list[Any]
    sources: list[str]
    sums: np.ndarray
    counts: np.ndarray
    undefined: np.ndarray

    def scores(self, idx: np.ndarray) -> np.ndarray:
        """S of every source over the items ``idx`` (repeats allowed); NaN for a source with no
        defined comparison there. Pooling sums and counts = the mean over all those comparisons."""
        total = self.counts[idx].sum(axis=0)
        mass = self.sums[idx].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, mass / np.maximum(total, 1), np.nan)


def _source_order(part: pd.DataFrame) -> list[str]:
    """Sources in order of first appearance (row by row, first before second): the plan's order."""
    return list(pd.unique(np.column_stack([part["first"].to_numpy(), part["second"].to_numpy()]).ravel()))


def _tally(part: pd.DataFrame) -> _Tally:
    items = sorted(pd.unique(part["item_id"]), key=str)  # sorted: resamples ignore the row order
    sources = _source_order(part)
    ii = pd.Index(items).get_indexer(part["item_id"])
    fi = pd.Index(sources).get_indexer(part["first"])
    si = pd.Index(sources).get_indexer(part["second"])
    p = part["p_a"].to_numpy(dtype=float)
    ok = ~np.isnan(p)
    shape = (len(items), len(sources))
    sums, counts, undefined = np.zeros(shape), np.zeros(shape, dtype=int), np.zeros(shape, dtype=int)
    np.add.at(sums, (ii[ok], fi[ok]), p[ok])
    np.add.at(sums, (ii[ok], si[ok]), 1.0 - p[ok])
    for src in (fi, si):
        np.add.at(counts, (ii[ok], src[ok]), 1)
        np.add.at(undefined, (ii[~ok], src[~ok]), 1)
    return _Tally(items, sources, sums, counts, undefined)


def _interval(n_items: int, fn: Statistic, n_resamples: int, confidence: float, seed: int
              ) -> tuple[float, float, float]:
    """(estimate, low, high) of a statistic of the items, by the cluster bootstrap."""
    if n_resamples == 0:
        return float(fn(np.arange(n_items))), np.nan, np.nan
    r = bootstrap_ci_func(n_items, fn, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return r.estimate, r.low, r.high


# -- S per source ----------------------------------------------------------------------------------
def source_scores(comparisons: pd.DataFrame, *, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """S per judge × source with a cluster-bootstrap CI (percentile; items resampled).

    S(source) = (Σ probabilities the source got) / (number of its defined comparisons) — the mean
    over all its comparisons (PAPER.md, Experiment 3). Columns: judge, <labels>, source, S,
    ci_low, ci_high, n_comparisons (defined), n_undefined (failed read-outs, not in S), n_items.
    """
    df = _check_comparisons(comparisons)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        t = _tally(part)
        for j, source in enumerate(t.sources):
            est, low, high = _interval(len(t.items), lambda idx, t=t, j=j: t.scores(idx)[j],
                                       n_resamples, confidence, seed)
            rows.append({"judge": judge, "source": source, "S": est, "ci_low": low, "ci_high": high,
                         "n_comparisons": int(t.counts[:, j].sum()),
                         "n_undefined": int(t.undefined[:, j].sum()),
                         "n_items": int(((t.counts[:, j] + t.undefined[:, j]) > 0).sum())})
    return _with_labels(rows, labels, ["judge", "source", "S", "ci_low", "ci_high", "n_comparisons",
                                       "n_undefined", "n_items"])


# -- SPB and PSB -----------------------------------------------------------------------------------
def own_source_of(judge: Any, target: Any, own: Mapping[str, str | None]) -> str | None:
    """The judge's own family: ``own[judge]``, else ``own[target]`` (the config maps targets), else
    None."""
    if judge in own:
        return own[judge]
    if target is not None and not _is_nan(target) and target in own:
        return own[target]
    return None


def _spb_statistic(t: _Tally, own: str | None, human: str) -> tuple[Statistic | None, str]:
    """SPB as a function of the item indices, or (None, why it is undefined)."""
    if own is None:
        return None, "no own source for this judge: SPB undefined"
    if own == human:
        return None, f"own source is the human text {human!r}: SPB undefined"
    if own not in t.sources:
        return None, f"own source {own!r} is not among the judged sources {t.sources}: SPB undefined"
    j = t.sources.index(own)
    others = [i for i, s in enumerate(t.sources) if s not in (own, human)]
    if not others:
        return None, "no other synthetic source to compare the own source with: SPB undefined"
    return (lambda idx: float(_spb(t.scores(idx), j, others))), ""


def _spb(s: np.ndarray, own: int, others: list[int]) -> float:
    return s[own] - s[others].mean()


def _psb_statistic(t: _Tally, human: str) -> tuple[Statistic | None, str]:
    """PSB as a function of the item indices, or (None, why it is undefined)."""
    if human not in t.sources:
        return None, f"human source {human!r} is not among the judged sources {t.sources}: PSB undefined"
    h = t.sources.index(human)
    synthetic = [i for i, s in enumerate(t.sources) if s != human]
    return (lambda idx: float(t.scores(idx)[synthetic].mean() - t.scores(idx)[h])), ""


BIAS_COLUMNS = ["judge", "own_source", "SPB", "SPB_ci_low", "SPB_ci_high", "PSB", "PSB_ci_low",
                "PSB_ci_high", "S_own", "S_other_synthetic", "S_synthetic", "S_human", "n_items",
                "n_comparisons", "n_undefined", "note"]


def bias_scores(comparisons: pd.DataFrame, own: Mapping[str, str | None], human: str = "human", *,
                n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Self-preference and pro-synthetic bias per judge, with cluster-bootstrap CIs.

    SPB = S(own) − mean S(other synthetic sources); PSB = mean S(synthetic sources) − S(human)
    (PAPER.md, Experiment 3; synthetic = every source but ``human``). ``own`` maps a judge name
    (or, failing that, the judge's ``target`` label) to its own-family source. Both statistics are
    recomputed on the same item resamples as :func:`source_scores`. SPB is NaN, with a ``note``,
    when the judge has no own source, it is absent, or there is no other synthetic source; PSB
    likewise without the human source. Columns: judge, <labels>, own_source, SPB, SPB_ci_low,
    SPB_ci_high, PSB, PSB_ci_low, PSB_ci_high, S_own, S_other_synthetic (unweighted mean of the
    other synthetic sources' S), S_synthetic, S_human, n_items, n_comparisons, n_undefined, note.
    """
    df = _check_comparisons(comparisons)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        t = _tally(part)
        target = labels.at[judge, "target"] if "target" in labels.columns else None
        own_source = own_source_of(judge, target, own)
        s = dict(zip(t.sources, t.scores(np.arange(len(t.items))), strict=True))
        synthetic = [x for x in t.sources if x != human]
        others = [x for x in synthetic if x != own_source]
        row: dict[str, Any] = {
            "judge": judge, "own_source": own_source,
            "S_own": s.get(own_source, np.nan) if own_source != human else np.nan,
            "S_other_synthetic": float(np.mean([s[x] for x in others])) if others else np.nan,
            "S_synthetic": float(np.mean([s[x] for x in synthetic])) if synthetic else np.nan,
            "S_human": s.get(human, np.nan), "n_items": len(t.items),
            "n_comparisons": int(part["p_a"].notna().sum()), "n_undefined": int(part["p_a"].isna().sum()),
        }
        notes = []
        statistics = {"SPB": _spb_statistic(t, own_source, human), "PSB": _psb_statistic(t, human)}
        for name, (fn, why) in statistics.items():
            if fn is None:
                row.update({name: np.nan, f"{name}_ci_low": np.nan, f"{name}_ci_high": np.nan})
                notes.append(why)
                continue
            est, low, high = _interval(len(t.items), fn, n_resamples, confidence, seed)
            row.update({name: est, f"{name}_ci_low": low, f"{name}_ci_high": high})
        row["note"] = "; ".join(notes)
        rows.append(row)
    return _with_labels(rows, labels, BIAS_COLUMNS)


# -- position bias ---------------------------------------------------------------------------------
def _first_slot_wins(p: np.ndarray) -> np.ndarray:
    """1 where the first text is preferred (p_a > 0.5), ½ at a tie (p_a = 0.5), else 0."""
    return np.where(p > 0.5, 1.0, np.where(p == 0.5, 0.5, 0.0))


def _flips(part: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Per item × unordered pair with both orders defined: 1 if the preferred source changes with
    the order, ½ if exactly one order is a tie, 0 otherwise; and the number of item × pairs
    without two defined orders."""
    a = part["first"].astype(str).to_numpy()
    b = part["second"].astype(str).to_numpy()
    forward = a < b  # shown in the canonical order: u = the alphabetically first of the pair
    p = part["p_a"].to_numpy(dtype=float)
    key = pd.DataFrame({"item_id": part["item_id"].to_numpy(), "u": np.where(forward, a, b),
                        "v": np.where(forward, b, a), "forward": forward})
    # the margin of source u: > 0 when the judge prefers u in this order
    key["sign"] = np.sign(np.where(forward, p - 0.5, 0.5 - p))
    n_all = len(key.drop_duplicates(["item_id", "u", "v"]))
    defined = key[~np.isnan(key["sign"])]
    both = defined[defined.forward].merge(defined[~defined.forward], on=["item_id", "u", "v"])
    sf, sb = both["sign_x"].to_numpy(), both["sign_y"].to_numpy()
    flips = np.where(sf * sb < 0, 1.0, np.where((sf == 0) ^ (sb == 0), 0.5, 0.0))
    return flips, n_all - len(both)


def position_bias(comparisons: pd.DataFrame) -> pd.DataFrame:
    """How much each judge's verdicts depend on the order the texts are shown in.

    * ``first_slot_win_rate`` = share of defined comparisons with p_a > 0.5; a tie (p_a exactly
      0.5) counts ½ — the judge favours neither slot. 0.5 = no position bias.
    * ``mean_p_first`` = mean p_a (the probability-weighted version; 0.5 = no bias).
    * ``flip_rate`` = share of item × unordered pairs, among those with both orders defined, whose
      preferred source changes when the order is swapped (Zheng et al. 2023, "Judging LLM-as-a-Judge",
      position consistency). A pair judged a tie in exactly one order counts ½ (the verdict moves
      between a preference and indifference — half a flip); a tie in both orders counts 0 (the
      judge is consistently indifferent). A judge that always answers "A" has flip rate 1.
    * ``n_pairs`` = item × pairs with both orders defined; ``n_pairs_incomplete`` = those left
      out (a failed read-out in either order, or an order missing from the table).

    Columns: judge, <labels>, first_slot_win_rate, mean_p_first, flip_rate, n_comparisons,
    n_undefined, n_pairs, n_pairs_incomplete.
    """
    df = _check_comparisons(comparisons)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        p = part["p_a"].to_numpy(dtype=float)
        p = p[~np.isnan(p)]
        flips, incomplete = _flips(part)
        rows.append({
            "judge": judge,
            "first_slot_win_rate": float(_first_slot_wins(p).mean()) if p.size else np.nan,
            "mean_p_first": float(p.mean()) if p.size else np.nan,
            "flip_rate": float(flips.mean()) if flips.size else np.nan,
            "n_comparisons": int(p.size), "n_undefined": int(part["p_a"].isna().sum()),
            "n_pairs": int(flips.size), "n_pairs_incomplete": int(incomplete),
        })
    return _with_labels(rows, labels, ["judge", "first_slot_win_rate", "mean_p_first", "flip_rate",
                                       "n_comparisons", "n_undefined", "n_pairs", "n_pairs_incomplete"])


# -- preference matrix -----------------------------------------------------------------------------
def preference_matrix(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Head-to-head preferences per judge, long format.

    p_row_wins(r, c) = mean probability given to source r over its defined comparisons against c,
    both orders pooled (so position bias cancels under counterbalancing); with no failures
    p_row_wins(r, c) + p_row_wins(c, r) = 1. Columns: judge, <labels>, row_source, col_source,
    p_row_wins, n (defined comparisons of the pair), n_undefined. Sources in the plan's order.
    """
    df = _check_comparisons(comparisons)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        sources = _source_order(part)
        k = len(sources)
        fi = pd.Index(sources).get_indexer(part["first"])
        si = pd.Index(sources).get_indexer(part["second"])
        p = part["p_a"].to_numpy(dtype=float)
        ok = ~np.isnan(p)
        mass, n, bad = np.zeros((k, k)), np.zeros((k, k), dtype=int), np.zeros((k, k), dtype=int)
        np.add.at(mass, (fi[ok], si[ok]), p[ok])
        np.add.at(mass, (si[ok], fi[ok]), 1.0 - p[ok])
        for r, c in ((fi, si), (si, fi)):
            np.add.at(n, (r[ok], c[ok]), 1)
            np.add.at(bad, (r[~ok], c[~ok]), 1)
        for r in range(k):
            for c in range(k):
                if r != c and n[r, c] + bad[r, c] > 0:
                    rows.append({"judge": judge, "row_source": sources[r], "col_source": sources[c],
                                 "p_row_wins": mass[r, c] / n[r, c] if n[r, c] else np.nan,
                                 "n": int(n[r, c]), "n_undefined": int(bad[r, c])})
    return _with_labels(rows, labels, ["judge", "row_source", "col_source", "p_row_wins", "n", "n_undefined"])


# -- per-item values (the unit of the tests across judges) -----------------------------------------
def per_item_scores(comparisons: pd.DataFrame) -> pd.DataFrame:
    """S per judge × item × source: the mean probability the source got over its defined
    comparisons on that item (NaN when all of them failed). With no failures the mean over items
    of these values equals S. Columns: judge, <labels>, item_id, source, metric ("S"), value,
    n_comparisons, n_undefined — the long format :func:`preference_tests` reads."""
    df = _check_comparisons(comparisons)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        t = _tally(part)
        for i, item in enumerate(t.items):
            for j, source in enumerate(t.sources):
                n, bad = int(t.counts[i, j]), int(t.undefined[i, j])
                if n + bad:
                    rows.append({"judge": judge, "item_id": item, "source": source, "metric": "S",
                                 "value": t.sums[i, j] / n if n else np.nan,
                                 "n_comparisons": n, "n_undefined": bad})
    return _with_labels(rows, labels, PER_ITEM_COLUMNS)


def per_item_bias(per_item: pd.DataFrame, own: Mapping[str, str | None] | None = None,
                  human: str = "human") -> pd.DataFrame:
    """Per-item SPB and PSB contributions from the per-item S values (metric "S").

    Per judge and item: SPB(item) = S_own(item) − mean S_other synthetic(item) and
    PSB(item) = mean S_synthetic(item) − S_human(item), the item-level versions of the corpus
    definitions; with no failures their means over items equal SPB and PSB. An item where any
    involved source is undefined gets NaN (counted as dropped by the tests, not imputed). SPB rows
    (``source`` = the own source) only for judges with a usable own source (``own`` as in
    :func:`bias_scores`; None: no SPB rows); PSB rows (``source`` = "synthetic vs human") for
    judges that judged the human text. Same columns as :func:`per_item_scores` (counts are the sums
    over the involved sources).
    """
    _require(per_item, ("judge", "item_id", "source", "metric", "value"), "per-item table")
    s_rows = per_item[per_item["metric"] == "S"]
    label_cols = [c for c in LABELS if c in s_rows.columns]
    rows = []
    for judge, part in s_rows.groupby("judge", sort=False):
        first = part.iloc[0]
        labels = {c: first[c] for c in label_cols}
        sources = list(pd.unique(part["source"]))
        wide = part.pivot(index="item_id", columns="source", values="value")
        counts, bad = (part.pivot(index="item_id", columns="source", values=c) if c in part else None
                       for c in ("n_comparisons", "n_undefined"))
        synthetic = [x for x in sources if x != human]
        own_source = own_source_of(judge, labels.get("target"), own) if own is not None else None
        others = [x for x in synthetic if x != own_source]
        plans = []
        if own_source in synthetic and others:
            plans.append(("SPB", own_source, [own_source, *others],
                          wide[own_source] - wide[others].mean(axis=1, skipna=False)))
        if human in sources and synthetic:
            plans.append(("PSB", PSB_SOURCE, sources,
                          wide[synthetic].mean(axis=1, skipna=False) - wide[human]))
        for metric, source, involved, values in plans:
            for item, value in values.items():
                rows.append({"judge": judge, **labels, "item_id": item, "source": source, "metric": metric,
                             "value": float(value),
                             "n_comparisons": _sum(counts, item, involved),
                             "n_undefined": _sum(bad, item, involved)})
    return pd.DataFrame(rows, columns=["judge", *label_cols, *PER_ITEM_COLUMNS[1:]])


def _sum(table: pd.DataFrame | None, item: Any, columns: list[str]) -> float:
    return float(table.loc[item, columns].sum()) if table is not None else np.nan


def preference_tests(per_item: pd.DataFrame, own: Mapping[str, str | None] | None = None,
                     human: str = "human", *, correction: Correction = "bonferroni",
                     min_n: int = 2, paired: bool = True) -> pd.DataFrame:
    """Do judges of different conditions score the sources differently? Per metric × target ×
    source, via :func:`~collapselab.stats.summary.compare_conditions` (``by="condition"``; seeds as
    described there): paired by item (Friedman, Wilcoxon signed-rank; every judge rated the same
    articles) by default, the study's Kruskal–Wallis and Mann–Whitney U with ``paired=False`` or
    where the judges rated different items; Bonferroni within each metric's pairs.

    Metrics tested: every metric in ``per_item`` (per-item "S" from :func:`per_item_scores`, and
    e.g. "rating" rows from :func:`per_item_ratings` if the caller appends them) plus the per-item
    "PSB" and, when ``own`` is given, "SPB" contributions (:func:`per_item_bias`). The unit is the
    item: a judge condition's group holds one value per item (and seed). Returns compare_conditions'
    table: metric, target, source, then its result columns.
    """
    within = ["metric", "target", "generation", "source"] if "generation" in per_item.columns else [
        "metric", "target", "source"]
    if per_item.empty:
        return pd.DataFrame(columns=[*within, *RESULT_COLUMNS])
    _require(per_item, ("judge", "item_id", "source", "metric", "value", "condition"), "per-item table")
    data = pd.concat([per_item, per_item_bias(per_item, own, human)], ignore_index=True)
    seed = "seed" if "seed" in data.columns else None
    return compare_conditions(data, by="condition", within=within, seed=seed, value="value",
                              correction=correction, min_n=min_n, paired="auto" if paired else False)


# -- ratings ---------------------------------------------------------------------------------------
def _check_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    name = "ratings table"
    _require(ratings, RATING_COLUMNS, name)
    df = ratings.reset_index(drop=True).copy()
    _check_keys(df, ("judge", "item_id", "source"), name)
    df["rating"] = _numeric(df, "rating", 1.0, 5.0, name)
    return df


def rating_scores(ratings: pd.DataFrame, *, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """Mean (expected, :func:`~collapselab.judges.rating.expected_rating`) rating per judge ×
    source with a bootstrap CI over items (one rating per item and source; percentile interval of
    :func:`~collapselab.stats.bootstrap.bootstrap_ci`).

    Input columns: judge, item_id, source, rating (NaN = failed read-out) + labels. Columns:
    judge, <labels>, source, rating, ci_low, ci_high, n (defined), n_undefined (not in the mean).
    """
    df = _check_ratings(ratings)
    labels = _judge_labels(df, "ratings table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        for source, sub in part.groupby("source", sort=False):
            # sorted by item: the resamples do not depend on the row order
            values = sub.sort_values("item_id", key=lambda s: s.astype(str))["rating"].to_numpy(dtype=float)
            defined = values[~np.isnan(values)]
            if n_resamples == 0 or defined.size == 0:
                est, low, high = (float(defined.mean()) if defined.size else np.nan), np.nan, np.nan
            else:
                est, low, high = bootstrap_ci(values, np.mean, n_resamples=n_resamples,
                                              confidence=confidence, seed=seed)
            rows.append({"judge": judge, "source": source, "rating": est, "ci_low": low, "ci_high": high,
                         "n": int(defined.size), "n_undefined": int(values.size - defined.size)})
    return _with_labels(rows, labels, ["judge", "source", "rating", "ci_low", "ci_high", "n", "n_undefined"])


def per_item_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """The ratings in the per-item long format (metric "rating"), to append to
    :func:`per_item_scores`' table before :func:`preference_tests`."""
    df = _check_ratings(ratings)
    label_cols = [c for c in LABELS if c in df.columns]
    out = df[["judge", *label_cols, "item_id", "source"]].copy()
    out["metric"] = "rating"
    out["value"] = df["rating"]
    out["n_comparisons"] = np.nan
    out["n_undefined"] = df["rating"].isna().astype(int)
    return out
