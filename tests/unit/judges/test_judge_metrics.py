"""The per-judge report statistics: against scikit-learn, brute force and simulations with a known truth."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from collapselab.judges.calibration import UNPARSED, agreement, cohen_kappa
from collapselab.judges.judge_metrics import (
    DEFAULT_MIN_F1,
    binary_scores,
    choose_threshold,
    corrected_rate,
    corrected_rate_interval,
    judge_card,
    kappa_interval,
    n_unscored,
    pairwise_judge_agreement,
    roc_auc,
)


def noisy_verdicts(rng: np.random.Generator, labels: np.ndarray, sens: float, spec: float,
                   missing: float = 0.0) -> list[bool | None]:
    """A judge with known sensitivity / specificity that gives no verdict with probability ``missing``."""
    says_harmful = np.where(labels, rng.random(labels.size) < sens, rng.random(labels.size) >= spec)
    gone = rng.random(labels.size) < missing
    return [None if g else bool(p) for p, g in zip(says_harmful, gone, strict=True)]


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# -- binary_scores ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 8, 40, 200])
def test_binary_scores_match_sklearn(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        labels = rng.random(n) < rng.random()
        predicted = noisy_verdicts(rng, labels, sens=rng.random(), spec=rng.random(), missing=0.2)
        got = binary_scores(labels.tolist(), predicted)
        kept = [i for i, p in enumerate(predicted) if p is not None]
        y, p = labels[kept], np.array([predicted[i] for i in kept], dtype=bool)
        assert got["n"] == n and got["n_verdicts"] == len(kept) and got["coverage"] == len(kept) / n
        assert got["tp"] + got["fp"] + got["fn"] + got["tn"] == len(kept)
        assert got["tp"] == int((y & p).sum()) and got["tn"] == int((~y & ~p).sum())
        if not kept:
            assert got["accuracy"] is None and got["f1"] is None and got["accuracy_all"] == 0.0
            continue
        # zero_division=nan: sklearn's undefined is our None
        assert got["accuracy"] == pytest.approx(accuracy_score(y, p))
        for key, value in [
            ("precision", precision_score(y, p, zero_division=np.nan)),
            ("recall", recall_score(y, p, zero_division=np.nan)),
            ("f1", f1_score(y, p, zero_division=np.nan)),
            ("specificity", recall_score(y, p, pos_label=False, zero_division=np.nan)),
        ]:
            assert got[key] == pytest.approx(nan_to_none(value)), key
        correct = sum(p is not None and p == y for p, y in zip(predicted, labels, strict=True))
        assert got["accuracy_all"] == pytest.approx(correct / n)


def test_binary_scores_by_hand() -> None:
    got = binary_scores([True, True, False, False, True], [True, None, False, True, False])
    assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (1, 1, 1, 1)
    assert got["coverage"] == 0.8 and got["accuracy"] == 0.5 and got["accuracy_all"] == 0.4
    assert got["f1"] == 0.5 and got["precision"] == 0.5 and got["specificity"] == 0.5
    nothing = binary_scores([True, False], [None, None])
    assert nothing["coverage"] == 0.0 and nothing["accuracy"] is None and nothing["accuracy_all"] == 0.0
    assert binary_scores([], [])["coverage"] is None
    with pytest.raises(ValueError, match="2 labels vs 1"):
        binary_scores([True, False], [True])


# -- kappa_interval --------------------------------------------------------------------------------
def test_kappa_interval_estimate_matches_agreement_and_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(120) < 0.4
    predicted = noisy_verdicts(rng, labels, sens=0.8, spec=0.9, missing=0.1)
    result = kappa_interval(labels.tolist(), predicted, n_resamples=500, seed=3)
    assert result.estimate == pytest.approx(agreement(labels.tolist(), predicted)["kappa"])
    as_text = ["none" if p is None else str(p) for p in predicted]
    assert result.estimate == pytest.approx(cohen_kappa_score([str(y) for y in labels], as_text))
    assert -1 <= result.low <= result.estimate <= result.high <= 1
    assert (result.n_resamples, result.n_undefined) == (500, 0)
    assert kappa_interval(labels.tolist(), predicted, n_resamples=500, seed=3) == result
    assert kappa_interval(labels.tolist(), predicted, n_resamples=500, seed=4) != result


def test_kappa_bootstrap_matches_resampling_item_indices() -> None:
    """The multinomial table draw has the distribution of resampled item indices: same quantiles."""
    rng = np.random.default_rng(2)
    labels = (rng.random(80) < 0.5).tolist()
    predicted = noisy_verdicts(rng, np.array(labels), sens=0.75, spec=0.8, missing=0.1)
    result = kappa_interval(labels, predicted, n_resamples=4000, seed=0)
    rated = [UNPARSED if p is None else p for p in predicted]
    brute = []
    for _ in range(4000):
        idx = rng.integers(0, len(labels), len(labels))
        brute.append(cohen_kappa([labels[i] for i in idx], [rated[i] for i in idx]))
    low, high = np.quantile([k for k in brute if k is not None], [0.025, 0.975])
    assert result.low == pytest.approx(low, abs=0.03) and result.high == pytest.approx(high, abs=0.03)
    assert result.high - result.low > 0.2  # a real spread, not a degenerate interval


def test_kappa_interval_covers_the_population_kappa() -> None:
    """200 datasets of 150 items from a known process (prevalence π, sensitivity, specificity,
    missing verdicts m as their own category): κ = (p_o − p_e)/(1 − p_e) with
    p_o = (1−m)(π·se + (1−π)·sp), q₁ = (1−m)(π·se + (1−π)(1−sp)), p_e = π·q₁ + (1−π)·((1−m) − q₁)."""
    pi, se, sp, m = 0.35, 0.8, 0.85, 0.05
    p_o = (1 - m) * (pi * se + (1 - pi) * sp)
    q1 = (1 - m) * (pi * se + (1 - pi) * (1 - sp))
    p_e = pi * q1 + (1 - pi) * ((1 - m) - q1)
    truth = (p_o - p_e) / (1 - p_e)
    rng = np.random.default_rng(7)
    covered = 0
    for run in range(200):
        labels = rng.random(150) < pi
        result = kappa_interval(labels.tolist(), noisy_verdicts(rng, labels, se, sp, m), seed=run)
        assert -1 <= result.low <= result.high <= 1
        covered += result.low <= truth <= result.high
    assert 0.88 <= covered / 200 <= 0.99  # nominal 0.95; neither too narrow nor trivially wide


def test_kappa_interval_drops_and_counts_undefined_replicates() -> None:
    # a resample without the one positive item has both raters constant: κ undefined, P = (3/4)⁴ ≈ 0.32
    result = kappa_interval([True, False, False, False], [True, False, False, False], n_resamples=2000)
    assert result.estimate == 1.0 and result.low == result.high == 1.0
    assert 0.25 * 2000 < result.n_undefined < 0.4 * 2000
    constant = kappa_interval([False] * 5, [False] * 5, n_resamples=100)
    assert constant == (None, None, None, 100, 100)
    with pytest.raises(ValueError, match="confidence"):
        kappa_interval([True], [True], confidence=1.0)


# -- roc_auc ---------------------------------------------------------------------------------------
def test_roc_auc_matches_sklearn_with_ties_and_missing_scores() -> None:
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = 5 + trial * 3
        labels = rng.random(n) < 0.4
        if trial % 2:  # 1–5 ratings: many ties
            scores = np.clip(np.round(1 + 2.5 * labels + rng.normal(0, 1.2, n)), 1, 5)
        else:
            scores = labels + rng.normal(0, 0.8, n)
        given: list[float | None] = scores.tolist()
        given[0], given[1] = None, math.nan
        kept = slice(2, None)
        if labels[kept].all() or not labels[kept].any():
            assert roc_auc(labels.tolist(), given) is None
            continue
        assert roc_auc(labels.tolist(), given) == pytest.approx(roc_auc_score(labels[kept], scores[kept]))
        assert n_unscored(given) == 2


def test_roc_auc_by_hand() -> None:
    # pairs (pos, neg): (3,1) win, (3,3) tie, (2,1) win, (2,3) loss → (2 + ½) / 4
    assert roc_auc([True, True, False, False], [3, 2, 1, 3]) == 0.625
    assert roc_auc([True, True, False], [1.0, 2.0, None]) is None  # no scored negative left


# -- choose_threshold ------------------------------------------------------------------------------
def brute_force_best(labels: np.ndarray, scores: np.ndarray, rule: str) -> float:
    best = -math.inf
    for t in np.unique(scores):
        p = scores >= t
        value = (f1_score(labels, p) if rule == "f1" else
                 recall_score(labels, p) + recall_score(labels, p, pos_label=False) - 1)
        best = max(best, value)
    return best


@pytest.mark.parametrize("rule", ["f1", "youden"])
def test_choose_threshold_attains_the_brute_force_optimum(rule: str) -> None:
    rng = np.random.default_rng(4)
    for trial in range(15):
        n = 10 + 4 * trial
        labels = rng.random(n) < 0.4
        labels[:2] = [True, False]
        scores = np.round(labels * 1.5 + rng.normal(0, 1, n), 1)  # rounded: ties in scores
        t = choose_threshold(labels.tolist(), scores.tolist(), rule=rule)
        assert t in scores
        p = scores >= t
        value = (f1_score(labels, p) if rule == "f1" else
                 recall_score(labels, p) + recall_score(labels, p, pos_label=False) - 1)
        assert value == pytest.approx(brute_force_best(labels, scores, rule))


def test_choose_threshold_ties_go_to_the_middle_of_the_first_longest_run() -> None:
    # Youden J over the candidates 0.1 0.2 0.5 0.6 0.9 0.95 is 0 ¼ ½ ½ ½ ¼: the run 0.5–0.9, middle 0.6
    labels = [True] * 4 + [False] * 4
    assert choose_threshold(labels, [0.5, 0.6, 0.9, 0.95, 0.1, 0.2, 0.5, 0.6], rule="youden") == 0.6
    # J over 0.1 0.2 0.5 0.6 0.9 0.95 0.99 is 0 ¼ ½ ¾ ¾ ½ ¼: an even run 0.6, 0.9 → the lower middle
    assert choose_threshold(labels, [0.6, 0.9, 0.95, 0.99, 0.1, 0.2, 0.5, 0.6], rule="youden") == 0.6
    # J over 0.1 0.5 0.6 0.9 is 0 ½ 0 ½: two runs of one → the first
    assert choose_threshold([True, True, False, False], [0.5, 0.9, 0.1, 0.6], rule="youden") == 0.5


def test_choose_threshold_is_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(60) < 0.5).tolist()
    scores = rng.integers(1, 6, 60).astype(float).tolist()
    first = choose_threshold(labels, scores)
    pairs = list(zip(labels, scores, strict=True))
    random.Random(0).shuffle(pairs)
    assert choose_threshold([y for y, _ in pairs], [s for _, s in pairs]) == first
    assert choose_threshold(labels, scores) == first
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([True, True], [1.0, 2.0])
    with pytest.raises(ValueError, match="rule"):
        choose_threshold(labels, scores, rule="accuracy")  # type: ignore[arg-type]


# -- corrected_rate --------------------------------------------------------------------------------
def test_corrected_rate_by_hand() -> None:
    # true 0.2, sens 0.75, spec 0.85 → observed 0.2·0.75 + 0.8·0.15 = 0.27 → back to 0.2
    assert corrected_rate(0.27, 0.75, 0.85) == pytest.approx(0.2)
    assert corrected_rate(0.3, 1.0, 1.0) == 0.3  # a perfect judge needs no correction
    assert corrected_rate(0.05, 0.75, 0.85) == 0.0 and corrected_rate(0.9, 0.75, 0.85) == 1.0  # clipped
    assert corrected_rate(0.3, 0.5, 0.5) is None and corrected_rate(0.3, 0.3, 0.6) is None
    assert corrected_rate(math.nan, 0.9, 0.9) is None


def test_corrected_rate_removes_the_judges_bias_and_its_interval_covers_the_truth() -> None:
    """True prevalence 0.2, judge sensitivity 0.75 / specificity 0.85: the raw rate is ≈ 0.27."""
    truth, sens, spec = 0.2, 0.75, 0.85
    rng = np.random.default_rng(6)
    raw, corrected, covered = [], [], 0
    for run in range(100):
        answers = noisy_verdicts(rng, rng.random(400) < truth, sens, spec)
        cal_labels = rng.random(300) < 0.5
        result = corrected_rate_interval(answers, cal_labels.tolist(), noisy_verdicts(rng, cal_labels, sens, spec),
                                         n_resamples=400, seed=run)
        assert 0 <= result.low <= result.high <= 1 and result.n_undefined == 0
        raw.append(np.mean(answers))
        corrected.append(result.estimate)
        covered += result.low <= truth <= result.high
    assert abs(np.mean(raw) - truth) > 0.05
    assert abs(np.mean(corrected) - truth) < 0.03
    assert covered >= 85


def test_corrected_rate_interval_undefined_cases() -> None:
    # no negative calibration item: specificity unknown
    none_neg = corrected_rate_interval([True, False], [True, True], [True, False], n_resamples=50)
    assert none_neg == (None, None, None, 50, 50)
    # a chance-level judge: sens + spec − 1 = 0 on the data, undefined in most replicates
    chance = corrected_rate_interval([True, False] * 10, [True, True, False, False] * 5,
                                     [True, False, True, False] * 5, n_resamples=200)
    assert chance.estimate is None and chance.n_undefined > 50
    # missing verdicts are left out: the clipped estimate stays in [0, 1]
    high = corrected_rate_interval([True] * 20 + [None] * 5, [True, False] * 10, [True, False] * 9 + [False, True])
    assert high.estimate == 1.0 and high.high <= 1.0


# -- judge_card ------------------------------------------------------------------------------------
def test_judge_card_assembles_a_json_safe_report() -> None:
    rng = np.random.default_rng(8)
    cal_labels = (rng.random(80) < 0.5).tolist()
    scores = [float(s) for s in np.clip(np.round(1 + 3 * np.array(cal_labels) + rng.normal(0, 0.6, 80)), 1, 5)]
    cal_predicted = [s >= 3 for s in scores]
    answers = [True, False, None, True, False, False, None, True]
    card = judge_card(name="harm-small", model="hf/tiny", role="harm", readout="expected rating",
                      answer_verdicts=answers, calibration_labels=cal_labels, calibration_predicted=cal_predicted,
                      calibration_scores=scores, threshold=3.0, threshold_chosen=True,
                      tokens_per_verdict=212.5, seconds_per_verdict=math.nan, n_resamples=200)
    json.dumps(card, allow_nan=False)  # NaN was turned into None
    assert card["answers"] == {"n": 8, "n_verdicts": 6, "coverage": 0.75, "asr": 0.5}
    assert card["calibration"] == binary_scores(cal_labels, cal_predicted)
    assert card["roc_auc"] == pytest.approx(roc_auc_score(cal_labels, scores)) and card["n_unscored"] == 0
    assert card["kappa"]["estimate"] == pytest.approx(cohen_kappa_score(cal_labels, cal_predicted))
    assert card["kappa"]["low"] <= card["kappa"]["estimate"] <= card["kappa"]["high"]
    assert card["corrected_asr"]["n_resamples"] == 200 and 0 <= card["corrected_asr"]["estimate"] <= 1
    assert card["threshold"] == 3.0 and card["threshold_chosen_on_calibration"] is True
    assert card["seconds_per_verdict"] is None and card["tokens_per_verdict"] == 212.5
    assert card["smoke_test"] is (card["calibration"]["f1"] < DEFAULT_MIN_F1)
    assert card["min_f1"] == DEFAULT_MIN_F1


def test_judge_card_flags_weak_judges_as_smoke_tests() -> None:
    common = dict(name="j", model="m", role="harm", readout="parsed", answer_verdicts=[True, False],
                  n_resamples=50)
    good = judge_card(calibration_labels=[True] * 9 + [False] * 9, calibration_predicted=[True] * 9 + [False] * 9,
                      **common)
    assert good["smoke_test"] is False and good["roc_auc"] is None and good["n_unscored"] is None
    weak = judge_card(calibration_labels=[True] * 9 + [False] * 9,
                      calibration_predicted=[True] * 7 + [False] * 2 + [True] * 2 + [False] * 7, **common)
    assert weak["calibration"]["f1"] == pytest.approx(0.7778, abs=1e-4) and weak["smoke_test"] is True
    assert judge_card(calibration_labels=[True, False], calibration_predicted=[None, None], **common)["smoke_test"]


# -- pairwise_judge_agreement ----------------------------------------------------------------------
def test_pairwise_judge_agreement_by_hand_and_against_sklearn() -> None:
    verdicts = {
        "a": {"1": True, "2": True, "3": False, "4": False, "5": True, "6": None},
        "b": {"1": True, "2": False, "3": False, "4": False, "5": True, "6": True},
        "c": {"7": True},
    }
    rows = pairwise_judge_agreement(verdicts, n_resamples=300)
    assert [(r["judge_a"], r["judge_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = rows[0]
    assert ab["n_common"] == 5 and ab["agreement"] == 0.8
    x, y = [True, True, False, False, True], [True, False, False, False, True]
    assert ab["kappa"] == pytest.approx(cohen_kappa_score(x, y))  # = (0.8 − 0.48)/(1 − 0.48) ≈ 0.615
    assert ab["kappa"] == pytest.approx(0.32 / 0.52)
    assert ab["kappa_low"] <= ab["kappa"] <= ab["kappa_high"] and ab["n_undefined"] > 0
    assert rows[1]["n_common"] == 0 and rows[1]["agreement"] is None and rows[1]["kappa"] is None
    # item order in the dicts does not change anything
    reordered = {k: dict(reversed(list(v.items()))) for k, v in verdicts.items()}
    assert pairwise_judge_agreement(reordered, n_resamples=300) == rows
    json.dumps(rows, allow_nan=False)
