"""The rating judge: its template and its rating read-out (expected rating over "1".."5")."""

from __future__ import annotations

import math

import pytest

from collapselab.judges import JUDGES
from collapselab.judges.rating import choice_mass, expected_rating


def test_rating_judge() -> None:
    rating = JUDGES.get("rating")
    assert rating.readout == "rating" and rating.read is expected_rating and rating.scale == (1, 5)
    assert rating.choices == ("1", "2", "3", "4", "5") and rating.fields == ("instruction", "text")
    assert rating.template_spec.config_field == "preference.rating_template"
    prompt = rating.render(rating.template(), instruction="Summarise.", text="a {summary}")
    assert "a {summary}" in prompt and "single digit from 1 to 5" in prompt
    # half the digit mass on "2", half on "4" (the rest of the vocabulary ignored): 3.0
    lp = {"1": -math.inf, "2": math.log(0.2), "3": -math.inf, "4": math.log(0.2), "5": -math.inf}
    assert rating.read(lp) == pytest.approx(3.0)
    assert choice_mass(lp, rating.choices) == pytest.approx(0.4)
