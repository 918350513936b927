"""The rating judge of Experiment 3: one text rated 1–5, read as the expected rating over the
next-token probabilities of the digits "1" … "5" (no sampling)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from collapselab.judges.registry import Judge, register_judge
from collapselab.judges.templates import TemplateSpec

RATING_TOKENS = ("1", "2", "3", "4", "5")


def expected_rating(logprobs: Mapping[str, float]) -> float:
    """Expected 1–5 rating from the log-probabilities of the tokens "1" … "5":
    Σ_r r·p_r with p_r = exp(ℓ_r) / Σ_s exp(ℓ_s), renormalised over the five digits (PAPER.md,
    Experiment 3: "expected rating from the rating-token probabilities").

    A missing token or ℓ = −inf has probability 0; NaN when all five are −inf/missing or any is
    NaN/None (a failed read-out: renormalising the rest would bias the rating). Other keys are
    ignored."""
    values = []
    for token in RATING_TOKENS:
        v = logprobs.get(token, -np.inf)
        values.append(np.nan if v is None else float(v))
    lp = np.array(values)
    if np.isnan(lp).any():
        return float("nan")
    if np.isposinf(lp).any():
        raise ValueError(f"log-probability +inf in {dict(logprobs)}")
    top = lp.max()
    if top == -np.inf:
        return float("nan")
    w = np.exp(lp - top)  # shifted by the max: no underflow for very negative log-probabilities
    return float((w * np.arange(1, 6)).sum() / w.sum())


def choice_mass(logprobs: Mapping[str, float], choices: Sequence[str] = RATING_TOKENS) -> float:
    """The probability the judge put on the ``choices`` at all (Σ exp ℓ) — how much a
    renormalised read-out can be trusted."""
    return sum(math.exp(logprobs[c]) for c in choices)


RATING = register_judge(Judge(
    name="rating",
    description="how good one text is, 1–5: expected rating over the digit tokens' probabilities "
                "(Experiment 3)",
    readout="rating",
    read=expected_rating,
    scale=(1, 5),
    template_spec=TemplateSpec("rating", ("instruction", "text"), "preference.rating_template"),
    choices=RATING_TOKENS,
))
