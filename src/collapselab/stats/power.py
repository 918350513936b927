"""Minimum detectable effects: what the tests a run did could have found (audit c4).

A non-significant difference means little unless the reader knows how large a difference the
data could have detected. Every pair row of the test table therefore carries the **minimum
detectable effect** (MDE): the smallest true difference, on the scale of the reported difference
(``diff``: a difference of means), that a two-sided test at level α detects with probability
``power`` (80 % by default), given the sample sizes and the spread the data showed.

All three cases solve the same equation for the noncentral t distribution. With a test statistic
T = Δ̂ / SE on ``df`` degrees of freedom and critical value c = t_{1−α/2, df}, a true difference
Δ gives T ~ t'(df, λ = Δ / SE), and

    power(λ) = P(t'(df, λ) > c) + P(t'(df, λ) < −c).

The MDE is Δ = λ* · SE, λ* the root of power(λ) = ``power``. For large df this is the familiar

    MDE ≈ (z_{1−α/2} + z_{power}) · SE        (= 2.80 · SE at α = 0.05, 80 % power).

* **Paired** (Wilcoxon rows; n pairs, SD of the differences s_d): SE = s_d / √n, df = n − 1 —
  the one-sample t-test's detectable effect, ``statsmodels.stats.power.TTestPower``.
* **Two independent samples** (Mann–Whitney and seed-level rows; pooled SD s_p): SE =
  s_p·√(1/n_a + 1/n_b), df = n_a + n_b − 2 — ``TTestIndPower``.
* **A model contrast** (the mixed model's pairs): the contrast's SE and its df as the model
  reports them.

The rank tests the table runs are not t-tests, but their asymptotic relative efficiency against
the t-test is ≥ 0.864 for any continuous distribution (Hodges & Lehmann 1956) and 3/π ≈ 0.955 for
normal data, so the t-based MDE is a fair (slightly optimistic) scale for "what could these data
have detected". Reference: Cohen (1988), *Statistical Power Analysis for the Behavioral Sciences*.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

#: the defaults every test row uses
ALPHA = 0.05
POWER = 0.8


def t_test_power(ncp: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test on ``df`` degrees of freedom at noncentrality ``ncp``."""
    c = stats.t.ppf(1 - alpha / 2, df)
    # the far tail is negligible for ncp >= 0 and scipy's nct.cdf returns NaN for some extreme values
    return float(stats.nct.sf(c, df, ncp) + np.nan_to_num(stats.nct.cdf(-c, df, ncp)))


def mde_from_se(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test with standard error ``se`` on ``df``
    degrees of freedom detects with probability ``power``: λ*·SE (module docstring). NaN when
    ``se`` is not finite or ``df`` < 1; 0 when ``se`` is 0."""
    _check(alpha, power)
    if not (np.isfinite(se) and np.isfinite(df)) or df < 1 or se < 0:
        return float("nan")
    if se == 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    high = 2 * z + 10.0
    while t_test_power(high, df, alpha) < power:  # tiny df: the root lies further out
        high *= 2
    ncp = optimize.brentq(lambda x: t_test_power(x, df, alpha) - power, 0.0, high, xtol=1e-10)
    return float(ncp * se)


def mde_paired(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE of a mean difference over ``n`` pairs whose differences have SD ``sd_diff``
    (SE = sd/√n, df = n − 1). NaN for n < 2."""
    if n < 2:
        return float("nan")
    return mde_from_se(sd_diff / math.sqrt(n), n - 1, alpha, power)


def pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    """√(((n_a − 1)s_a² + (n_b − 1)s_b²) / (n_a + n_b − 2)); NaN with fewer than 3 values."""
    if a.size + b.size < 3 or a.size < 1 or b.size < 1:
        return float("nan")
    ss = (a.size - 1) * (a.var(ddof=1) if a.size > 1 else 0.0) + (b.size - 1) * (b.var(ddof=1) if b.size > 1 else 0.0)
    return float(math.sqrt(ss / (a.size + b.size - 2)))


def mde_two_sample(sd: float, n_a: int, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE of a difference of two independent means with pooled SD ``sd`` (SE = sd·√(1/n_a +
    1/n_b), df = n_a + n_b − 2). NaN when either group has fewer than 2 values."""
    if n_a < 2 or n_b < 2:
        return float("nan")
    return mde_from_se(sd * math.sqrt(1 / n_a + 1 / n_b), n_a + n_b - 2, alpha, power)


def _check(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not alpha / 2 < power < 1:
        raise ValueError(f"power must be in (alpha/2, 1), got {power}")
