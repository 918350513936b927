"""The preregistered hypotheses' findings (issue 14): one paired test per endpoint, one corrected
family, one verdict each.

For a hypothesis with arms ``a`` and ``b`` (:class:`~collapselab.config.hypotheses.HypothesisSpec`)
and one endpoint, per target:

1. per item (test prompt, harmful prompt, preference item), each arm's value is averaged over its
   seeds (an arm with one seed, or none, such as the vanilla judge, uses that one);
2. the effect of item i is ``d_i = a_i − b_i`` — or ``(a_i − a_base_i) − (b_i − b_base_i)``;
   items missing in any arm are dropped and counted;
3. the test is the two-sided Wilcoxon signed-rank test of the d_i (zero differences dropped, as
   scipy's default ``zero_method="wilcox"``; exact for small n without ties, else the normal
   approximation), the estimate the mean of the d_i with a percentile bootstrap interval over
   items;
4. the p-values of every endpoint of every hypothesis are corrected together (Holm 1979, or
   Bonferroni);
5. verdict: *supported* (corrected p < α, mean effect of the expected sign), *contradicted*
   (corrected p < α, opposite sign) or *inconclusive*, with the minimum detectable effect
   ``MDE = (z(1 − α/(2m)) + z(power)) · sd(d) / √n`` (the paired mean's normal approximation at the
   Bonferroni level, the strictest Holm step; m = the number of endpoints).

Each seed's own mean effect (arms paired within the seed; a one-seed arm such as the vanilla judge
is paired with every seed) is reported beside the pooled one, with the number of seeds agreeing in
sign: with three seeds this is shown, not tested.

The endpoint values come from the report's tables, so the findings cannot drift from the numbers
the report shows: Experiment 1's ``per_item`` (a metric's per-item values), Experiment 2's
``safety_judged`` (the main judges' ``harm`` and ``quality`` scores and ``refused``), Experiment
3's ``preference_per_item`` (each judge's S per source and item; SPB and PSB per item as in
:mod:`collapselab.preference.scores`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from collapselab.config.hypotheses import HypothesesSpec, HypothesisSpec, parse_arm
from collapselab.stats.hypothesis import adjust_pvalues

#: one row per endpoint (and target)
FINDING_COLUMNS = [
    "hypothesis", "claim", "experiment", "target", "endpoint", "direction", "contrast", "n_items",
    "n_dropped", "effect", "ci_low", "ci_high", "statistic", "p", "p_adj", "mde", "verdict",
    "seed_effects", "seeds_agree", "study", "note",
]
VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclass(frozen=True)
class EndpointTables:
    """The long tables the endpoints read (empty frames for an experiment the run does not have)."""

    per_item: pd.DataFrame
    safety_judged: pd.DataFrame
    preference_per_item: pd.DataFrame
    #: target name → the source that counts as its own family (SPB)
    own: Mapping[str, str | None]


def contrast_text(h: HypothesisSpec) -> str:
    """``a − b`` or ``(a − a_base) − (b − b_base)`` as the findings table writes it."""
    if h.a_base is None:
        return f"{h.a} − {h.b}"
    return f"({h.a} − {h.a_base}) − ({h.b} − {h.b_base})"


def arm_values(h: HypothesisSpec, metric: str, tables: EndpointTables, target: str,
               arm: str) -> pd.DataFrame:
    """One arm's per-item values of an endpoint: columns ``seed``, ``item_id``, ``value`` (seed NaN
    for an arm measured once, e.g. the vanilla judge)."""
    label, generation = parse_arm(arm)
    if h.experiment == "collapse":
        d = tables.per_item
        if d.empty:
            return pd.DataFrame(columns=["seed", "item_id", "value"])
        rows = d[(d["set_kind"] == "condition") & ~d["set_name"].astype(str).str.endswith("/samples")
                 & (d["condition"] == label) & (d["generation"].fillna(0).astype(int) == generation)
                 & (d["target"] == target) & (d["metric"] == metric)]
    elif h.experiment == "safety":
        d = tables.safety_judged
        if d.empty:
            return pd.DataFrame(columns=["seed", "item_id", "value"])
        rows = d[(d["condition"] == label) & (d["generation"].fillna(0).astype(int) == generation)
                 & (d["target"] == target)]
        rows = rows[rows["prompt_kind"] != "benign"]
        if h.prompt_kind is not None:
            rows = rows[rows["prompt_kind"] == h.prompt_kind]
        rows = rows.assign(value=rows[metric].astype(float))
    else:
        rows = _preference_values(tables, target, label, generation, metric)
    out = rows[["seed", "item_id", "value"]].copy()
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out.dropna(subset=["value"])


def _preference_values(tables: EndpointTables, target: str, label: str, generation: int,
                       metric: str) -> pd.DataFrame:
    """SPB or PSB per judge seed and item from the S values: SPB = S(own) − mean S(other synthetic
    sources), PSB = mean S(synthetic sources) − S(human)."""
    d = tables.preference_per_item
    empty = pd.DataFrame(columns=["seed", "item_id", "value"])
    if d.empty:
        return empty
    rows = d[(d["metric"] == "S") & (d["condition"] == label) & (d["target"] == target)
             & (d["generation"].fillna(0).astype(int) == generation)]
    if rows.empty:
        return empty
    wide = rows.pivot_table(index=["seed", "item_id"], columns="source", values="value", dropna=False)
    synthetic = [c for c in wide.columns if c != "human"]
    if metric == "SPB":
        own = tables.own.get(target)
        if own is None or own not in wide.columns:
            return empty
        others = [c for c in synthetic if c != own]
        value = wide[own] - wide[others].mean(axis=1)
    else:
        if "human" not in wide.columns:
            return empty
        value = wide[synthetic].mean(axis=1) - wide["human"]
    return value.rename("value").reset_index()


def item_means(values: pd.DataFrame) -> pd.Series:
    """Per item, the mean over seeds."""
    return values.groupby("item_id")["value"].mean()


def _combine(parts: Sequence[pd.Series], signs: Sequence[float]) -> pd.Series:
    """Σ sign·part over the items every part has."""
    joined = pd.concat(parts, axis=1, join="inner")
    return (joined * np.asarray(signs)).sum(axis=1)


def _seed_effects(arms: Sequence[pd.DataFrame], signs: Sequence[float]) -> dict[str, float]:
    """Each seed's mean effect: arms paired within the seed; an arm measured once (one seed, or
    none: the vanilla judge, the human references) pairs with every seed."""
    once = [a["seed"].dropna().nunique() <= 1 for a in arms]
    seeds = sorted({s for a, o in zip(arms, once, strict=True) if not o for s in a["seed"].dropna().unique()})
    if not seeds:  # every arm measured once: one "seed" effect, the pooled one
        seeds = sorted({s for a in arms for s in a["seed"].dropna().unique()})
    out = {}
    for seed in seeds:
        parts = []
        for a, o in zip(arms, once, strict=True):
            parts.append(item_means(a if o else a[a["seed"] == seed]))
        d = _combine(parts, signs)
        if len(d):
            out[_seed_name(seed)] = float(d.mean())
    return out


def _seed_name(seed: object) -> str:
    return str(int(seed)) if isinstance(seed, float | int | np.integer | np.floating) else str(seed)


def endpoint_effects(h: HypothesisSpec, metric: str, tables: EndpointTables,
                     target: str) -> tuple[pd.Series, int, dict[str, float]]:
    """The per-item effects of one endpoint, the number of items dropped (missing in an arm) and
    each seed's mean effect."""
    names = [h.a, h.b] if h.a_base is None else [h.a, h.a_base, h.b, h.b_base]
    signs = [1.0, -1.0] if h.a_base is None else [1.0, -1.0, -1.0, 1.0]
    arms = [arm_values(h, metric, tables, target, n) for n in names]
    means = [item_means(a) for a in arms]
    union = set().union(*(set(m.index) for m in means)) if means else set()
    d = _combine(means, signs)
    return d, len(union) - len(d), _seed_effects(arms, signs)


def paired_test(d: np.ndarray) -> tuple[float, float]:
    """The two-sided Wilcoxon signed-rank statistic and p (NaN when there is no nonzero difference)."""
    if not np.any(d != 0):
        return float("nan"), float("nan")
    res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def bootstrap_interval(d: np.ndarray, n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over items."""
    if len(d) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def minimum_detectable_effect(d: np.ndarray, alpha: float, m: int, power: float) -> float:
    """``(z(1 − α/(2m)) + z(power)) · sd / √n``: the paired mean's MDE at the Bonferroni level."""
    if len(d) < 2:
        return float("nan")
    z = sps.norm.ppf(1 - alpha / (2 * max(m, 1))) + sps.norm.ppf(power)
    return float(z * np.std(d, ddof=1) / np.sqrt(len(d)))


def verdict(effect: float, p_adj: float, direction: str, alpha: float) -> str:
    """supported / contradicted / inconclusive (module docstring)."""
    if not np.isfinite(p_adj) or p_adj >= alpha or not np.isfinite(effect) or effect == 0:
        return "inconclusive"
    expected = effect > 0 if direction == "greater" else effect < 0
    return "supported" if expected else "contradicted"


def compute_findings(spec: HypothesesSpec, tables: EndpointTables, targets: Sequence[str]) -> pd.DataFrame:
    """One row per hypothesis × endpoint × target (:data:`FINDING_COLUMNS`), corrected together."""
    rows = []
    for h in spec.tests:
        for target in targets:
            for e in h.endpoints:
                d_series, dropped, seeds = endpoint_effects(h, e.metric, tables, target)
                d = d_series.to_numpy(dtype=float)
                stat, p = paired_test(d)
                low, high = bootstrap_interval(d, spec.bootstrap, spec.confidence, spec.seed)
                effect = float(d.mean()) if len(d) else float("nan")
                sign = np.sign(effect) if np.isfinite(effect) else 0
                agree = sum(1 for v in seeds.values() if np.sign(v) == sign and sign != 0)
                note = "" if len(d) else "no items: the arms have no values for this endpoint"
                rows.append({
                    "hypothesis": h.id, "claim": h.claim, "experiment": h.experiment, "target": target,
                    "endpoint": e.metric, "direction": e.direction, "contrast": contrast_text(h),
                    "n_items": len(d), "n_dropped": dropped, "effect": effect, "ci_low": low, "ci_high": high,
                    "statistic": stat, "p": p, "seed_effects": json.dumps(seeds), "study": h.study or "",
                    "seeds_agree": f"{agree}/{len(seeds)}" if seeds else "", "note": note,
                    "_d": d,
                })
    if not rows:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    frame = pd.DataFrame(rows)
    frame["p_adj"] = adjust_pvalues(frame["p"].to_numpy(dtype=float), spec.correction)
    m = len(frame)
    frame["mde"] = [minimum_detectable_effect(d, spec.alpha, m, spec.power) for d in frame["_d"]]
    frame["verdict"] = [verdict(e, p, direction, spec.alpha)
                        for e, p, direction in zip(frame["effect"], frame["p_adj"], frame["direction"], strict=True)]
    return frame[FINDING_COLUMNS]


def hypothesis_verdicts(findings: pd.DataFrame) -> pd.DataFrame:
    """One row per hypothesis (and target): *supported* when every endpoint is, *contradicted* when
    any is, *partly supported* when some are, else *inconclusive*."""
    rows = []
    for (hid, target), group in findings.groupby(["hypothesis", "target"], sort=False):
        v = group["verdict"].tolist()
        if "contradicted" in v:
            overall = "contradicted" if "supported" not in v else "mixed"
        elif all(x == "supported" for x in v):
            overall = "supported"
        elif "supported" in v:
            overall = "partly supported"
        else:
            overall = "inconclusive"
        rows.append({"hypothesis": hid, "target": target, "claim": group["claim"].iloc[0], "verdict": overall,
                     "endpoints": ", ".join(f"{e}: {x}" for e, x in zip(group["endpoint"], v, strict=True))})
    return pd.DataFrame(rows, columns=["hypothesis", "target", "claim", "verdict", "endpoints"])
