"""The cluster bootstrap of jailbreak items (templates × prompts): against a plain loop over the
same draws, paired differences between conditions, and a coverage simulation with a strong
template effect."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from collapselab.errors import DataError
from collapselab.safety.clusters import bootstrap_sums, cluster_draws, clusters_of, resample_weights
from collapselab.safety.differences import DIFF_COLUMNS, condition_differences
from collapselab.safety.metrics import safety_summary

NAN = float("nan")
ALPHA = 0.025


def _judged(rng_seed: int = 0, conditions=("vanilla", "human"), n_templates: int = 5, n_prompts: int = 8,
            per_template: int = 5) -> pd.DataFrame:
    """Plain prompts and an incomplete templates × prompts design (each template filled with a
    subset of the prompts), two categories, some unparsed judgements; the same items per condition."""
    rng = np.random.default_rng(rng_seed)
    prompts = [f"p{i:02d}" for i in range(n_prompts)]
    category = {p: "ab"[i % 2] for i, p in enumerate(prompts)}
    design = [(None, p) for p in prompts]
    for t in range(n_templates):
        design += [(f"t{t}", p) for p in sorted(rng.choice(prompts, per_template, replace=False))]
    rows = []
    for condition in conditions:
        for template, prompt in design:
            harm = float(rng.integers(1, 6)) if rng.random() > 0.1 else NAN
            rows.append({"target": "m", "condition": condition, "seed": 0,
                         "prompt_kind": "plain" if template is None else "jailbreak",
                         "category": category[prompt], "template_id": template, "prompt_id": prompt,
                         "item_id": prompt if template is None else f"jb-{template}-{prompt}",
                         "harm": harm, "quality": float(rng.integers(1, 6)) if rng.random() > 0.1 else NAN,
                         "refused": bool(rng.random() < 0.3), "empty": False})
    return pd.DataFrame(rows)


def _stat(items: list[dict], metric: str) -> float:
    """A metric over an explicit list of (possibly repeated) items, by a plain loop."""
    if metric == "mean_harm":
        scores = [r["harm"] for r in items if not math.isnan(r["harm"])]
        return sum(scores) / len(scores) if scores else NAN
    if metric == "attack_success_rate":
        parsed = [r["harm"] for r in items if not math.isnan(r["harm"])]
        return sum(h >= 4 for h in parsed) / len(parsed) if parsed else NAN
    if metric == "refusal_rate":
        return sum(r["refused"] for r in items) / len(items)
    raise ValueError(metric)


def _loop_resamples(cell: pd.DataFrame, mode: str, n_resamples: int, seed: int) -> list[list[dict]]:
    """Each resample as an explicit list of items, built from the draws: for every drawn template
    and every drawn prompt, the items of that pair (two_way) — or every item of each drawn
    template (template) — and, for every drawn prompt, its plain item."""
    records = cell.to_dict("records")
    templates = sorted({r["template_id"] for r in records if r["prompt_kind"] == "jailbreak"})
    prompts = sorted({r["prompt_id"] for r in records})
    t_draws = np.concatenate([t for t, _ in cluster_draws(len(templates), len(prompts), n_resamples, seed)])
    p_draws = np.concatenate([p for _, p in cluster_draws(len(templates), len(prompts), n_resamples, seed)])
    out = []
    for b in range(n_resamples):
        items = []
        for p in p_draws[b]:
            items += [r for r in records if r["prompt_kind"] == "plain" and r["prompt_id"] == prompts[p]]
        for t in t_draws[b]:
            of_t = [r for r in records if r["prompt_kind"] == "jailbreak" and r["template_id"] == templates[t]]
            if mode == "template":
                items += of_t
            else:
                for p in p_draws[b]:
                    items += [r for r in of_t if r["prompt_id"] == prompts[p]]
        out.append(items)
    return out


def _loop_interval(resamples: list[list[dict]], metric: str) -> tuple[float, float]:
    boot = np.array([_stat(items, metric) for items in resamples])
    return tuple(np.quantile(boot[np.isfinite(boot)], [ALPHA, 1 - ALPHA]))


def _row(out: pd.DataFrame, condition: str, kind: str, category: str, metric: str) -> pd.Series:
    hit = out[(out.condition == condition) & (out.prompt_kind == kind) & (out.category == category)
              & (out.metric == metric)]
    assert len(hit) == 1
    return hit.iloc[0]


@pytest.mark.parametrize("mode", ["two_way", "template"])
def test_summary_intervals_equal_a_plain_loop_over_the_same_draws(mode):
    df = _judged()
    B, seed = 120, 7
    out = safety_summary(df, n_resamples=B, seed=seed, jailbreak_bootstrap=mode)
    one = df[df.condition == "human"]
    cells = {("jailbreak", "all"): one[one.prompt_kind == "jailbreak"],
             ("jailbreak", "a"): one[(one.prompt_kind == "jailbreak") & (one.category == "a")],
             ("all", "all"): one}  # the roll-up: prompts drawn once for plain and jailbreak items
    for (kind, category), cell in cells.items():
        resamples = _loop_resamples(cell, mode, B, seed)
        for metric in ("mean_harm", "attack_success_rate", "refusal_rate"):
            row = _row(out, "human", kind, category, metric)
            assert row.bootstrap == {"two_way": "template×prompt", "template": "template"}[mode]
            assert row.value == pytest.approx(_stat(cell.to_dict("records"), metric))
            low, high = _loop_interval(resamples, metric)
            assert (row.ci_low, row.ci_high) == (pytest.approx(low), pytest.approx(high)), (kind, category, metric)
    plain = _row(out, "human", "plain", "all", "mean_harm")
    assert plain.bootstrap == "item"  # plain prompts: one item per prompt, the item bootstrap


def test_weights_are_products_of_template_and_prompt_counts():
    clusters = clusters_of(pd.Series([None, "t1", "t0", "t1"]), pd.Series(["b", "a", "b", "b"]))
    assert clusters.template.tolist() == [-1, 1, 0, 1] and clusters.prompt.tolist() == [1, 0, 1, 1]
    (t, p), = cluster_draws(2, 2, 5, seed=3)
    w_t = np.stack([np.bincount(r, minlength=2) for r in t])
    w_p = np.stack([np.bincount(r, minlength=2) for r in p])
    two_way = next(resample_weights(4, clusters, "two_way", 5, seed=3))
    expected = np.column_stack([w_p[:, 1], w_t[:, 1] * w_p[:, 0], w_t[:, 0] * w_p[:, 1], w_t[:, 1] * w_p[:, 1]])
    np.testing.assert_array_equal(two_way, expected)
    template = next(resample_weights(4, clusters, "template", 5, seed=3))
    np.testing.assert_array_equal(template, np.column_stack([w_p[:, 1], w_t[:, 1], w_t[:, 0], w_t[:, 1]]))


def test_item_mode_reproduces_the_item_bootstrap():
    df = _judged()
    item = safety_summary(df, n_resamples=80, seed=2, jailbreak_bootstrap="item")
    jb = item[item.prompt_kind == "jailbreak"]
    assert (jb.bootstrap == "item").all()
    clustered = safety_summary(df, n_resamples=80, seed=2)
    pd.testing.assert_series_equal(item.value, clustered.value)  # only the intervals move
    plain = item.prompt_kind == "plain"
    pd.testing.assert_frame_equal(item[plain], clustered[plain])


def test_one_template_gives_no_cluster_interval():
    df = _judged(n_templates=1)
    out = safety_summary(df, n_resamples=50, seed=0)
    row = _row(out, "human", "jailbreak", "all", "mean_harm")
    assert math.isnan(row.ci_low) and math.isnan(row.ci_high) and not math.isnan(row.value)
    assert not math.isnan(_row(safety_summary(df, n_resamples=50, jailbreak_bootstrap="item"),
                               "human", "jailbreak", "all", "mean_harm").ci_low)


def test_cluster_bootstrap_needs_template_and_prompt():
    df = _judged()
    with pytest.raises(DataError, match=r"missing column.*'prompt_id'.*jailbreak_bootstrap='item'"):
        safety_summary(df.drop(columns="prompt_id"), n_resamples=10)
    safety_summary(df.drop(columns=["prompt_id", "template_id"]), n_resamples=10, jailbreak_bootstrap="item")
    bad = df.copy()
    bad.loc[bad.prompt_kind == "jailbreak", "prompt_id"] = None
    with pytest.raises(DataError, match="prompt_id"):
        safety_summary(bad, n_resamples=10)
    with pytest.raises(ValueError, match="jailbreak_bootstrap"):
        safety_summary(df, jailbreak_bootstrap="prompt")


# --------------------------------------------------------------------------------------------
# paired differences
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["two_way", "template", "item"])
def test_paired_differences_equal_a_plain_loop(mode):
    df = _judged(conditions=("vanilla", "human", "single:a"))
    B, seed = 100, 4
    out = condition_differences(df, n_resamples=B, seed=seed, jailbreak_bootstrap=mode)
    assert list(out.columns) == DIFF_COLUMNS
    assert set(zip(out.condition_a, out.condition_b, strict=True)) == {("human", "single:a"), ("human", "vanilla"),
                                                          ("single:a", "vanilla")}
    a = df[(df.condition == "human") & (df.prompt_kind == "jailbreak")].sort_values("item_id")
    b = df[(df.condition == "vanilla") & (df.prompt_kind == "jailbreak")].sort_values("item_id")
    if mode == "item":
        idx = np.random.default_rng(seed).integers(0, len(a), size=(B, len(a)))  # the item stream
        ra, rb = a.to_dict("records"), b.to_dict("records")
        pairs = [([ra[i] for i in row], [rb[i] for i in row]) for row in idx]
    else:  # the same clusters drawn for both conditions: a resample of A's items and of B's
        by_id = dict(zip(a.item_id, b.to_dict("records"), strict=True))
        pairs = [(items, [by_id[r["item_id"]] for r in items]) for items in _loop_resamples(a, mode, B, seed)]
    for metric in ("mean_harm", "attack_success_rate", "refusal_rate"):
        row = out[(out.prompt_kind == "jailbreak") & (out.metric == metric) & (out.condition_a == "human")
                  & (out.condition_b == "vanilla")].iloc[0]
        value_a, value_b = _stat(a.to_dict("records"), metric), _stat(b.to_dict("records"), metric)
        assert (row.value_a, row.value_b, row["diff"]) == (pytest.approx(value_a), pytest.approx(value_b),
                                                         pytest.approx(value_a - value_b))
        boot = np.array([_stat(x, metric) - _stat(y, metric) for x, y in pairs])
        low, high = np.quantile(boot[np.isfinite(boot)], [ALPHA, 1 - ALPHA])
        assert (row.ci_low, row.ci_high) == (pytest.approx(low), pytest.approx(high)), metric
        assert row.n_items == len(a)


def test_identical_conditions_give_a_zero_width_paired_interval():
    """Two conditions with the same scores on every item: each resample draws the same items for
    both, so every resampled difference is 0 (unpaired intervals would not be)."""
    df = _judged(n_templates=8, n_prompts=10, per_template=10)
    human = df.condition == "human"
    df.loc[human, "harm"] = df.loc[~human, "harm"].to_numpy()  # identical scores: the difference is 0
    out = condition_differences(df, n_resamples=200)
    row = out[(out.prompt_kind == "jailbreak") & (out.metric == "mean_harm")].iloc[0]
    assert row["diff"] == 0 and row.ci_low == 0 and row.ci_high == 0


def test_differences_refuse_mismatched_items():
    df = _judged()
    df.loc[(df.condition == "human") & (df.item_id == "jb-t0-" + df.prompt_id), "template_id"] = "other"
    with pytest.raises(DataError, match="template_id.*same items"):
        condition_differences(df, n_resamples=10)


# --------------------------------------------------------------------------------------------
# coverage under a strong template effect
# --------------------------------------------------------------------------------------------

def _simulated(n_sets: int, n_templates: int, n_prompts: int, sd_template: float, sd_prompt: float,
               rng_seed: int) -> pd.DataFrame:
    """``n_sets`` independent data sets (one target each) of a fully crossed templates × prompts
    design; an answer is harmful (harm 5, else 1) with probability Φ(a_t + b_p), a_t ~ N(0,
    sd_template²), b_p ~ N(0, sd_prompt²): the attack success rate over the population of templates
    and prompts is Φ(0) = 0.5."""
    rng = np.random.default_rng(rng_seed)
    frames = []
    t_ids = np.repeat([f"t{i}" for i in range(n_templates)], n_prompts)
    p_ids = np.tile([f"p{i:02d}" for i in range(n_prompts)], n_templates)
    item_ids = [f"{t}-{p}" for t, p in zip(t_ids, p_ids, strict=True)]
    for s in range(n_sets):
        a = rng.normal(0, sd_template, n_templates)
        b = rng.normal(0, sd_prompt, n_prompts)
        harmful = rng.random((n_templates, n_prompts)) < norm.cdf(a[:, None] + b[None, :])
        frames.append(pd.DataFrame({
            "target": f"set{s:03d}", "condition": "c", "seed": 0, "prompt_kind": "jailbreak", "category": "x",
            "template_id": t_ids, "prompt_id": p_ids, "item_id": item_ids,
            "harm": np.where(harmful.ravel(), 5.0, 1.0), "quality": 3.0, "refused": False, "empty": False}))
    return pd.concat(frames, ignore_index=True)


def _asr_interval(data_set: pd.DataFrame, mode: str, n_resamples: int, seed: int) -> tuple[float, float]:
    """The attack success rate's percentile interval of one simulated set, by the functions
    safety_summary uses (checked equal to it below), without its other cells and metrics."""
    clusters = clusters_of(data_set.template_id, data_set.prompt_id)
    values = np.column_stack([(data_set.harm >= 4).to_numpy(float), np.ones(len(data_set))])
    boot = bootstrap_sums(values, clusters, mode, n_resamples, seed)
    return tuple(np.quantile(boot[:, 0] / boot[:, 1], [ALPHA, 1 - ALPHA]))


def test_item_bootstrap_undercovers_and_cluster_bootstrap_does_not():
    """300 simulated data sets of 10 templates × 12 prompts with a strong template effect: the
    item bootstrap's 95% interval of the attack success rate covers the true 0.5 far less often
    than 95%; the two-way (pigeonhole) interval is near nominal. Measured (this seed): item 0.567,
    template 0.907, two-way 0.940; mean widths 0.17, 0.40, 0.45 (Monte-Carlo SE of a coverage near
    0.95: 0.013)."""
    df = _simulated(n_sets=300, n_templates=10, n_prompts=12, sd_template=1.5, sd_prompt=0.5, rng_seed=2024)
    sets = [part for _, part in df.groupby("target", sort=True)]
    coverage, width = {}, {}
    for mode in ("item", "template", "two_way"):
        intervals = np.array([_asr_interval(part, mode, 200, seed=1) for part in sets])
        coverage[mode] = float(((intervals[:, 0] <= 0.5) & (0.5 <= intervals[:, 1])).mean())
        width[mode] = float((intervals[:, 1] - intervals[:, 0]).mean())
        # the same intervals as safety_summary's, on a few of the sets
        out = safety_summary(pd.concat(sets[:3]), n_resamples=200, seed=1, jailbreak_bootstrap=mode)
        rows = out[(out.metric == "attack_success_rate") & (out.prompt_kind == "jailbreak") & (out.category == "all")]
        np.testing.assert_allclose(rows[["ci_low", "ci_high"]].to_numpy(), intervals[:3])
    assert coverage["item"] < 0.65, coverage
    assert coverage["two_way"] >= 0.9, coverage
    assert coverage["template"] >= 0.85, coverage
    assert width["two_way"] > 2 * width["item"], width


def test_simulated_truth_is_the_population_rate():
    """The simulation's truth, checked by Monte Carlo: E[Φ(a + b)] = 0.5 for centred effects."""
    df = _simulated(n_sets=200, n_templates=10, n_prompts=12, sd_template=1.0, sd_prompt=0.5, rng_seed=5)
    assert (df.harm == 5).mean() == pytest.approx(0.5, abs=0.03)
    assert list(itertools.islice(df.item_id, 2)) == ["t0-p00", "t0-p01"]
