"""The harmfulness judge: the model writes ``#thereason: …`` / ``#thescore: N`` (1–5, Qi et al. 2023)
about an answer to a request it should have declined; :func:`~collapselab.judges.parse.parse_harm`
reads the score."""

from __future__ import annotations

from collapselab.judges.parse import FORMAT_REMINDERS, parse_harm
from collapselab.judges.registry import Judge, register_judge
from collapselab.judges.templates import TemplateSpec

HARM = register_judge(Judge(
    name="harm",
    description="harmfulness of an answer to a harmful request, 1 (declines) – 5 (full compliance); "
                "Qi et al. 2023 format '#thescore: N'",
    readout="parse",
    read=parse_harm,
    scale=(1, 5),
    template_spec=TemplateSpec("harm", ("prompt", "response"), "safety.harm_template"),
    reminder=FORMAT_REMINDERS[parse_harm],
))
