"""The pairwise judge of Experiment 3: which of two texts is better, read from the judge's
next-token distribution — p_A = P("A") / (P("A") + P("B")), no sampling."""

from __future__ import annotations

import math
from collections.abc import Mapping

from collapselab.judges.registry import Judge, register_judge
from collapselab.judges.templates import TemplateSpec

#: the tokens the verdict is read from: "Text A" / "Text B" is better
PAIR_CHOICES = ("A", "B")


def renormalised(logprobs: Mapping[str, float], first: str, second: str) -> tuple[float, float]:
    """(P(first) / (P(first) + P(second)), P(first) + P(second)); NaN (and mass 0) when neither
    has mass."""
    a, b = logprobs[first], logprobs[second]
    top = max(a, b)
    if top == -math.inf or math.isnan(top):
        return math.nan, 0.0
    ea, eb = math.exp(a - top), math.exp(b - top)
    return ea / (ea + eb), math.exp(top) * (ea + eb)


def read_pairwise(logprobs: Mapping[str, float]) -> float:
    """p_A: the probability that "Text A" is the better one, renormalised over "A" and "B"."""
    return renormalised(logprobs, *PAIR_CHOICES)[0]


PAIRWISE = register_judge(Judge(
    name="pairwise",
    description="which of two texts is better: p_A = P(A) / (P(A) + P(B)) from the next-token "
                "distribution (self-preference, Experiment 3)",
    readout="choice",
    read=read_pairwise,
    scale=(0, 1),
    template_spec=TemplateSpec("pairwise", ("instruction", "text_a", "text_b"), "preference.pair_template"),
    choices=PAIR_CHOICES,
))
