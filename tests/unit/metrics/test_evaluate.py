"""The interval code of metrics/evaluate.py against independent computations.

* per-item metrics (``aggregate_items``): percentile bootstrap over the per-item values — checked
  against a plain numpy loop with the same seed semantics and against ``scipy.stats.bootstrap``;
* corpus-level metrics: delete-a-group jackknife, θ̂ ± t_(g−1)·SE_jack — checked against the
  textbook delete-one jackknife of a mean (which is exactly the classic t interval) and a plain
  delete-a-group loop.

Toy metrics read numbers out of the texts, so nothing heavy is loaded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from collapselab.config.spec import MetricSpec
from collapselab.metrics import evaluate
from collapselab.metrics.base import MetricResult, TextSet
from collapselab.metrics.evaluate import bootstrap_intervals, evaluate_textset, missing_inputs, primary_statistic
from collapselab.metrics.perplexity import OutputPerplexity
from collapselab.registry import Registry


def numbers(values, name: str = "t") -> TextSet:
    values = list(values)
    return TextSet(name=name, kind="condition", ids=[f"r{i}" for i in range(len(values))],
                   texts=[repr(float(v)) for v in values])


def values_of(texts: TextSet) -> np.ndarray:
    return np.array([float(t) for t in texts.texts])


class CorpusMean:
    """A corpus-level metric (no ``aggregate_items``): mean and population variance of the numbers."""

    name = "corpus_mean"
    family = "test"
    higher_is_better = None
    needs: frozenset[str] = frozenset()

    def __init__(self, fail_without: str | None = None, fail_always: bool = False) -> None:
        self.fail_without, self.fail_always = fail_without, fail_always
        self.calls = 0

    def compute(self, texts: TextSet) -> MetricResult:
        self.calls += 1
        if self.fail_always or (self.fail_without is not None and self.fail_without not in texts.ids):
            raise ValueError("degenerate replicate")
        x = values_of(texts)
        return MetricResult(per_item={"x": x}, aggregates={"mean": float(x.mean()), "var": float(x.var())})


class ItemMean:
    """A per-item metric: aggregates are the NaN-aware mean and sd of the per-item values."""

    name = "item_mean"
    family = "test"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def compute(self, texts: TextSet) -> MetricResult:
        x = values_of(texts)
        return MetricResult(per_item={"x": x}, aggregates=self.aggregate_items(x))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        valid = values[np.isfinite(values)]
        return {"mean": float(valid.mean()) if valid.size else math.nan,
                "sd": float(valid.std(ddof=1)) if valid.size > 1 else math.nan}


def jackknife(metric, texts, **kw):
    result = metric.compute(texts)
    kw = {"bootstrap": 0, "confidence": 0.95, "seed": 0, **kw}
    return (result, *bootstrap_intervals(metric, texts, result, **kw)[:2])


# ---------------------------------------------------------------- jackknife (corpus-level metrics)


@pytest.mark.parametrize("groups", [12, 50])  # one group per text, and more groups than texts
def test_delete_one_jackknife_of_a_mean_is_the_classic_t_interval(groups: int) -> None:
    x = np.random.default_rng(1).gamma(2.0, 3.0, size=12)
    _, intervals, failed = jackknife(CorpusMean(), numbers(x), jackknife_groups=groups)
    expected = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    np.testing.assert_allclose(intervals["mean"], expected, rtol=1e-10)
    assert failed == 0


def test_delete_one_jackknife_of_a_nonlinear_statistic_by_a_slow_loop() -> None:
    x = np.random.default_rng(2).normal(5.0, 2.0, size=9)
    n = len(x)
    replicates = []
    for i in range(n):  # Quenouille–Tukey: leave one out, recompute
        rest = [x[j] for j in range(n) if j != i]
        m = sum(rest) / len(rest)
        replicates.append(sum((v - m) ** 2 for v in rest) / len(rest))
    mean_rep = sum(replicates) / n
    se = math.sqrt((n - 1) / n * sum((r - mean_rep) ** 2 for r in replicates))
    full = float(x.var())
    half = stats.t.ppf(0.975, n - 1) * se
    _, intervals, _ = jackknife(CorpusMean(), numbers(x), jackknife_groups=n)
    np.testing.assert_allclose(intervals["var"], (full - half, full + half), rtol=1e-10)
    # centred on the full-set value, not on the mean of the replicates (they differ for a variance)
    assert abs(mean_rep - full) > 1e-3
    assert sum(intervals["var"]) / 2 == pytest.approx(full, rel=1e-12)


def test_delete_a_group_jackknife_by_a_plain_loop() -> None:
    x = np.random.default_rng(3).exponential(4.0, size=23)  # 23 texts in 5 groups of 4 or 5
    n, g, seed = len(x), 5, 11
    order = np.random.default_rng(seed).permutation(n)  # the documented seed semantics
    groups = np.array_split(order, g)
    assert sorted(len(gr) for gr in groups) == [4, 4, 5, 5, 5]
    reps = {"mean": [], "var": []}
    for group in groups:
        rest = np.array([x[i] for i in range(n) if i not in set(group.tolist())])
        reps["mean"].append(rest.mean())
        reps["var"].append(rest.var())
    _, intervals, failed = jackknife(CorpusMean(), numbers(x), jackknife_groups=g, seed=seed)
    for key, full in (("mean", x.mean()), ("var", x.var())):
        r = np.array(reps[key])
        se = math.sqrt((g - 1) / g * ((r - r.mean()) ** 2).sum())
        half = stats.t.ppf(0.975, g - 1) * se
        np.testing.assert_allclose(intervals[key], (full - half, full + half), rtol=1e-10)
    assert failed == 0


def test_delete_a_group_jackknife_of_a_mean_with_equal_groups_is_the_sd_of_group_means() -> None:
    # with g equal groups, SE_jack of a mean reduces to sd(group means)/sqrt(g)
    x = np.random.default_rng(4).normal(size=40)
    g, seed = 8, 5
    groups = np.array_split(np.random.default_rng(seed).permutation(len(x)), g)
    group_means = np.array([x[gr].mean() for gr in groups])
    se = group_means.std(ddof=1) / math.sqrt(g)
    _, intervals, _ = jackknife(CorpusMean(), numbers(x), jackknife_groups=g, seed=seed)
    half = stats.t.ppf(0.95, g - 1) * se
    _, narrower, _ = jackknife(CorpusMean(), numbers(x), jackknife_groups=g, seed=seed, confidence=0.90)
    np.testing.assert_allclose(narrower["mean"], (x.mean() - half, x.mean() + half), rtol=1e-10)
    assert intervals["mean"][0] < narrower["mean"][0] < x.mean() < narrower["mean"][1] < intervals["mean"][1]


def test_group_jackknife_is_seeded() -> None:
    texts = numbers(np.random.default_rng(5).normal(size=30))
    first = jackknife(CorpusMean(), texts, jackknife_groups=4, seed=1)[1]
    again = jackknife(CorpusMean(), texts, jackknife_groups=4, seed=1)[1]
    other = jackknife(CorpusMean(), texts, jackknife_groups=4, seed=2)[1]
    assert first == again and first["mean"] != other["mean"]


def test_failing_jackknife_replicates_are_counted_and_left_out() -> None:
    x = np.arange(1.0, 11.0) ** 1.5
    metric = CorpusMean(fail_without="r0")  # the replicate leaving text 0 out fails
    result, intervals, failed = jackknife(metric, numbers(x), jackknife_groups=len(x))
    assert failed == 1 and metric.calls == 1 + len(x)
    reps = np.array([np.delete(x, i).mean() for i in range(1, len(x))])  # the 9 that ran
    g = len(reps)
    se = math.sqrt((g - 1) / g * ((reps - reps.mean()) ** 2).sum())
    half = stats.t.ppf(0.975, g - 1) * se
    np.testing.assert_allclose(intervals["mean"], (x.mean() - half, x.mean() + half), rtol=1e-10)
    assert result.aggregates["mean"] == pytest.approx(x.mean())


def test_every_replicate_failing_gives_no_interval() -> None:
    x = np.arange(6.0)
    metric = CorpusMean()
    result = metric.compute(numbers(x))
    metric.fail_always = True
    intervals, failed, _ = bootstrap_intervals(metric, numbers(x), result, bootstrap=100, jackknife_groups=3,
                                            confidence=0.95, seed=0)
    assert failed == 3
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in intervals.values())


@pytest.mark.parametrize(("n", "groups"), [(2, 20), (10, 1), (10, 0)])
def test_no_jackknife_on_two_texts_or_fewer_than_two_groups(n: int, groups: int) -> None:
    metric = CorpusMean()
    _, intervals, failed = jackknife(metric, numbers(np.arange(float(n))), jackknife_groups=groups)
    assert metric.calls == 1 and failed == 0  # only the full-set computation
    assert set(intervals) == {"mean", "var"}
    assert all(math.isnan(v) for pair in intervals.values() for v in pair)


# ------------------------------------------------------- percentile bootstrap (per-item metrics)


def plain_bootstrap(values: np.ndarray, statistic, resamples: int, seed: int, confidence: float = 0.95):
    """Resample the per-item values with replacement, one resample at a time."""
    rng = np.random.default_rng(seed)
    n = len(values)
    draws = []
    for _ in range(resamples):
        sample = values[rng.integers(0, n, n)]
        draws.append(statistic(sample))
    draws = np.array([d for d in draws if np.isfinite(d)])
    alpha = (1 - confidence) / 2
    return tuple(np.percentile(draws, [100 * alpha, 100 * (1 - alpha)]))


def test_percentile_bootstrap_by_a_plain_loop() -> None:
    x = np.random.default_rng(6).lognormal(1.0, 0.5, size=25)
    metric = ItemMean()
    result = metric.compute(numbers(x))
    intervals, failed, _ = bootstrap_intervals(metric, numbers(x), result, bootstrap=300, jackknife_groups=20,
                                            confidence=0.9, seed=42)
    np.testing.assert_allclose(intervals["mean"], plain_bootstrap(x, np.mean, 300, 42, 0.9), rtol=1e-12)
    np.testing.assert_allclose(intervals["sd"], plain_bootstrap(x, lambda s: s.std(ddof=1), 300, 42, 0.9),
                               rtol=1e-12)
    assert failed == 0


def test_percentile_bootstrap_agrees_with_scipy() -> None:
    x = np.random.default_rng(7).gamma(2.0, 2.0, size=60)
    metric = ItemMean()
    result = metric.compute(numbers(x))
    intervals, *_ = bootstrap_intervals(metric, numbers(x), result, bootstrap=4000, jackknife_groups=20,
                                       confidence=0.95, seed=0)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(123)).confidence_interval
    width = ref.high - ref.low
    # different random streams: agree to Monte Carlo error (≈1-2% of the width at 4000 resamples)
    assert intervals["mean"][0] == pytest.approx(ref.low, abs=0.1 * width)
    assert intervals["mean"][1] == pytest.approx(ref.high, abs=0.1 * width)


def test_bootstrap_interval_covers_the_estimate_and_is_symmetric_for_symmetric_data() -> None:
    half = np.random.default_rng(8).uniform(0.0, 5.0, size=30)
    x = np.concatenate([10 + half, 10 - half])  # symmetric about 10
    metric = ItemMean()
    result = metric.compute(numbers(x))
    intervals, *_ = bootstrap_intervals(metric, numbers(x), result, bootstrap=4000, jackknife_groups=20,
                                       confidence=0.95, seed=3)
    low, high = intervals["mean"]
    assert low < 10.0 < high
    assert (10.0 - low) == pytest.approx(high - 10.0, rel=0.1)
    # the normal-theory interval of a mean, for scale: the bootstrap one is close to it
    sem = x.std(ddof=1) / math.sqrt(len(x))
    assert high - low == pytest.approx(2 * 1.96 * sem, rel=0.1)


def test_bootstrap_drops_undefined_replicates() -> None:
    # 8 undefined items and 2 defined ones: many resamples have < 2 defined values (sd is NaN)
    x = np.array([np.nan] * 8 + [1.0, 3.0])
    metric = ItemMean()
    result = metric.compute(numbers(x))
    intervals, failed, _ = bootstrap_intervals(metric, numbers(x), result, bootstrap=500, jackknife_groups=20,
                                            confidence=0.95, seed=9)

    def sd(s):
        v = s[np.isfinite(s)]
        return v.std(ddof=1) if v.size > 1 else np.nan

    def mean(s):
        v = s[np.isfinite(s)]
        return v.mean() if v.size else np.nan

    np.testing.assert_allclose(intervals["sd"], plain_bootstrap(x, sd, 500, 9), rtol=1e-12)
    np.testing.assert_allclose(intervals["mean"], plain_bootstrap(x, mean, 500, 9), rtol=1e-12)
    assert 1.0 <= intervals["mean"][0] <= intervals["mean"][1] <= 3.0
    assert failed == 0


def test_bootstrap_with_too_few_defined_replicates_or_no_items_gives_nan() -> None:
    metric = ItemMean()
    texts = numbers([np.nan, np.nan, 4.0])
    one = metric.compute(texts)
    intervals, *_ = bootstrap_intervals(metric, texts, one, bootstrap=200, jackknife_groups=20,
                                       confidence=0.95, seed=0)
    # a resample holds the one defined value 0, 1, 2 or 3 times: the mean is 4 or undefined, the sd
    # 0 (the value repeated) or undefined; undefined replicates are dropped
    assert intervals["mean"] == (4.0, 4.0) and intervals["sd"] == (0.0, 0.0)
    # fewer than two defined replicates: no interval
    intervals, *_ = bootstrap_intervals(metric, texts, one, bootstrap=1, jackknife_groups=20,
                                       confidence=0.95, seed=0)
    assert all(math.isnan(v) for pair in intervals.values() for v in pair)
    empty = MetricResult(per_item={"x": np.array([])}, aggregates={"mean": math.nan})
    intervals, *_ = bootstrap_intervals(metric, numbers([]), empty, bootstrap=200, jackknife_groups=20,
                                       confidence=0.95, seed=0)
    assert all(math.isnan(v) for v in intervals["mean"])


def test_perplexity_bootstrap_resamples_the_per_text_values() -> None:
    rng = np.random.default_rng(10)
    logprobs = [np.log(rng.uniform(0.05, 1.0, size=rng.integers(3, 20))) for _ in range(30)] + [np.array([])]
    texts = TextSet(name="t", kind="condition", ids=[f"r{i}" for i in range(31)], texts=["x"] * 31,
                    logprobs=logprobs)
    metric = OutputPerplexity()
    result = metric.compute(texts)
    intervals, *_ = bootstrap_intervals(metric, texts, result, bootstrap=400, jackknife_groups=20,
                                       confidence=0.95, seed=1)
    ppl = np.array([math.exp(-lp.mean()) if lp.size else math.nan for lp in logprobs])

    def mean(s):
        return np.nanmean(s)

    np.testing.assert_allclose(intervals["mean"], plain_bootstrap(ppl, mean, 400, 1), rtol=1e-12)
    assert set(intervals) == set(result.aggregates)
    lo, hi = intervals["mean"]
    assert lo < result.aggregates["mean"] < hi


# ----------------------------------------------------------------------------- evaluate_textset


LABELS = {"set_name": "t", "set_kind": "condition", "condition": "human", "target": "m", "seed": 1,
          "source": None, "generation": 0}


@pytest.fixture
def toy_registry(monkeypatch):
    """evaluate_textset builds metrics by name: serve the toy metrics from a registry of their own."""
    registry = Registry("metric")
    registry.add("corpus_mean", CorpusMean, description="toy", family="test")
    registry.add("item_mean", ItemMean, description="toy", family="test")
    registry.add("output_perplexity", OutputPerplexity, description="ppl", family="perplexity")
    monkeypatch.setattr(evaluate, "METRICS", registry)
    monkeypatch.setattr(evaluate, "build_metric", lambda name, **settings: registry.get(name)(**settings))
    return registry


def test_evaluate_textset_tables_and_details(toy_registry) -> None:
    x = np.array([2.0, np.nan, 5.0, 1.0, np.nan, 7.0, 3.0, 4.0])
    texts = numbers(x)
    steps = []
    aggregates, per_item, details = evaluate_textset(
        texts, [MetricSpec(name="item_mean"), MetricSpec(name="output_perplexity")],
        LABELS, bootstrap=200, seed=0, progress=steps.append)
    assert steps == [1, 1]  # one step per metric, the skipped one included
    assert (aggregates["set_name"] == "t").all() and (per_item["condition"] == "human").all()
    assert details["skipped"] == {"output_perplexity": "needs logprobs, which this set does not have"}
    rows = aggregates.set_index("statistic")
    assert list(rows.index) == ["mean", "sd"] and (aggregates["metric"] == "item_mean").all()
    valid = x[np.isfinite(x)]
    assert rows.loc["mean", "value"] == pytest.approx(valid.mean())
    assert rows.loc["sd", "value"] == pytest.approx(valid.std(ddof=1))
    # no n_undefined aggregate: the NaN per-item values are counted instead
    assert (aggregates["n_undefined"] == 2).all() and (aggregates["n"] == len(x)).all()
    assert rows["primary"].tolist() == [True, False]  # no `primary` attribute, no "value": "mean"
    assert (rows["family"] == "test").all() and (rows["higher_is_better"]).all()
    assert (rows["ci_low"] < rows["value"]).all() and (rows["value"] < rows["ci_high"]).all()
    assert per_item["item_id"].tolist() == texts.ids and per_item["metric"].eq("item_mean").all()
    np.testing.assert_array_equal(per_item["value"].to_numpy(), x)
    assert details["item_mean"]["failed_resamples"] == 0 and details["item_mean"]["primary"] == "mean"
    assert details["item_mean"]["seconds"] >= 0


def test_evaluate_textset_jackknife_metric_counts_failed_replicates(toy_registry) -> None:
    x = np.arange(1.0, 9.0)
    aggregates, per_item, details = evaluate_textset(
        numbers(x), [MetricSpec(name="corpus_mean", settings={"fail_without": "r3"})], LABELS,
        jackknife_groups=len(x), seed=0)
    assert details["corpus_mean"]["failed_resamples"] == 1
    mean = aggregates.set_index("statistic").loc["mean"]
    reps = np.array([np.delete(x, i).mean() for i in range(len(x)) if i != 3])
    g = len(reps)
    half = stats.t.ppf(0.975, g - 1) * math.sqrt((g - 1) / g * ((reps - reps.mean()) ** 2).sum())
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-10)
    assert mean["n_undefined"] == 0 and mean["n"] == len(x)


def test_evaluate_textset_perplexity_reports_its_own_undefined_count(toy_registry) -> None:
    logprobs = [np.log([0.5, 0.25]), np.array([]), np.full(3, -np.log(4.0)), np.log([0.2]), np.array([])]
    texts = TextSet(name="t", kind="condition", ids=list("abcde"), texts=["x"] * 5, logprobs=logprobs)
    aggregates, per_item, details = evaluate_textset(texts, [MetricSpec(name="output_perplexity")], LABELS,
                                                     bootstrap=100)
    assert (aggregates["n_undefined"] == 2).all() and (aggregates["n"] == 5).all()
    assert aggregates.loc[aggregates["primary"], "statistic"].tolist() == ["mean_iqr"]
    assert per_item["item_id"].tolist() == list("abcde")
    np.testing.assert_allclose(per_item["value"].to_numpy(), [2 ** 1.5, np.nan, 4.0, 5.0, np.nan])


def test_primary_statistic_and_missing_inputs() -> None:
    result = MetricResult(aggregates={"z": 1.0, "mean": 2.0, "value": 3.0})
    assert primary_statistic(ItemMean(), result) == "value"
    assert primary_statistic(OutputPerplexity(), MetricResult(aggregates={"mean": 1.0, "mean_iqr": 2.0})) == "mean_iqr"
    assert primary_statistic(ItemMean(), MetricResult(aggregates={"z": 1.0, "y": 2.0})) == "z"
    assert missing_inputs(ItemMean(), numbers([1.0])) is None
    assert missing_inputs(OutputPerplexity(), numbers([1.0])) == "needs logprobs, which this set does not have"
