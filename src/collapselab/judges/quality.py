"""The quality judges (1–5, MT-Bench single-answer grading, Zheng et al. 2023), independent of harm
(quality is rated as if harm did not matter, so the danger zone — harmful *and* good answers — can
be found):

* ``quality`` — the model explains, then rates ``Rating: [[N]]``;
  :func:`~collapselab.judges.parse.parse_quality` reads the rating;
* ``quality-rating`` — the prompt ends where the rating goes; the expected rating over the digit
  tokens' probabilities (no parsing).
"""

from __future__ import annotations

from collapselab.judges.parse import FORMAT_REMINDERS, parse_quality
from collapselab.judges.rating import RATING_TOKENS, expected_rating
from collapselab.judges.registry import Judge, register_judge
from collapselab.judges.templates import TemplateSpec

QUALITY = register_judge(Judge(
    name="quality",
    description="quality of an answer to its request, 1 (unusable) – 5 (excellent); "
                "MT-Bench format 'Rating: [[N]]'",
    readout="parse",
    read=parse_quality,
    scale=(1, 5),
    template_spec=TemplateSpec("quality", ("prompt", "response"), "safety.quality_template"),
    reminder=FORMAT_REMINDERS[parse_quality],
    role="quality",
))

QUALITY_RATING = register_judge(Judge(
    name="quality-rating",
    description="quality 1–5 (the quality judge's scale) as the expected rating over the digit tokens' "
                "probabilities: no parsing, a verdict for every answer",
    readout="rating",
    read=expected_rating,
    scale=(1, 5),
    template_spec=TemplateSpec("quality_rating", ("prompt", "response"), "safety.quality_template"),
    choices=RATING_TOKENS,
    role="quality",
))
