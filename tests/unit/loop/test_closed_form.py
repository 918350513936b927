"""The closed form of the categorical collapse loop against hand computations and a plain
Monte-Carlo simulation (tolerance: 4.5 standard errors of the simulation's mean)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t

from collapselab.loop.closed_form import (
    expected_distinct,
    expected_gini_simpson,
    expected_sq_error,
    within_tolerance,
)

P = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])  # equal values: grouped chains
N, G, REPLICATES = 12, 5, 20_000


def simulate(p: np.ndarray, n: int, generations: int, mode: str, replicates: int, seed: int) -> dict[str, np.ndarray]:
    """The loop itself, plainly: draw n samples, refit by counting (on the newest samples, or on all)."""
    rng = np.random.default_rng(seed)
    out = {k: np.zeros((replicates, generations)) for k in ("samples", "training", "sq_error", "gini")}
    model = np.tile(p, (replicates, 1))
    total = np.zeros_like(model)
    for g in range(generations):
        counts = rng.multinomial(n, model)
        total = total + counts if mode == "accumulate" else counts.astype(float)
        model = total / total.sum(axis=1, keepdims=True)
        out["samples"][:, g] = (counts > 0).sum(axis=1)
        out["training"][:, g] = (total > 0).sum(axis=1)
        out["sq_error"][:, g] = ((model - p) ** 2).sum(axis=1)
        out["gini"][:, g] = 1 - (model**2).sum(axis=1)
    return out


@pytest.mark.parametrize("mode", ["replace", "accumulate"])
def test_closed_form_matches_monte_carlo(mode) -> None:
    sim = simulate(P, N, G, mode, REPLICATES, seed=11)
    for key, expected in (("samples", expected_distinct(P, N, G, mode)),
                          ("training", expected_distinct(P, N, G, mode, of="training")),
                          ("sq_error", expected_sq_error(P, N, G, mode)),
                          ("gini", expected_gini_simpson(P, N, G, mode))):
        result = within_tolerance(sim[key], expected, z=4.5)
        assert result.ok, f"{mode} {key}\n{result.describe()}"


def test_hand_computed_cases() -> None:
    # two equally likely types, n = 2: P(c0 = 0) = 1/4; P(c1 = 0) = 1/2·1/4 + 1/4 = 3/8
    np.testing.assert_allclose(expected_distinct([0.5, 0.5], 2, 2), [1.5, 1.25])
    # one sample per generation: always exactly one type
    np.testing.assert_allclose(expected_distinct(P, 1, 4), 1.0)
    h0 = 1 - np.sum(P**2)
    g = np.arange(G)
    np.testing.assert_allclose(expected_sq_error(P, N, G, "replace"), h0 * (1 - (1 - 1 / N) ** (g + 1)))
    np.testing.assert_allclose(expected_gini_simpson(P, N, G, "replace"), h0 * (1 - 1 / N) ** (g + 1))
    acc = expected_sq_error(P, N, 200, "accumulate")
    assert np.all(np.diff(acc) > 0) and acc[-1] < h0 * np.pi**2 / (6 * N)
    assert expected_sq_error(P, N, 200, "replace")[-1] > 0.99 * h0  # replace: fixation, error → H0
    # accumulate: the training data keeps every type generation 0 drew
    np.testing.assert_allclose(expected_distinct(P, N, G, "accumulate", of="training"),
                               expected_distinct(P, N, 1)[0])
    # a point mass never moves
    np.testing.assert_allclose(expected_sq_error([1.0, 0.0], 5, 3), 0.0)


def test_bad_arguments_name_what_is_wrong() -> None:
    for args, words in ((([0.5, 0.6], 3, 2), "sum to 1"), (([1.0], 0, 2), "n \\(samples"),
                        (([1.0], 3, 0), "generations"), (([[1.0]], 3, 1), "1-D")):
        with pytest.raises(ValueError, match=words):
            expected_distinct(*args)
    with pytest.raises(ValueError, match="mode"):
        expected_sq_error([1.0], 3, 2, "forget")
    with pytest.raises(ValueError, match="of must be"):
        expected_distinct([1.0], 3, 2, of="model")


def test_within_tolerance_results_and_errors() -> None:
    measured = np.array([[10.0, 5.0], [12.0, 5.0], [11.0, 5.0]])
    result = within_tolerance(measured, [11.0, 5.0])
    assert result.ok and [c.se for c in result.checks] == pytest.approx([1 / np.sqrt(3), 0.0])
    bad = within_tolerance(measured, [15.0, 5.1])
    assert not bad.ok and bad.failed == [0, 1] and "FAILED" in bad.describe()
    for args, words in (((measured[:1], [1, 1]), "at least 2 seeds"), ((measured, [1.0]), "one value per"),
                        ((measured[0], [1.0]), "seeds × generations")):
        with pytest.raises(ValueError, match=words):
            within_tolerance(*args)


def test_false_alarm_rate_is_the_student_t_tail() -> None:
    """The docstring's rate: normal per-seed values with the right mean fail with P(|t_{k−1}| > z)."""
    rng = np.random.default_rng(3)
    k, z, trials = 10, 2.5, 20_000
    data = rng.normal(5.0, 2.0, size=(trials, k))
    failed = np.mean([not within_tolerance(d[:, None], [5.0], z=z).ok for d in data])
    rate = 2 * student_t.sf(z, k - 1)
    assert abs(failed - rate) < 4 * np.sqrt(rate * (1 - rate) / trials)
