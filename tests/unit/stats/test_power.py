"""Minimum detectable effects against statsmodels.stats.power and the normal approximation."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from collapselab.stats.power import mde_from_se, mde_paired, mde_two_sample, pooled_sd, t_test_power


@pytest.mark.parametrize("n", [2, 3, 5, 30, 1502])
def test_paired_mde_equals_statsmodels_one_sample_t(n):
    d = float(np.ravel(TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8))[0])
    assert mde_paired(1.7, n) == pytest.approx(1.7 * d, rel=1e-5)  # statsmodels solves to ~1e-6


@pytest.mark.parametrize(("n_a", "n_b"), [(2, 2), (3, 3), (5, 8), (100, 100)])
def test_two_sample_mde_equals_statsmodels(n_a, n_b):
    d = float(np.ravel(TTestIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=0.05, power=0.8))[0])
    assert mde_two_sample(0.5, n_a, n_b) == pytest.approx(0.5 * d, rel=1e-5)


def test_other_alpha_and_power_and_the_large_n_formula():
    d = TTestPower().solve_power(nobs=20, alpha=0.01, power=0.9)
    assert mde_paired(1.0, 20, alpha=0.01, power=0.9) == pytest.approx(d, rel=1e-5)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # (z_{1-α/2} + z_power) · SE for large df
    assert mde_from_se(0.1, 1e6) == pytest.approx(z * 0.1, rel=1e-4)
    assert t_test_power(mde_from_se(1.0, 7), 7) == pytest.approx(0.8, abs=1e-8)


def test_pooled_sd_and_undefined_cases():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0])
    assert pooled_sd(a, b) == pytest.approx(np.sqrt((2 * a.var(ddof=1) + 1 * b.var(ddof=1)) / 3))
    assert np.isnan(mde_paired(1.0, 1)) and np.isnan(mde_two_sample(1.0, 1, 5)) and np.isnan(mde_from_se(np.nan, 4))
    assert mde_from_se(0.0, 4) == 0.0
    with pytest.raises(ValueError, match="alpha"):
        mde_from_se(1.0, 4, alpha=1.5)
