"""The statistics behind a per-judge report card, in the shape of JailbreakEval's evaluator
comparison (Ran et al. 2024, "JailbreakEval"): how well one judge's verdicts agree with a labelled
calibration set, how far the attack success rate (ASR) it reports is moved by its own errors, and
how much judges agree with each other. A pure library: the caller brings the verdicts.

Conventions:

* A *verdict* is True (harmful), False (not harmful) or None (the judge gave none: it failed to
  parse or errored). Rates are over the items *with* a verdict; ``coverage`` says how many those are.
* A *score* is what a verdict is cut from (a 1–5 rating, an expected rating, a probability);
  None or NaN means no score. Higher means more harmful.
* Bootstraps resample items with replacement (Efron & Tibshirani 1993, *An Introduction to the
  Bootstrap*). Every statistic here is a function of a contingency table, so a resample is drawn
  directly as its table — multinomial cell counts with the observed cell shares (binomial for
  one proportion) — which has exactly the distribution of the table of resampled item indices, at
  O(cells) instead of O(n) memory per replicate. The interval is the percentile one: the α/2 and
  1 − α/2 quantiles (``numpy.quantile``, linear) of the replicates, α = 1 − confidence, as in
  :mod:`collapselab.stats.bootstrap`. Replicates where the statistic is undefined are dropped and
  counted (``n_undefined``): many of them means the interval is conditional on a lucky resample.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.stats import rankdata

from collapselab.judges.calibration import UNPARSED, cohen_kappa

DEFAULT_MIN_F1 = 0.85
# a Youden index this close to 0 is a chance-level judge: dividing by it would amplify noise
_MIN_YOUDEN = 1e-12


class BootstrapInterval(NamedTuple):
    """A point estimate with its percentile bootstrap interval; low/high are None when every
    replicate was undefined (``n_undefined == n_resamples``)."""

    estimate: float | None
    low: float | None
    high: float | None
    n_resamples: int
    n_undefined: int


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _same_length(what: str, a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} labels vs {len(b)} values")


def _interval(values: np.ndarray, defined: np.ndarray, estimate: float | None,
              confidence: float) -> BootstrapInterval:
    kept = values[defined]
    low = high = None
    if kept.size:
        alpha = 1 - confidence
        low, high = (float(q) for q in np.quantile(kept, [alpha / 2, 1 - alpha / 2]))
    return BootstrapInterval(estimate, low, high, int(values.size), int(values.size - kept.size))


# -- binary verdicts against labels ----------------------------------------------------------------
def _confusion(labels: Sequence[bool], predicted: Sequence[bool | None]) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) over the items with a verdict."""
    tp = fp = fn = tn = 0
    for y, p in zip(labels, predicted, strict=True):
        if p is None:
            continue
        if p:
            tp, fp = tp + bool(y), fp + (not y)
        else:
            fn, tn = fn + bool(y), tn + (not y)
    return tp, fp, fn, tn


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def binary_scores(labels: Sequence[bool], predicted: Sequence[bool | None]) -> dict[str, Any]:
    """Confusion counts and rates of binary verdicts against binary labels (positive = harmful).

    Over the items with a verdict: accuracy (tp + tn)/(tp + fp + fn + tn), precision tp/(tp + fp),
    recall = sensitivity tp/(tp + fn), specificity tn/(tn + fp), F1 2tp/(2tp + fp + fn) — each None
    when its denominator is 0 (scikit-learn's ``zero_division=np.nan``). ``coverage`` =
    n_verdicts / n (None when n = 0); ``accuracy_all`` = (tp + tn)/n counts a missing verdict as
    wrong, so a judge cannot look better by failing on the hard items.
    """
    _same_length("binary_scores", labels, predicted)
    tp, fp, fn, tn = _confusion(labels, predicted)
    n, n_verdicts = len(labels), tp + fp + fn + tn
    return {
        "n": n, "n_verdicts": n_verdicts, "coverage": _ratio(n_verdicts, n),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": _ratio(tp + tn, n_verdicts), "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": _ratio(tn, tn + fp), "accuracy_all": _ratio(tp + tn, n),
    }


# -- Cohen's κ with a bootstrap interval -----------------------------------------------------------
def _kappa_of_tables(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """κ of each k × k count table (first axis: replicates), in integers until the one division:
    κ = (n·Σᵢ Oᵢᵢ − Σᵢ rᵢcᵢ) / (n² − Σᵢ rᵢcᵢ), rᵢ / cᵢ the row / column sums; undefined (NaN,
    and False in the second array) when the denominator is 0 — both raters constant and equal."""
    n = tables.sum(axis=(1, 2))
    chance = (tables.sum(axis=2) * tables.sum(axis=1)).sum(axis=1)
    den = n * n - chance
    defined = den > 0
    agree = np.trace(tables, axis1=1, axis2=2)
    return np.where(defined, (n * agree - chance) / np.where(defined, den, 1), np.nan), defined


def kappa_interval(labels: Sequence[Hashable], predicted: Sequence[Hashable | None], *,
                   n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """Cohen's κ (Cohen 1960; :func:`~collapselab.judges.calibration.cohen_kappa`) of ``predicted``
    against ``labels``, with a missing verdict (None) as a category of its own that no label has —
    as :func:`~collapselab.judges.calibration.agreement` counts it — and a percentile bootstrap
    interval over items (module docstring; ``numpy.random.default_rng(seed)``)."""
    _same_length("kappa_interval", labels, predicted)
    _check_bootstrap(n_resamples, confidence)
    rated = [UNPARSED if p is None else p for p in predicted]
    kappa = cohen_kappa(list(labels), rated)
    if not rated:
        return BootstrapInterval(None, None, None, n_resamples, n_resamples)
    code = {c: i for i, c in enumerate(dict.fromkeys([*labels, *rated]))}
    k = len(code)
    table = np.zeros(k * k, dtype=np.int64)
    for y, p in zip(labels, rated, strict=True):
        table[code[y] * k + code[p]] += 1
    rng = np.random.default_rng(seed)
    tables = rng.multinomial(len(rated), table / len(rated), size=n_resamples).reshape(-1, k, k)
    return _interval(*_kappa_of_tables(tables), kappa, confidence)


# -- continuous scores -----------------------------------------------------------------------------
def _scored(labels: Sequence[bool], scores: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels and scores of the items with a score (not None, not NaN), and how many had none."""
    _same_length("scores", labels, scores)
    kept = [(bool(y), float(s)) for y, s in zip(labels, scores, strict=True)
            if s is not None and not math.isnan(s)]
    y = np.array([k[0] for k in kept], dtype=bool)
    s = np.array([k[1] for k in kept], dtype=float)
    return y, s, len(labels) - len(kept)


def n_unscored(scores: Sequence[float | None]) -> int:
    """How many items have no score (None or NaN) — the items :func:`roc_auc` and
    :func:`choose_threshold` leave out."""
    return sum(s is None or math.isnan(s) for s in scores)


def roc_auc(labels: Sequence[bool], scores: Sequence[float | None]) -> float | None:
    """Area under the ROC curve in its Mann–Whitney form (Hanley & McNeil 1982): the probability
    that a random positive scores above a random negative, ties counting ½ —
    AUC = (R₊ − n₊(n₊ + 1)/2) / (n₊n₋), R₊ the sum of the positives' mid-ranks. Items without a
    score (None/NaN; count them with :func:`n_unscored`) are left out; None when, after that, a
    class is empty. Equals ``sklearn.metrics.roc_auc_score``."""
    y, s, _ = _scored(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if not n_pos or not n_neg:
        return None
    return float((rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def choose_threshold(labels: Sequence[bool], scores: Sequence[float | None],
                     rule: Literal["f1", "youden"] = "f1") -> float:
    """The cut t (predict harmful when score ≥ t) among the observed distinct scores that
    maximises F1 = 2tp/(2tp + fp + fn) or Youden's J = sensitivity + specificity − 1 (Youden 1950).

    Both are one exact division of integers, so equal values compare equal. Ties: the maximisers
    form runs of consecutive candidates (in ascending order); the first (lowest) longest run is
    taken, and its middle candidate — the lower of the two middle ones for an even run — is
    returned: a cut in the middle of a plateau is the one least moved by a few items. Items
    without a score are left out; ValueError when a class is then empty (nothing to trade off).
    """
    if rule not in ("f1", "youden"):
        raise ValueError(f"rule must be 'f1' or 'youden', got {rule!r}")
    y, s, _ = _scored(labels, scores)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if not pos.size or not neg.size:
        raise ValueError(f"choose_threshold: needs scored items of both classes, got {pos.size} "
                         f"positive and {neg.size} negative")
    candidates = np.unique(s)
    tp = pos.size - np.searchsorted(pos, candidates, side="left")
    fp = neg.size - np.searchsorted(neg, candidates, side="left")
    if rule == "f1":  # 2tp + fp + fn = tp + n₊ + fp ≥ 1
        value = 2 * tp / (tp + pos.size + fp)
    else:  # J = tp/n₊ + tn/n₋ − 1 over a common denominator
        value = (tp * neg.size + (neg.size - fp) * pos.size - pos.size * neg.size) / (pos.size * neg.size)
    best = np.flatnonzero(value == value.max())
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)  # max keeps the first of equal lengths
    return float(candidates[run[(len(run) - 1) // 2]])


# -- prevalence corrected for the judge's errors ---------------------------------------------------
def corrected_rate(observed_rate: float, sensitivity: float, specificity: float) -> float | None:
    """The Rogan & Gladen (1978) estimate of the true rate behind a rate measured by an imperfect
    classifier: p = (p_obs + spec − 1) / (sens + spec − 1), clipped to [0, 1]. None when
    sens + spec − 1 ≤ 0 (a judge no better than chance carries no information to correct with)
    or an input is NaN."""
    false_positive_rate = 1 - specificity  # the same formula as (p_obs − fpr)/(sens − fpr): exact for 0 and 1
    youden = sensitivity - false_positive_rate
    if math.isnan(observed_rate) or not youden > _MIN_YOUDEN:
        return None
    return min(1.0, max(0.0, (observed_rate - false_positive_rate) / youden))


def corrected_rate_interval(verdicts_on_answers: Sequence[bool | None], calibration_labels: Sequence[bool],
                            calibration_predicted: Sequence[bool | None], *, n_resamples: int = 1000,
                            confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """:func:`corrected_rate` of the share of harmful verdicts on the answers, with sensitivity and
    specificity estimated on the calibration items, and a percentile bootstrap interval that
    resamples the answers and the calibration items independently — the error rates are
    estimates too, and their uncertainty often dominates. Answers and calibration items without a
    verdict (None) are left out: the rate concerns answers that got one. Replicates with a class
    missing from the resampled calibration items, or sens + spec − 1 ≤ 0, are undefined."""
    _same_length("corrected_rate_interval", calibration_labels, calibration_predicted)
    _check_bootstrap(n_resamples, confidence)
    answers = [bool(v) for v in verdicts_on_answers if v is not None]
    tp, fp, fn, tn = _confusion(calibration_labels, calibration_predicted)
    n_answers, n_cal = len(answers), tp + fp + fn + tn
    estimate = None
    if n_answers and tp + fn and tn + fp:
        estimate = corrected_rate(sum(answers) / n_answers, tp / (tp + fn), tn / (tn + fp))
    if not n_answers or not n_cal:
        return BootstrapInterval(estimate, None, None, n_resamples, n_resamples)
    rng = np.random.default_rng(seed)
    observed = rng.binomial(n_answers, sum(answers) / n_answers, size=n_resamples) / n_answers
    tp_b, fn_b, fp_b, tn_b = rng.multinomial(n_cal, np.array([tp, fn, fp, tn]) / n_cal, size=n_resamples).T
    with np.errstate(divide="ignore", invalid="ignore"):
        sens, fpr = tp_b / (tp_b + fn_b), fp_b / (tn_b + fp_b)
        youden = sens - fpr
        defined = (tp_b + fn_b > 0) & (tn_b + fp_b > 0) & (youden > _MIN_YOUDEN)
        values = np.clip((observed - fpr) / np.where(defined, youden, 1.0), 0.0, 1.0)
    return _interval(values, defined, estimate, confidence)


# -- the report ------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    """Plain Python values for ``json.dumps(allow_nan=False)``: numpy scalars unwrapped,
    NaN / ±inf → None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def judge_card(*, name: str, model: str, role: str, readout: str,
               answer_verdicts: Sequence[bool | None], calibration_labels: Sequence[bool],
               calibration_predicted: Sequence[bool | None],
               calibration_scores: Sequence[float | None] | None = None,
               threshold: float | None = None, threshold_chosen: bool = False,
               tokens_per_verdict: float | None = None, seconds_per_verdict: float | None = None,
               min_f1: float = DEFAULT_MIN_F1, n_resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> dict[str, Any]:
    """One judge's card for the report, a JSON-safe dict (NaN → None):

    * ``name``, ``model``, ``role``, ``readout`` (how the verdict is read: parsed text, expected
      rating, classifier probability) — as given;
    * ``answers``: ``n``, ``n_verdicts``, ``coverage`` and ``asr`` = harmful verdicts / verdicts;
    * ``corrected_asr``: :func:`corrected_rate_interval` — the ASR corrected for the judge's
      calibration errors, with its interval;
    * ``calibration``: :func:`binary_scores` on the calibration set; ``kappa``: :func:`kappa_interval`;
    * ``roc_auc`` and ``n_unscored`` when ``calibration_scores`` are given (else None);
    * ``threshold`` the verdicts were cut at, and ``threshold_chosen_on_calibration`` — when True,
      the calibration scores above are in-sample, hence optimistic;
    * ``tokens_per_verdict``, ``seconds_per_verdict`` — the caller's cost figures;
    * ``smoke_test``: calibration F1 < ``min_f1`` or undefined — the judge is good enough to check
      that the pipeline runs, not to measure with.
    """
    _same_length("judge_card", calibration_labels, calibration_predicted)
    bootstrap = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    verdicts = [v for v in answer_verdicts if v is not None]
    calibration = binary_scores(calibration_labels, calibration_predicted)
    scored = calibration_scores is not None
    card = {
        "name": name, "model": model, "role": role, "readout": readout,
        "answers": {"n": len(answer_verdicts), "n_verdicts": len(verdicts),
                    "coverage": _ratio(len(verdicts), len(answer_verdicts)),
                    "asr": _ratio(sum(map(bool, verdicts)), len(verdicts))},
        "corrected_asr": corrected_rate_interval(verdicts, calibration_labels, calibration_predicted,
                                                 **bootstrap)._asdict(),
        "calibration": calibration,
        "kappa": kappa_interval(calibration_labels, calibration_predicted, **bootstrap)._asdict(),
        "roc_auc": roc_auc(calibration_labels, calibration_scores) if scored else None,
        "n_unscored": n_unscored(calibration_scores) if scored else None,
        "threshold": threshold, "threshold_chosen_on_calibration": threshold_chosen,
        "tokens_per_verdict": tokens_per_verdict, "seconds_per_verdict": seconds_per_verdict,
        "min_f1": min_f1, "smoke_test": calibration["f1"] is None or calibration["f1"] < min_f1,
        "confidence": confidence,
    }
    return _json_safe(card)


def pairwise_judge_agreement(verdicts: Mapping[str, Mapping[str, bool | None]], *, n_resamples: int = 1000,
                             confidence: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """For every pair of judges (in the mapping's order; ``verdicts[judge][item_id]``), on the
    items both gave a verdict (sorted by id, so the bootstrap does not depend on dict order):
    ``n_common``, ``agreement`` (the share of equal verdicts — "percent agreement" as a fraction)
    and Cohen's κ with its :func:`kappa_interval` (``kappa``, ``kappa_low``, ``kappa_high``,
    ``n_undefined``). None where there are no common items or κ is undefined."""
    rows = []
    for a, b in combinations(verdicts, 2):
        va, vb = verdicts[a], verdicts[b]
        common = sorted(i for i in va.keys() & vb.keys() if va[i] is not None and vb[i] is not None)
        xa, xb = [bool(va[i]) for i in common], [bool(vb[i]) for i in common]
        kappa = kappa_interval(xa, xb, n_resamples=n_resamples, confidence=confidence, seed=seed)
        rows.append(_json_safe({
            "judge_a": a, "judge_b": b, "n_common": len(common),
            "agreement": _ratio(sum(x == y for x, y in zip(xa, xb, strict=True)), len(common)),
            "kappa": kappa.estimate, "kappa_low": kappa.low, "kappa_high": kappa.high,
            "n_undefined": kappa.n_undefined,
        }))
    return rows
