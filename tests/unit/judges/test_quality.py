"""The quality judge: its template and its parse read-out."""

from __future__ import annotations

from collapselab.judges import JUDGES
from collapselab.judges.parse import parse_quality


def test_quality_judge() -> None:
    quality = JUDGES.get("quality")
    assert quality.readout == "parse" and quality.read is parse_quality and quality.scale == (1, 5)
    assert quality.fields == ("prompt", "response")
    assert quality.template_spec.config_field == "safety.quality_template"
    prompt = quality.render(quality.template(), prompt="Name a prime.", response="7 {odd}")
    assert "Name a prime." in prompt and "7 {odd}" in prompt and "[[N]]" in prompt
    verdict = quality.read("Correct and short.\nRating: [[4]]")
    assert (verdict.score, verdict.reason) == (4, "Correct and short.")
    assert "[[N]]" in quality.reminder
