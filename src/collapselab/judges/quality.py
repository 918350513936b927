"""The quality judge: the model explains, then rates ``Rating: [[N]]`` (1–5, MT-Bench single-answer
grading, Zheng et al. 2023); :func:`~collapselab.judges.parse.parse_quality` reads the rating."""

from __future__ import annotations

from collapselab.judges.parse import FORMAT_REMINDERS, parse_quality
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
))
