"""The tail of human-text perplexity: Shumailov et al.'s signature of model collapse.

Shumailov et al. (2024, Nature 631, "AI models collapse when trained on recursively generated
data", Fig. 1b–c) score the *original* human test data under the model of each generation and plot
the distribution of per-text perplexity: across generations the bulk moves little while a long
tail of human texts that the model finds very unlikely grows — the model forgets the tails of the
human distribution. A mean (``human_perplexity``) hides that; this metric reports the quantiles.

Per human reference k, its perplexity under the set's own model — exactly ``human_perplexity``'s
per-item value, :func:`~collapselab.metrics.perplexity.per_text_perplexity` of
``TextSet.human_logprobs[k]`` (exp of the mean token NLL of the response tokens). The per-item
values are the references' (``details["per_item_ids"] = "human"``, as ``human_perplexity``), and
the interval resamples them (the aggregates are a function of them: ``aggregate_items``).
"""

from __future__ import annotations

import numpy as np

from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.perplexity import per_text_perplexity

#: the quantiles reported, by statistic name
QUANTILES = {"q50": 0.5, "q90": 0.9, "q99": 0.99}
DEFAULT_BASE_QUANTILE = 0.9


class HumanPerplexityTail:
    """Quantiles of the per-text perplexity of the human references under the set's model.

    With PPL_k = exp(−(1/T_k) Σ_t log p_model(x_kt | x_k,<t, prompt_k)) for reference k (NaN for a
    reference with no tokens, counted in ``n_undefined``), and Q(p) the p-quantile of the defined
    PPL_k (linear interpolation between order statistics, numpy's default — Hyndman & Fan type 7):

    * ``q50``, ``q90`` (primary), ``q99`` — Q(0.5), Q(0.9), Q(0.99). q90 is the primary: it is
      where Shumailov et al.'s tail shows, and unlike q99 it rests on more than the few largest
      values (with fewer than 100 references q99 interpolates between the two largest, and its
      bootstrap interval is coarse).
    * ``share_above_base`` — with ``base_quantile`` p (default 0.9; None leaves it out, another
      value shows in the metric's name): the share of references with PPL_k > c, the p-quantile
      of the *same* references' perplexities under the vanilla target of the set's size
      (``TextSet.human.logprobs``, the scoring output_perplexity_gap uses). Under the base model
      itself it is 0.10 by construction; above 0.10 the model finds more human texts as surprising
      as the base model's most surprising tenth — the tail has grown. Comparable across conditions,
      seeds and generations of one target (one c each), unlike a fixed perplexity, whose meaning
      changes with the model and tokenizer. Left out where the references have no vanilla scores.
      Its interval is conditional on c: the bootstrap resamples the set-model perplexities alone
      (``aggregate_items`` sees no more) and holds c at its full-sample value, which leaves out c's
      own sampling error — the interval is narrower than a paired bootstrap of both scores of each
      reference, by about 12% when the two models' per-reference perplexities correlate at 0.9 and
      40% when independent (simulated, 300 log-normal references).
    * ``share_above`` — with ``threshold`` t set: the share of references with PPL_k > t, for a
      researcher who wants one fixed perplexity across every target. Off by default (None).
    * ``n``, ``n_undefined``.

    Lower is better (``higher_is_better = False``): the model still finds human text likely.
    """

    family = "perplexity"
    higher_is_better = False
    needs = frozenset({"human_logprobs"})
    primary = "q90"

    def __init__(self, *, threshold: float | None = None,
                 base_quantile: float | None = DEFAULT_BASE_QUANTILE) -> None:
        if threshold is not None and not (isinstance(threshold, int | float) and threshold >= 1):
            raise ValueError(f"human_perplexity_tail: threshold must be a perplexity ≥ 1 or None, "
                             f"got {threshold!r}")
        if base_quantile is not None and not (isinstance(base_quantile, int | float) and 0 < base_quantile < 1):
            raise ValueError(f"human_perplexity_tail: base_quantile must lie in (0, 1) or be None, "
                             f"got {base_quantile!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.base_quantile = None if base_quantile is None else float(base_quantile)
        extra: dict[str, object] = {}
        if self.threshold is not None:
            extra["threshold"] = f"{self.threshold:g}"
        if self.base_quantile != DEFAULT_BASE_QUANTILE:
            extra["base_quantile"] = "none" if self.base_quantile is None else f"{self.base_quantile:g}"
        self.name = param_name("human_perplexity_tail", **extra)
        #: c, the base model's quantile, fixed by compute for the set it scores (see aggregate_items)
        self.base_cutoff: float | None = None

    def compute(self, texts: TextSet) -> MetricResult:
        if texts.human_logprobs is None:
            raise ValueError(f"{self.name}: the text set has no human_logprobs (no scoring pass was run)")
        ppl = per_text_perplexity(texts.human_logprobs)
        self.base_cutoff = None
        details: dict[str, object] = {"per_item_ids": "human"}
        base = texts.human.logprobs if texts.human is not None else None
        if self.base_quantile is not None and base is not None:
            if len(base) != len(ppl):
                raise ValueError(f"{self.name}: {len(base)} vanilla-scored references but {len(ppl)} scored by the "
                                 "set's model")
            base_ppl = per_text_perplexity(base)
            base_ppl = base_ppl[~np.isnan(base_ppl)]
            if base_ppl.size:
                self.base_cutoff = float(np.quantile(base_ppl, self.base_quantile))
                details["base_cutoff"] = self.base_cutoff
        return MetricResult(per_item={"ppl": ppl}, aggregates=self.aggregate_items(ppl), details=details)

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The aggregates from the references' perplexities (what the bootstrap resamples); the
        base cutoff is the one :meth:`compute` fixed."""
        values = np.asarray(values, dtype=np.float64)
        valid = values[~np.isnan(values)]
        nan = float("nan")
        out = {k: float(np.quantile(valid, p)) if valid.size else nan for k, p in QUANTILES.items()}
        if self.base_cutoff is not None:
            out["share_above_base"] = float(np.mean(valid > self.base_cutoff)) if valid.size else nan
        if self.threshold is not None:
            out["share_above"] = float(np.mean(valid > self.threshold)) if valid.size else nan
        return {**out, "n": float(valid.size), "n_undefined": float(values.size - valid.size)}
