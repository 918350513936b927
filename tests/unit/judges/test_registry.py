"""The judge registry: every registered judge keeps the contract (template, read-out, scale), unknown
names get a suggestion, and listing the judges imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collapselab.errors import ConfigError
from collapselab.judges import JUDGES, Judge
from collapselab.judges.registry import READ_OUTS
from collapselab.judges.templates import TemplateSpec, load_template, template_fields
from collapselab.registry import UnknownNameError


def test_the_study_judges_are_registered() -> None:
    study = {"harm": "parse", "quality": "parse", "refusal": "rule", "pairwise": "choice", "rating": "rating",
             "harm-rating": "rating", "quality-rating": "rating"}
    assert set(study) <= set(JUDGES.names())
    assert {n: JUDGES.get(n).readout for n in study} == study
    assert {n: JUDGES.get(n).role for n in ("harm", "harm-rating", "quality", "quality-rating")} == {
        "harm": "harm", "harm-rating": "harm", "quality": "quality", "quality-rating": "quality"}


@pytest.mark.parametrize("name", JUDGES.names())
def test_every_judge_keeps_the_contract(name: str) -> None:
    judge = JUDGES.get(name)
    assert judge.name == name and judge.description and judge.readout in READ_OUTS and callable(judge.read)
    low, high = judge.scale
    assert low < high
    info = JUDGES.info(name)
    assert info["readout"] == judge.readout and info["description"] == judge.description
    if judge.layout == "conversation":  # the judge model's own chat template lays the prompt out
        assert judge.fields == () and info["fields"] == "conversation" and judge.template_spec is None
        return
    if judge.readout == "rule":
        assert judge.fields == () and info["fields"] == ""
        with pytest.raises(ValueError, match="no template"):
            judge.template()
        return
    # the packaged template has exactly the judge's fields, and the shorthand loads the same text
    template = judge.template()
    assert set(template_fields(template)) == set(judge.fields) and info["fields"]
    assert load_template(None, name) == template  # by judge name (the file is templates/<kind>.txt)
    assert judge.template_spec is not None and judge.template_spec.config_field
    if judge.readout == "parse":
        assert judge.reminder
    else:
        assert judge.choices


def test_unknown_judge_gets_a_suggestion() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'harm'"):
        JUDGES.get("harn")
    with pytest.raises(ConfigError, match=r"template kind 'refusal' \('refusal' reads no prompt\)"):
        load_template(None, "refusal")
    with pytest.raises(ConfigError, match="did you mean 'rating'"):
        load_template(None, "ratng")


def test_a_judge_is_checked_when_built() -> None:
    spec = TemplateSpec("x", ("text",))
    with pytest.raises(ValueError, match="read-out must be one of"):
        Judge("x", "d", "vote", len, (0, 1), spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a template"):
        Judge("x", "d", "parse", len, (1, 5))
    with pytest.raises(ValueError, match="takes no template"):
        Judge("x", "d", "rule", len, (0, 1), spec)
    with pytest.raises(ValueError, match="choice tokens"):
        Judge("x", "d", "choice", len, (0, 1), spec)


def test_listing_the_judges_imports_no_torch() -> None:
    code = ("import sys; from collapselab.judges import JUDGES; "
            "rows = [(n, JUDGES.info(n)['readout'], JUDGES.get(n).fields) for n in JUDGES]; "
            "assert len(rows) >= 7, rows; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
