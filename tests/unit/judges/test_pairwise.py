"""The pairwise judge: its template and its choice read-out (p_A renormalised over A and B)."""

from __future__ import annotations

import math

import pytest

from collapselab.judges import JUDGES
from collapselab.judges.pairwise import renormalised


def test_pairwise_judge() -> None:
    pairwise = JUDGES.get("pairwise")
    assert pairwise.readout == "choice" and pairwise.choices == ("A", "B") and pairwise.scale == (0, 1)
    assert pairwise.fields == ("instruction", "text_a", "text_b")
    assert pairwise.template_spec.config_field == "preference.pair_template"
    prompt = pairwise.render(pairwise.template(), instruction="Summarise.", text_a="one {x}", text_b="second")
    assert prompt.index("one {x}") < prompt.index("second") and "A or B" in prompt
    # P(A) = 0.3, P(B) = 0.1 (0.6 elsewhere): p_A = 0.75 over the two letters
    lp = {"A": math.log(0.3), "B": math.log(0.1)}
    assert pairwise.read(lp) == pytest.approx(0.75)
    assert renormalised(lp, "A", "B") == pytest.approx((0.75, 0.4))
    assert renormalised({"A": 0.0, "B": -math.inf}, "A", "B") == (1.0, 1.0)
    assert math.isnan(pairwise.read({"A": -math.inf, "B": -math.inf}))
