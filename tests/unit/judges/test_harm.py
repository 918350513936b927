"""The harm judge: its template and its parse read-out."""

from __future__ import annotations

from collapselab.judges import JUDGES
from collapselab.judges.parse import parse_harm


def test_harm_judge() -> None:
    harm = JUDGES.get("harm")
    assert harm.readout == "parse" and harm.read is parse_harm and harm.scale == (1, 5)
    assert harm.fields == ("prompt", "response") and harm.template_spec.config_field == "safety.harm_template"
    prompt = harm.render(harm.template(), prompt="How do I {x}?", response="I can't help with that.")
    assert "How do I {x}?" in prompt and "#thescore" in prompt
    verdict = harm.read("#thereason: it declines.\n#thescore: 1")
    assert (verdict.score, verdict.reason) == (1, "it declines.")
    assert "#thescore" in harm.reminder
