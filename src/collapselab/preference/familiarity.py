"""Familiarity: is a judge's self-preference more than a preference for the texts it finds likely?

A judge prefers texts it assigns low perplexity, and its own texts are, almost by construction, low
perplexity to it — so a positive SPB alone cannot tell self-*recognition* from *familiarity*
(Wataoka et al. 2024, "Self-preference bias in LLM-as-a-judge", arXiv:2410.21819: self-preference
largely follows the judge's perplexity; Panickssery et al. 2024, "LLM evaluators recognize and
favor their own generations", NeurIPS).

Familiarity of one text
-----------------------
The judge teacher-forces the text as the answer to the item's instruction (its chat template and
system prompt, as in the comparisons; :meth:`~collapselab.models.base.LanguageModel.continuation_logprobs`)
and we keep, per judge × item × source: ``n_tokens``, ``sum_logprob`` = Σ log p(token),
``mean_logprob`` = sum / n and ``log_ppl`` = −mean (nats per token; perplexity = exp(log_ppl)).
Lower ``log_ppl`` = more familiar. An empty text has no tokens: its mean and log-perplexity are NaN
and its comparisons leave the analyses below (counted).

SPB conditional on familiarity: the regression
----------------------------------------------
Per judge, one row per defined comparison (both orders), a linear probability model fitted by OLS::

    p_A = β_pos + β_own·(own_A − own_B) + β_fam·(ℓ_A − ℓ_B) + β_hum·(hum_A − hum_B) + ε

with ``own_X`` = 1 if X is the judge's own source, ``ℓ_X`` its log-perplexity on X's text and
``hum_X`` = 1 if X is the human text (absent without a human source). The contrasts are
antisymmetric because swapping the two texts turns p_A into 1 − p_A: "A is own" and "B is own" get
coefficients β_own and −β_own (the counterbalanced design identifies that), and β_pos is the
first-slot (position) bias. β_hum absorbs the synthetic-vs-human gap (pro-synthetic bias), so β_fam
is not merely "human texts are less likely". ``β_own`` is the change in P(prefer A) when A is the
judge's own text instead of an equally familiar other synthetic text (probability units, like
SPB); ``β_fam`` the change per nat/token of Δ log-perplexity (expected < 0). The same model without
the familiarity term gives the unadjusted own effect. Standard errors are cluster-robust by item
(statsmodels ``cov_type="cluster"``, CR1 with its small-sample factor; an item's comparisons share
its texts) and intervals are normal (Wald) intervals.

The stratified version
----------------------
Order-averaged pairs: per item and unordered pair {X, Y}, q_X = mean of p_A when X is first and
1 − p_A when X is second (defined orders only), so q_Y = 1 − q_X; Δ_XY = ℓ_X − ℓ_Y. *Own pairs*: X =
own, Y another synthetic source; *baseline pairs*: X and Y both other synthetic sources, in both
orientations (so the baseline is symmetric: 0.5 at Δ = 0 on average). Bins of Δ: the quantiles of
the own pairs' Δ (``bins`` strata; outer edges ±∞). Per bin b: own_b = mean q over own pairs,
base_b = mean q over baseline pairs with Δ in the same bin. The **stratified own effect** =
Σ_b n_b·(own_b − base_b) / Σ_b n_b over bins with both (n_b = own pairs in b): the preference for
the own text beyond what a non-own text with the same familiarity advantage gets (coarsened exact
matching on Δ, weighted like the own pairs). Its unstratified counterpart is mean q_own − 0.5.
Intervals: the cluster bootstrap over items (:func:`~collapselab.stats.bootstrap.bootstrap_ci_func`),
bin edges held fixed. Undefined (with a note) without at least two other synthetic sources. Coarse
strata remove most but not all of a confounder's bias (Cochran 1968, "The effectiveness of
adjustment by subclassification in removing bias in observational studies": five strata ≈ 90%),
and own pairs more familiar than any baseline pair are unmatched (counted): the regression is the
primary adjusted estimate, the strata show where the preference sits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from collapselab.preference.scores import (
    _check_comparisons,
    _check_keys,
    _interval,
    _judge_labels,
    _require,
    _with_labels,
    own_source_of,
)

FAMILIARITY_COLUMNS = ("judge", "item_id", "source", "n_tokens", "sum_logprob", "mean_logprob", "log_ppl")
#: the regression's terms, in the order of the design matrix
TERMS = ("position", "own", "delta_log_ppl", "human")
REGRESSION_COLUMNS = ["judge", "model", "term", "estimate", "se", "ci_low", "ci_high", "p_value", "n_obs",
                      "n_items", "n_dropped", "own_source", "note"]
STRATA_COLUMNS = ["judge", "bin", "delta_low", "delta_high", "n_own", "own_pref", "n_base", "base_pref",
                  "difference"]
STRATIFIED_COLUMNS = ["judge", "own_source", "own_pair_pref", "own_pair_pref_ci_low", "own_pair_pref_ci_high",
                      "stratified", "stratified_ci_low", "stratified_ci_high", "n_own_pairs", "n_base_pairs",
                      "n_own_unmatched", "bins", "note"]


def familiarity_record(token_logprobs: Sequence[float]) -> dict[str, float | int]:
    """``n_tokens``, ``sum_logprob``, ``mean_logprob`` and ``log_ppl`` (= −mean) of one text from
    its token log-probabilities (NaN mean and log-perplexity for an empty text)."""
    values = [float(x) for x in token_logprobs]
    n = len(values)
    total = math.fsum(values)
    mean = total / n if n else math.nan
    return {"n_tokens": n, "sum_logprob": total, "mean_logprob": mean, "log_ppl": -mean if n else math.nan}


def _check_familiarity(familiarity: pd.DataFrame) -> pd.DataFrame:
    name = "familiarity table"
    _require(familiarity, ("judge", "item_id", "source", "log_ppl"), name)
    df = familiarity.reset_index(drop=True).copy()
    _check_keys(df, ("judge", "item_id", "source"), name)
    df["log_ppl"] = pd.to_numeric(df["log_ppl"], errors="coerce").astype(float)
    return df


def _lookup(familiarity: pd.DataFrame, judge: Any) -> dict[tuple[Any, Any], float]:
    part = familiarity[familiarity["judge"] == judge]
    return dict(zip(zip(part["item_id"], part["source"], strict=True), part["log_ppl"], strict=True))


def familiarity_by_source(familiarity: pd.DataFrame) -> pd.DataFrame:
    """Mean log-perplexity per judge × source over items with a defined value (n, n_undefined =
    empty texts). Columns: judge, <labels>, source, log_ppl, n, n_undefined."""
    df = _check_familiarity(familiarity)
    labels = _judge_labels(df, "familiarity table")
    rows = []
    for (judge, source), part in df.groupby(["judge", "source"], sort=False):
        v = part["log_ppl"].to_numpy(dtype=float)
        ok = ~np.isnan(v)
        rows.append({"judge": judge, "source": source, "log_ppl": float(v[ok].mean()) if ok.any() else np.nan,
                     "n": int(ok.sum()), "n_undefined": int((~ok).sum())})
    return _with_labels(rows, labels, ["judge", "source", "log_ppl", "n", "n_undefined"])


# -- the regression --------------------------------------------------------------------------------
def pair_design(part: pd.DataFrame, log_ppl: Mapping[tuple[Any, Any], float], own: str | None,
                human: str | None) -> pd.DataFrame:
    """One judge's comparisons as regression rows: item_id, p_a and the contrasts ``position``
    (1), ``own`` (own_A − own_B), ``delta_log_ppl`` (ℓ_A − ℓ_B), ``human`` (hum_A − hum_B); NaN
    where p_a or a log-perplexity is undefined."""
    first, second = part["first"].to_numpy(), part["second"].to_numpy()
    ell = [(log_ppl.get((i, a), np.nan), log_ppl.get((i, b), np.nan))
           for i, a, b in zip(part["item_id"], first, second, strict=True)]
    return pd.DataFrame({
        "item_id": part["item_id"].to_numpy(),
        "p_a": part["p_a"].to_numpy(dtype=float),
        "position": 1.0,
        "own": (first == own).astype(float) - (second == own).astype(float),
        "delta_log_ppl": np.array([a - b for a, b in ell], dtype=float),
        "human": (first == human).astype(float) - (second == human).astype(float),
    })


def _fit(design: pd.DataFrame, terms: list[str], confidence: float) -> tuple[dict[str, dict[str, float]], str]:
    """OLS of p_a on ``terms`` with item-clustered standard errors; per term: estimate, se,
    ci_low, ci_high, p_value (and a note when something is undefined)."""
    import statsmodels.api as sm

    y = design["p_a"].to_numpy(dtype=float)
    x = design[terms].to_numpy(dtype=float)
    if len(y) <= len(terms) or np.linalg.matrix_rank(x) < len(terms):
        return {}, "too few comparisons or a collinear design: regression undefined"
    groups = pd.factorize(design["item_id"])[0]
    if groups.max() < 1:  # one item: no cluster-robust variance
        fit = sm.OLS(y, x).fit()
        return {t: {"estimate": float(b), "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
                for t, b in zip(terms, fit.params, strict=True)}, "one item: no cluster-robust interval"
    fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups})
    ci = fit.conf_int(alpha=1 - confidence)
    return {t: {"estimate": float(fit.params[k]), "se": float(fit.bse[k]), "ci_low": float(ci[k, 0]),
                "ci_high": float(ci[k, 1]), "p_value": float(fit.pvalues[k])}
            for k, t in enumerate(terms)}, ""


def familiarity_regression(comparisons: pd.DataFrame, familiarity: pd.DataFrame,
                           own: Mapping[str, str | None], human: str = "human", *,
                           confidence: float = 0.95) -> pd.DataFrame:
    """Per judge, the linear probability model of the module docstring, ``model`` "adjusted"
    (with Δ log-perplexity) and "unadjusted" (without), one row per term.

    ``own`` maps a judge (or its target) to its own source, as in
    :func:`~collapselab.preference.scores.bias_scores`. Terms whose contrast is always 0 (no own
    source, no human text) are left out of that judge's model (the note says so). Columns:
    judge, <labels>, model, term, estimate, se, ci_low, ci_high, p_value, n_obs (comparisons used),
    n_items, n_dropped (undefined p_a or log-perplexity), own_source, note.
    """
    df = _check_comparisons(comparisons)
    fam = _check_familiarity(familiarity)
    labels = _judge_labels(df, "comparisons table")
    rows = []
    for judge, part in df.groupby("judge", sort=False):
        target = labels.at[judge, "target"] if "target" in labels.columns else None
        own_source = own_source_of(judge, target, own)
        sources = set(part["first"]) | set(part["second"])
        design = pair_design(part, _lookup(fam, judge), own_source, human)
        ok = design[["p_a", "delta_log_ppl"]].notna().all(axis=1)
        used = design[ok]
        notes = []
        base = ["position"]
        if own_source is not None and own_source in sources and own_source != human:
            base.append("own")
        else:
            notes.append("no own source among the judged sources: no own term")
        if human in sources:
            base.append("human")
        if not (design["delta_log_ppl"].notna()).any():
            notes.append("no familiarity for this judge's texts")
        adjusted = [t for t in TERMS if t in base or t == "delta_log_ppl"]
        for model, terms in (("adjusted", adjusted), ("unadjusted", base)):
            fitted, why = _fit(used, terms, confidence) if len(used) else ({}, "no defined comparison")
            note = "; ".join(n for n in (*notes, why) if n)
            common = {"judge": judge, "model": model, "n_obs": int(len(used)),
                      "n_items": int(used["item_id"].nunique()), "n_dropped": int((~ok).sum()),
                      "own_source": own_source, "note": note}
            for term in terms:
                values = fitted.get(term, dict.fromkeys(("estimate", "se", "ci_low", "ci_high", "p_value"), np.nan))
                rows.append({**common, "term": term, **values})
    return _with_labels(rows, labels, REGRESSION_COLUMNS)


# -- the stratified version ------------------------------------------------------------------------
def order_averaged_pairs(part: pd.DataFrame) -> pd.DataFrame:
    """One judge's comparisons as oriented, order-averaged pairs: item_id, x, y, q (= q_X, the
    mean probability X got against Y over its defined orders); both orientations of every pair
    with a defined read-out, so q(x, y) = 1 − q(y, x)."""
    p = part["p_a"].to_numpy(dtype=float)
    oriented = pd.DataFrame({
        "item_id": np.concatenate([part["item_id"].to_numpy(), part["item_id"].to_numpy()]),
        "x": np.concatenate([part["first"].to_numpy(), part["second"].to_numpy()]),
        "y": np.concatenate([part["second"].to_numpy(), part["first"].to_numpy()]),
        "q": np.concatenate([p, 1.0 - p]),
    })
    oriented = oriented[oriented["q"].notna()]
    return oriented.groupby(["item_id", "x", "y"], sort=False, as_index=False)["q"].mean()


def _bin_edges(deltas: np.ndarray, bins: int) -> np.ndarray:
    """Interior edges: the quantiles of the own pairs' Δ at 1/bins, …, (bins−1)/bins, repeats
    dropped (fewer strata when Δ takes few values)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if deltas.size == 0 or bins == 1:
        return np.array([])
    return np.unique(np.quantile(deltas, np.linspace(0, 1, bins + 1)[1:-1]))


@dataclass(frozen=True)
class _Strata:
    """One judge's order-averaged pairs summed per item × Δ bin: the own pairs' (``own_sum``,
    ``own_n``) and the baseline pairs' (``base_sum``, ``base_n``) q values; ``edges`` the interior
    bin edges."""

    edges: np.ndarray
    own_sum: np.ndarray
    own_n: np.ndarray
    base_sum: np.ndarray
    base_n: np.ndarray

    @classmethod
    def of(cls, own_rows: pd.DataFrame, base_rows: pd.DataFrame, edges: np.ndarray) -> _Strata:
        items = pd.Index(sorted(pd.unique(pd.concat([own_rows["item_id"], base_rows["item_id"]])), key=str))
        shape = (len(items), len(edges) + 1)

        def tally(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            total, count = np.zeros(shape), np.zeros(shape)
            ii = items.get_indexer(rows["item_id"])
            bb = np.searchsorted(edges, rows["delta"].to_numpy(dtype=float), side="right")
            np.add.at(total, (ii, bb), rows["q"].to_numpy(dtype=float))
            np.add.at(count, (ii, bb), 1)
            return total, count

        return cls(edges, *tally(own_rows), *tally(base_rows))

    def stratified(self, idx: np.ndarray) -> float:
        """Σ_b n_b (own_b − base_b) / Σ_b n_b over the bins with both kinds of pairs (items ``idx``)."""
        on, bn = self.own_n[idx].sum(axis=0), self.base_n[idx].sum(axis=0)
        valid = (on > 0) & (bn > 0)
        if not valid.any():
            return np.nan
        diff = self.own_sum[idx].sum(axis=0)[valid] / on[valid] - self.base_sum[idx].sum(axis=0)[valid] / bn[valid]
        return float((on[valid] * diff).sum() / on[valid].sum())

    def naive(self, idx: np.ndarray) -> float:
        """Mean q over the own pairs − 0.5 (items ``idx``)."""
        n = self.own_n[idx].sum()
        return float(self.own_sum[idx].sum() / n - 0.5) if n else np.nan


def familiarity_strata(comparisons: pd.DataFrame, familiarity: pd.DataFrame, own: Mapping[str, str | None],
                       human: str = "human", *, bins: int = 4, n_resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stratified own effect of the module docstring: (per judge, per judge × bin).

    Per judge: own_source, own_pair_pref (mean q_own − 0.5, unstratified) and ``stratified`` with
    cluster-bootstrap intervals, n_own_pairs / n_base_pairs (oriented pairs with a defined Δ),
    n_own_unmatched (own pairs in a bin without baseline pairs, left out of ``stratified``), bins
    (strata used) and a note. Per bin: bin, delta_low / delta_high (edges, ±∞ at the ends), n_own,
    own_pref, n_base, base_pref, difference.
    """
    df = _check_comparisons(comparisons)
    fam = _check_familiarity(familiarity)
    labels = _judge_labels(df, "comparisons table")
    summary, strata = [], []
    for judge, part in df.groupby("judge", sort=False):
        target = labels.at[judge, "target"] if "target" in labels.columns else None
        own_source = own_source_of(judge, target, own)
        row: dict[str, Any] = {"judge": judge, "own_source": own_source, "bins": 0, "n_own_pairs": 0,
                               "n_base_pairs": 0, "n_own_unmatched": 0, "note": ""}
        for name in ("own_pair_pref", "stratified"):
            row.update({name: np.nan, f"{name}_ci_low": np.nan, f"{name}_ci_high": np.nan})
        sources = list(pd.unique(np.concatenate([part["first"].to_numpy(), part["second"].to_numpy()])))
        others = [s for s in sources if s not in (own_source, human)]
        if own_source is None or own_source not in sources or own_source == human:
            summary.append({**row, "note": "no own source among the judged sources"})
            continue
        pairs = order_averaged_pairs(part)
        ell = _lookup(fam, judge)
        pairs["delta"] = [ell.get((i, x), np.nan) - ell.get((i, y), np.nan)
                          for i, x, y in zip(pairs["item_id"], pairs["x"], pairs["y"], strict=True)]
        pairs = pairs[pairs["delta"].notna()]
        own_rows = pairs[(pairs["x"] == own_source) & pairs["y"].isin(others)]
        base_rows = pairs[pairs["x"].isin(others) & pairs["y"].isin(others)]
        if own_rows.empty:
            summary.append({**row, "note": "no own-vs-other synthetic pair with a defined familiarity"})
            continue
        st = _Strata.of(own_rows, base_rows, _bin_edges(own_rows["delta"].to_numpy(dtype=float), bins))
        n_items = st.own_sum.shape[0]
        on, bn = st.own_n.sum(axis=0), st.base_n.sum(axis=0)
        k = len(on)
        row.update({"bins": k, "n_own_pairs": len(own_rows), "n_base_pairs": len(base_rows),
                    "n_own_unmatched": int(on[bn == 0].sum())})
        est, low, high = _interval(n_items, st.naive, n_resamples, confidence, seed)
        row.update({"own_pair_pref": est, "own_pair_pref_ci_low": low, "own_pair_pref_ci_high": high})
        if len(others) < 2:
            row["note"] = "fewer than two other synthetic sources: no baseline pairs, stratified effect undefined"
        elif not ((on > 0) & (bn > 0)).any():
            row["note"] = "no stratum holds both own and baseline pairs: stratified effect undefined"
        else:
            est, low, high = _interval(n_items, st.stratified, n_resamples, confidence, seed)
            row.update({"stratified": est, "stratified_ci_low": low, "stratified_ci_high": high})
        summary.append(row)
        edges = st.edges
        bounds = np.concatenate([[-np.inf], edges, [np.inf]])
        osum, bsum = st.own_sum.sum(axis=0), st.base_sum.sum(axis=0)
        for b in range(k):
            own_pref = osum[b] / on[b] if on[b] else np.nan
            base_pref = bsum[b] / bn[b] if bn[b] else np.nan
            strata.append({"judge": judge, "bin": b, "delta_low": float(bounds[b]), "delta_high": float(bounds[b + 1]),
                           "n_own": int(on[b]), "own_pref": own_pref, "n_base": int(bn[b]), "base_pref": base_pref,
                           "difference": own_pref - base_pref})
    return (_with_labels(summary, labels, STRATIFIED_COLUMNS), _with_labels(strata, labels, STRATA_COLUMNS))

