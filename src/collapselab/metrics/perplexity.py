"""Perplexity family: output perplexity and human-text perplexity.

Per text, PPL = exp(−(1/T)·Σ_t log p(x_t | x_<t, prompt)), over the T response tokens only
(teacher-forced under the chat template; prompt and template tokens are not counted) — the
study's definition (Schaffelder & Gatt, Experiment 1). Aggregates are the mean, median and
standard deviation, raw and after removing IQR outliers (values outside
[Q1 − 1.5·IQR, Q3 + 1.5·IQR]), as in the study.

* ``output_perplexity`` — the *vanilla* target scores each set's texts. Lower means the texts are
  closer to what the base model itself would write; the study reads a drop as a sign of collapse
  towards the model's own mode (human text scores far higher: 2.68 vs 1.30 for vanilla on the 8B).
  It has **no better direction**: incoherent or off-distribution text also scores high, so
  "higher is better" would let a degenerate model win. Reported undirected.
* ``output_perplexity_gap`` — its directed counterpart: how far the set's output perplexity is
  from the human references' under the same scoring model, |log PPL(set) − log PPL(human)|.
  Lower is better (0: as predictable to the base model as human text).
* ``human_perplexity`` — each set's own (fine-tuned) model scores the human test references.
  Lower is better: the model still finds human text likely.
"""

from __future__ import annotations

import numpy as np

from collapselab.metrics.base import MetricResult, TextSet


def per_text_perplexity(logprobs: list[np.ndarray]) -> np.ndarray:
    """exp(mean NLL) per text; NaN for a text with no tokens."""
    out = np.full(len(logprobs), np.nan)
    for i, lp in enumerate(logprobs):
        lp = np.asarray(lp, dtype=np.float64)
        if lp.size:
            out[i] = float(np.exp(-lp.mean()))
    return out


def iqr_filter(values: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """The values inside [Q1 − factor·IQR, Q3 + factor·IQR] (NaNs removed first)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return values
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    return values[(values >= q1 - factor * iqr) & (values <= q3 + factor * iqr)]


def describe(values: np.ndarray, factor: float = 1.5) -> dict[str, float]:
    """Mean, median and sd (ddof=1), raw and IQR-filtered, plus counts."""
    valid = values[~np.isnan(values)]
    kept = iqr_filter(valid, factor)

    def stats(v: np.ndarray, suffix: str) -> dict[str, float]:
        return {
            f"mean{suffix}": float(v.mean()) if v.size else float("nan"),
            f"median{suffix}": float(np.median(v)) if v.size else float("nan"),
            f"sd{suffix}": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
        }

    return {**stats(valid, ""), **stats(kept, "_iqr"), "n_outliers": float(valid.size - kept.size),
            "n_undefined": float(values.size - valid.size)}


class _Perplexity:
    family = "perplexity"

    def __init__(self, *, iqr_factor: float = 1.5) -> None:
        self.iqr_factor = iqr_factor

    primary = "mean_iqr"

    def _result(self, logprobs: list[np.ndarray] | None, what: str) -> MetricResult:
        if logprobs is None:
            raise ValueError(f"{self.name}: the text set has no {what} (no scoring pass was run)")
        ppl = per_text_perplexity(logprobs)
        return MetricResult(per_item={"ppl": ppl}, aggregates=self.aggregate_items(ppl))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The aggregates as a function of the per-item values alone: a bootstrap resamples the
        per-item values and calls this, instead of rescoring texts."""
        return describe(values, self.iqr_factor)


class OutputPerplexity(_Perplexity):
    """Perplexity of the set's texts under the vanilla target (see the module docstring). No
    better direction (``higher_is_better = None``): see :class:`OutputPerplexityGap` for the
    directed variant."""

    name = "output_perplexity"
    higher_is_better = None
    needs = frozenset({"logprobs"})

    def compute(self, texts: TextSet) -> MetricResult:
        return self._result(texts.logprobs, "logprobs")


class HumanPerplexity(_Perplexity):
    """Perplexity of the human test references under the set's own model."""

    name = "human_perplexity"
    higher_is_better = False
    needs = frozenset({"human_logprobs"})

    def compute(self, texts: TextSet) -> MetricResult:
        result = self._result(texts.human_logprobs, "human_logprobs")
        # per-item values belong to the human references, not to this set's texts
        result.details["per_item_ids"] = "human"
        return result


def _log_gap(set_value: float, human_value: float) -> tuple[float, float]:
    """(|log a − log b|, log a − log b); NaN when either is undefined or not positive."""
    if not (np.isfinite(set_value) and np.isfinite(human_value)) or set_value <= 0 or human_value <= 0:
        return float("nan"), float("nan")
    ratio = float(np.log(set_value) - np.log(human_value))
    return abs(ratio), ratio


class OutputPerplexityGap(_Perplexity):
    """Distance of the set's output perplexity from the human references' under the same scoring
    model (the vanilla target of the set's size):

        value = |log PPL(set) − log PPL(human)|,   PPL = mean of the per-text perplexities
                after IQR outlier removal (``mean_iqr``, output perplexity's primary statistic)

    ``log_ratio`` = log PPL(set) − log PPL(human) keeps the sign (< 0: more predictable to the base
    model than human text — the study's sign of collapse; > 0: less, e.g. incoherent text);
    ``value_median`` is the same distance between the medians; ``ppl`` and ``human_ppl`` are the
    two perplexities. Lower is better: 0 means the base model finds the set exactly as predictable
    as human answers, so neither a collapse towards its own mode (low PPL) nor degenerate text
    (high PPL) can look good. On the log scale the distance is a ratio: 0.69 is a factor of 2.

    Needs the set's log-probabilities under the vanilla target (``logprobs``) and the human
    references' under the same model (``human.logprobs``). Set-level only (a corpus statistic of
    both samples): its interval is the jackknife over the set's texts and the references together.
    """

    name = "output_perplexity_gap"
    higher_is_better = False
    needs = frozenset({"logprobs", "human"})
    primary = "value"

    def compute(self, texts: TextSet) -> MetricResult:
        if texts.logprobs is None:
            raise ValueError(f"{self.name}: the text set has no logprobs (no scoring pass was run)")
        if texts.human is None or texts.human.logprobs is None:
            raise ValueError(f"{self.name}: the human references of {texts.name!r} have no log-probabilities under "
                             "the set's scoring model (no vanilla scoring pass of the references)")
        mine = describe(per_text_perplexity(texts.logprobs), self.iqr_factor)
        human = describe(per_text_perplexity(texts.human.logprobs), self.iqr_factor)
        value, log_ratio = _log_gap(mine["mean_iqr"], human["mean_iqr"])
        value_median, _ = _log_gap(mine["median"], human["median"])
        return MetricResult(aggregates={"value": value, "log_ratio": log_ratio, "value_median": value_median,
                                        "ppl": mine["mean_iqr"], "human_ppl": human["mean_iqr"]})
