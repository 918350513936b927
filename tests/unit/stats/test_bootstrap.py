"""Bootstrap intervals against scipy.stats.bootstrap (within Monte-Carlo error) and exactly against
themselves."""

import inspect
import math

import numpy as np
import pytest
from scipy import stats

from collapselab.stats import bootstrap as bs
from collapselab.stats.bootstrap import bootstrap_ci, bootstrap_ci_func

X = np.random.default_rng(11).lognormal(0.0, 0.8, 150)  # skewed, like per-item perplexity
# scipy ≥ 1.15 calls the generator `rng`; older releases `random_state`
_RNG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_interval_agrees_with_scipy_within_monte_carlo_error(method, statistic):
    ours = bootstrap_ci(X, statistic, n_resamples=20_000, method=method, seed=1)
    ref = stats.bootstrap((X,), statistic, n_resamples=20_000, method=method,
                          **{_RNG: np.random.default_rng(2)})
    assert ours.estimate == pytest.approx(statistic(X))
    # the quantile of 20,000 resamples moves by ≈ 0.02 standard errors between seeds; allow 0.15
    se = ref.standard_error
    assert abs(ours.low - ref.confidence_interval.low) < 0.15 * se
    assert abs(ours.high - ref.confidence_interval.high) < 0.15 * se


def test_same_seed_reproduces_exactly_and_another_seed_differs():
    a = bootstrap_ci(X, np.mean, n_resamples=500, seed=3)
    assert a == bootstrap_ci(X, np.mean, n_resamples=500, seed=3)
    assert a != bootstrap_ci(X, np.mean, n_resamples=500, seed=4)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_function_bootstrap_draws_the_same_resamples(method):
    vec = bootstrap_ci(X, np.mean, n_resamples=300, seed=5, method=method)
    looped = bootstrap_ci_func(len(X), lambda idx: X[idx].mean(), n_resamples=300, seed=5, method=method)
    np.testing.assert_allclose(vec, looped, rtol=1e-12)
    # a statistic without an `axis` argument takes the row-by-row path, same numbers
    rowwise = bootstrap_ci(X, lambda v: float(np.mean(v)), n_resamples=300, seed=5, method=method)
    np.testing.assert_allclose(vec, rowwise, rtol=1e-12)


def test_resample_indices_are_a_plain_uniform_draw():
    idx = np.concatenate(list(bs._index_batches(7, 50, seed=0)))
    assert idx.shape == (50, 7) and idx.min() >= 0 and idx.max() <= 6


def test_leave_one_out_batches_match_the_explicit_jackknife(monkeypatch):
    monkeypatch.setattr(bs, "_BATCH_ELEMENTS", 10)  # force several batches
    rows = np.concatenate(list(bs._leave_one_out_batches(6)))
    expected = np.array([[j for j in range(6) if j != i] for i in range(6)])
    np.testing.assert_array_equal(rows, expected)


def test_bca_acceleration_uses_the_jackknife_formula():
    # For the mean, θ₍ᵢ₎ = (Σx − xᵢ)/(n − 1), so â = Σ(x − x̄)³ / (6 [Σ(x − x̄)²]^{3/2}) exactly; check the
    # interval against quantiles at the BCa levels computed by hand from the same resamples.
    n_res, conf = 2000, 0.9
    res = bootstrap_ci(X, np.mean, n_resamples=n_res, confidence=conf, seed=9, method="bca")
    boot = np.array([X[i].mean() for batch in bs._index_batches(len(X), n_res, 9) for i in batch])
    d = X - X.mean()
    a = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    z0 = stats.norm.ppf(((boot < X.mean()).sum() + (boot <= X.mean()).sum()) / (2 * n_res))
    z = stats.norm.ppf([0.05, 0.95])
    levels = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    np.testing.assert_allclose([res.low, res.high], np.quantile(boot, levels), rtol=1e-10)


def test_nans_are_dropped_and_degenerate_inputs_are_explicit():
    with_nan = np.append(X[:40], [np.nan, np.nan])
    assert bootstrap_ci(with_nan, n_resamples=200) == bootstrap_ci(X[:40], n_resamples=200)
    est, low, high = bootstrap_ci([3.0], n_resamples=50)
    assert est == 3.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan], n_resamples=50))
    assert bootstrap_ci([2.0] * 10, n_resamples=50, method="bca") == (2.0, 2.0, 2.0)


def test_undefined_resamples_are_left_out_with_a_warning():
    def fn(idx):  # undefined when the resample happens to contain item 0
        return np.nan if 0 in idx else float(X[idx].mean())

    with pytest.warns(RuntimeWarning, match="not finite"):
        res = bootstrap_ci_func(20, fn, n_resamples=100, seed=0)
    assert math.isnan(res.estimate)  # the full set contains item 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        bootstrap_ci(X, confidence=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(X, method="basic")
