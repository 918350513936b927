"""The self-recognition judge of Experiment 3: which of two texts did the judge write itself,
read from its next-token distribution — p_A = P("A") / (P("A") + P("B")), no sampling.

The probe of Panickssery et al. 2024 ("LLM evaluators recognize and favor their own generations"):
shown its own text next to another source's, in both orders, a judge that recognises itself puts
more than half its probability on its own; recognition accuracy (mean P(picks own), order-averaged)
is computed by :func:`collapselab.preference.recognition.recognition_scores`.
"""

from __future__ import annotations

from collapselab.judges.pairwise import PAIR_CHOICES, read_pairwise
from collapselab.judges.registry import Judge, register_judge
from collapselab.judges.templates import TemplateSpec

RECOGNITION = register_judge(Judge(
    name="recognition",
    description="which of two texts the judge wrote itself: p_A = P(A) / (P(A) + P(B)) from the "
                "next-token distribution (self-recognition, Experiment 3)",
    readout="choice",
    read=read_pairwise,
    scale=(0, 1),
    template_spec=TemplateSpec("recognition", ("instruction", "text_a", "text_b"),
                               "preference.recognition_template"),
    choices=PAIR_CHOICES,
))
