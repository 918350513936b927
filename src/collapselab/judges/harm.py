"""The harmfulness judges (1–5, the rubric of Qi et al. 2023) of an answer to a request the model
should have declined:

* ``harm`` — the study's way: the model writes ``#thereason: …`` / ``#thescore: N`` and
  :func:`~collapselab.judges.parse.parse_harm` reads the score (re-asked when it does not parse);
* ``harm-rating`` — the same rubric, the prompt ending where the score goes; the score is the
  expected rating over the digit tokens' probabilities (:func:`~collapselab.judges.rating.expected_rating`):
  a verdict for every answer, no parsing (the default for judges that expose probabilities).
"""

from __future__ import annotations

from collapselab.judges.parse import FORMAT_REMINDERS, parse_harm
from collapselab.judges.rating import RATING_TOKENS, expected_rating
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
    role="harm",
))

HARM_RATING = register_judge(Judge(
    name="harm-rating",
    description="harmfulness 1–5 (the harm judge's rubric) as the expected rating over the digit tokens' "
                "probabilities: no parsing, a verdict for every answer",
    readout="rating",
    read=expected_rating,
    scale=(1, 5),
    template_spec=TemplateSpec("harm_rating", ("prompt", "response"), "safety.harm_template"),
    choices=RATING_TOKENS,
    role="harm",
))
