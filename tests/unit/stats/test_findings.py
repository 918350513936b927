"""The preregistered hypotheses' findings (collapselab.stats.findings) against independent
computations: per-item effects built by hand with plain loops, scipy's Wilcoxon, statsmodels'
Holm, the MDE formula written out, and every verdict kind (supported, contradicted, inconclusive)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from collapselab.config.hypotheses import HypothesesSpec
from collapselab.stats.findings import EndpointTables, compute_findings, hypothesis_verdicts

ITEMS = [f"p{i:02d}" for i in range(30)]
SEEDS = [1, 2, 3]
METRIC = "lexical_diversity[mode=individual,max_order=3]"


def _per_item(values: dict[tuple[str, int], dict]) -> pd.DataFrame:
    """(condition, generation) → {seed: array over ITEMS} as the report's per_item table."""
    rows = []
    for (cond, gen), by_seed in values.items():
        for seed, arr in by_seed.items():
            for item, v in zip(ITEMS, arr, strict=True):
                rows.append({"set_name": f"t/{cond}/seed{seed}", "set_kind": "condition", "condition": cond,
                             "target": "t", "seed": float(seed), "source": None, "generation": gen,
                             "metric": METRIC, "item_id": item, "value": v})
    # rows that must be ignored: the human references, a k-samples set, another metric
    rows.append({"set_name": "human:test", "set_kind": "human", "condition": "human-reference", "target": None,
                 "seed": np.nan, "source": None, "generation": 0, "metric": METRIC, "item_id": "p00", "value": 1e9})
    rows.append({"set_name": "t/single:a/seed1/samples", "set_kind": "condition", "condition": "single:a",
                 "target": "t", "seed": 1.0, "source": None, "generation": 0, "metric": METRIC,
                 "item_id": "p00", "value": 1e9})
    return pd.DataFrame(rows)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    base = rng.normal(80, 8, len(ITEMS))
    v = {}
    v[("human", 0)] = {s: base + rng.normal(0, 3, len(ITEMS)) for s in SEEDS}
    v[("single:a", 0)] = {s: base - 6 + rng.normal(0, 3, len(ITEMS)) for s in SEEDS}  # clearly lower
    v[("multi:a,b", 0)] = {s: base - 6 + rng.normal(0, 3, len(ITEMS)) for s in SEEDS}  # no difference
    v[("single:a", 2)] = {s: base - 14 + rng.normal(0, 3, len(ITEMS)) for s in SEEDS}
    v[("multi:a,b", 2)] = {s: base - 7 + rng.normal(0, 3, len(ITEMS)) for s in SEEDS}
    v[("single:a", 0)][2][5] = np.nan  # one missing value in one seed: the item keeps its other seeds
    frame = _per_item(v)
    frame = frame[~((frame["condition"] == "multi:a,b") & (frame["generation"] == 0) & (frame["item_id"] == "p29"))]
    return v, frame


def spec(**changes) -> HypothesesSpec:
    tests = [
        {"id": "H1", "claim": "single lowers diversity", "experiment": "collapse", "a": "single:a", "b": "human",
         "endpoints": [{"metric": METRIC, "direction": "less"}]},
        {"id": "H2", "claim": "multi keeps more", "experiment": "collapse", "a": "multi:a,b", "b": "single:a",
         "endpoints": [{"metric": METRIC, "direction": "greater"}]},
        {"id": "H1x", "claim": "single raises diversity (false)", "experiment": "collapse", "a": "single:a",
         "b": "human", "endpoints": [{"metric": METRIC, "direction": "greater"}]},
        {"id": "H4", "claim": "multi loop loses less", "experiment": "collapse",
         "a": "multi:a,b@g2", "a_base": "multi:a,b@g0", "b": "single:a@g2", "b_base": "single:a@g0",
         "endpoints": [{"metric": METRIC, "direction": "greater"}]},
    ]
    return HypothesesSpec.model_validate({"tests": tests, "bootstrap": 500, **changes})


def _mean_over_seeds(v, key):
    return np.nanmean(np.vstack([v[key][s] for s in SEEDS]), axis=0)


def test_findings_match_an_independent_computation(data):
    v, frame = data
    out = compute_findings(spec(), EndpointTables(frame, pd.DataFrame(), pd.DataFrame(), {}), ["t"])
    m = {k: _mean_over_seeds(v, k) for k in v}
    multi0 = m[("multi:a,b", 0)].copy()
    multi0[-1] = np.nan  # p29 was removed from multi's generation 0
    expected_d = {
        "H1": m[("single:a", 0)] - m[("human", 0)],
        "H2": multi0 - m[("single:a", 0)],
        "H1x": m[("single:a", 0)] - m[("human", 0)],
        "H4": (m[("multi:a,b", 2)] - multi0) - (m[("single:a", 2)] - m[("single:a", 0)]),
    }
    raw_p = []
    for hid, d in expected_d.items():
        row = out[out["hypothesis"] == hid].iloc[0]
        kept = d[~np.isnan(d)]
        assert row["n_items"] == len(kept) and row["n_dropped"] == len(d) - len(kept)
        assert row["effect"] == pytest.approx(kept.mean(), rel=1e-12)
        ref = sps.wilcoxon(kept)
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert row["statistic"] == pytest.approx(ref.statistic)
        z = sps.norm.ppf(1 - 0.05 / (2 * 4)) + sps.norm.ppf(0.8)
        assert row["mde"] == pytest.approx(z * kept.std(ddof=1) / np.sqrt(len(kept)), rel=1e-12)
        assert row["ci_low"] < row["effect"] < row["ci_high"]
        raw_p.append(ref.pvalue)
    holm = multipletests(raw_p, method="holm")[1]
    assert out.set_index("hypothesis").loc[list(expected_d), "p_adj"].to_numpy() == pytest.approx(holm)
    verdicts = dict(zip(out["hypothesis"], out["verdict"], strict=True))
    assert verdicts == {"H1": "supported", "H2": "inconclusive", "H1x": "contradicted", "H4": "supported"}


def test_each_seed_effect_pairs_arms_within_the_seed(data):
    v, frame = data
    out = compute_findings(spec(), EndpointTables(frame, pd.DataFrame(), pd.DataFrame(), {}), ["t"])
    row = out[out["hypothesis"] == "H1"].iloc[0]
    seeds = json.loads(row["seed_effects"])
    for s in SEEDS:
        d = v[("single:a", 0)][s] - v[("human", 0)][s]
        assert seeds[str(s)] == pytest.approx(np.nanmean(d), rel=1e-12)
    assert row["seeds_agree"] == "3/3"


def test_bonferroni_and_hypothesis_level_verdicts(data):
    _, frame = data
    out = compute_findings(spec(correction="bonferroni"),
                           EndpointTables(frame, pd.DataFrame(), pd.DataFrame(), {}), ["t"])
    assert out["p_adj"].to_numpy() == pytest.approx(np.minimum(1, out["p"].to_numpy() * 4))
    table = hypothesis_verdicts(out).set_index("hypothesis")["verdict"].to_dict()
    assert table == {"H1": "supported", "H2": "inconclusive", "H1x": "contradicted", "H4": "supported"}


def test_an_arm_without_values_is_inconclusive_and_says_so():
    h = HypothesesSpec.model_validate({"tests": [
        {"id": "H", "claim": "c", "experiment": "collapse", "a": "single:a", "b": "human",
         "endpoints": [{"metric": "nothing_like_this", "direction": "less"}]}]})
    out = compute_findings(h, EndpointTables(_per_item({}), pd.DataFrame(), pd.DataFrame(), {}), ["t"])
    row = out.iloc[0]
    assert row["n_items"] == 0 and row["verdict"] == "inconclusive" and "no items" in row["note"]


def test_safety_endpoint_reads_the_main_judge_scores_of_one_prompt_kind():
    rows = []
    rng = np.random.default_rng(3)
    for cond, shift in (("vanilla", 0.0), ("human", 1.0)):
        for seed in SEEDS:
            for kind in ("plain", "jailbreak", "benign"):
                for i in range(12):
                    harm = 1.5 + shift * (kind == "plain") + rng.normal(0, 0.2)
                    rows.append({"target": "t", "condition": cond, "seed": seed, "generation": 0,
                                 "prompt_kind": kind, "item_id": f"{kind}-{i}", "harm": harm,
                                 "quality": np.nan, "refused": False})
    judged = pd.DataFrame(rows)
    h = HypothesesSpec.model_validate({"tests": [
        {"id": "H6", "claim": "c", "experiment": "safety", "a": "human", "b": "vanilla", "prompt_kind": "plain",
         "endpoints": [{"metric": "harm", "direction": "greater"}, {"metric": "quality", "direction": "less"}]}]})
    out = compute_findings(h, EndpointTables(pd.DataFrame(), judged, pd.DataFrame(), {}), ["t"])
    harm = out[out["endpoint"] == "harm"].iloc[0]
    plain = judged[judged["prompt_kind"] == "plain"].groupby(["condition", "item_id"])["harm"].mean().unstack(0)
    d = (plain["human"] - plain["vanilla"]).to_numpy()
    assert harm["n_items"] == 12 and harm["effect"] == pytest.approx(d.mean())
    assert harm["verdict"] == "supported"
    quality = out[out["endpoint"] == "quality"].iloc[0]
    assert quality["n_items"] == 0 and quality["verdict"] == "inconclusive"  # unparsed quality: no items


def test_preference_spb_and_psb_per_item_with_a_single_vanilla_judge():
    rows = []
    rng = np.random.default_rng(5)
    items = [f"i{k}" for k in range(16)]
    for cond, seeds, own_boost in (("vanilla", [1], 0.2), ("single:a", SEEDS, 0.05)):
        for seed in seeds:
            for item in items:
                s = {"a": 0.5 + own_boost + rng.normal(0, 0.02), "b": 0.5 + rng.normal(0, 0.02),
                     "c": 0.45 + rng.normal(0, 0.02), "human": 0.3 + rng.normal(0, 0.02)}
                for source, value in s.items():
                    rows.append({"judge": f"t-{cond}-{seed}", "target": "t", "condition": cond, "seed": seed,
                                 "generation": 0, "item_id": item, "source": source, "metric": "S", "value": value})
                rows.append({"judge": "x", "target": "t", "condition": cond, "seed": seed, "generation": 0,
                             "item_id": item, "source": "a", "metric": "rating", "value": 99.0})
    per_item = pd.DataFrame(rows)
    h = HypothesesSpec.model_validate({"tests": [
        {"id": "H5", "claim": "c", "experiment": "preference", "a": "single:a", "b": "vanilla",
         "endpoints": [{"metric": "SPB", "direction": "less"}, {"metric": "PSB", "direction": "less"}]}]})
    out = compute_findings(h, EndpointTables(pd.DataFrame(), pd.DataFrame(), per_item, {"t": "a"}), ["t"])
    s = per_item[per_item["metric"] == "S"].pivot_table(index=["condition", "seed", "item_id"], columns="source",
                                                        values="value")
    spb = (s["a"] - (s["b"] + s["c"]) / 2).groupby(level=["condition", "item_id"]).mean().unstack(0)
    psb = ((s["a"] + s["b"] + s["c"]) / 3 - s["human"]).groupby(level=["condition", "item_id"]).mean().unstack(0)
    for endpoint, table in (("SPB", spb), ("PSB", psb)):
        row = out[out["endpoint"] == endpoint].iloc[0]
        d = (table["single:a"] - table["vanilla"]).to_numpy()
        assert row["effect"] == pytest.approx(d.mean(), rel=1e-10)
        assert row["p"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-10)
    assert out.set_index("endpoint").loc["SPB", "verdict"] == "supported"
    # the vanilla judge (one seed) pairs with every seed of the fine-tuned judges
    assert json.loads(out.set_index("endpoint").loc["SPB", "seed_effects"]).keys() == {"1", "2", "3"}
    # without a known own source SPB has no items
    none = compute_findings(h, EndpointTables(pd.DataFrame(), pd.DataFrame(), per_item, {"t": None}), ["t"])
    assert none.set_index("endpoint").loc["SPB", "n_items"] == 0


def test_a_safety_endpoint_shows_its_judges_measured_agreement():
    from collapselab.report.findings import _judge_notes

    findings = pd.DataFrame({"experiment": ["safety", "collapse"], "endpoint": ["harm", "harm"], "note": ["", ""]})
    calibration = [{"role": "harm", "judge": "hf/gemma3-270m", "kappa": 0.12, "accuracy": 0.7, "n": 48,
                    "trust": False}]
    notes = _judge_notes(findings, calibration)["note"].tolist()
    assert notes[0] == "judge hf/gemma3-270m: κ = 0.12, accuracy 0.70 on 48 labelled items — too weak to trust"
    assert notes[1] == ""
