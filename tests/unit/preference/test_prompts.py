"""The pairwise and rating judge templates (through the one template subsystem) and the
counterbalanced comparison plan."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from collapselab.errors import ConfigError, DataError
from collapselab.judges.templates import load_template, render
from collapselab.preference.prompts import Comparison, comparison_plan

SOURCES = ["llama", "qwen", "gemma", "falcon", "human"]


# -- templates -------------------------------------------------------------------------------------
def test_packaged_pairwise_template_renders_in_the_study_style():
    template = load_template(None, "pairwise")
    text = render(template, instruction="Summarise the article.", text_a="first {text}", text_b="second")
    # braces inside the texts are data, not fields
    assert "Summarise the article." in text and "first {text}" in text
    assert text.index("Text A:") < text.index("first {text}") < text.index("Text B:") < text.index("second")
    assert text.rstrip().endswith("Which text is better? Answer with a single letter, A or B.")


def test_packaged_rating_template_renders():
    text = render(load_template(None, "rating"), instruction="Summarise.", text="a summary")
    assert "Summarise." in text and "a summary" in text
    assert text.rstrip().endswith("Answer with a single digit from 1 to 5.")


def test_user_template_is_read_and_validated(tmp_path):
    path = tmp_path / "pair.txt"
    path.write_text("Q: {instruction}\n1) {text_a}\n2) {text_b}\nLiteral {{braces}}.", encoding="utf-8")
    template = load_template(str(path), "pairwise")
    assert render(template, instruction="i", text_a="x", text_b="y") == "Q: i\n1) x\n2) y\nLiteral {braces}."


def test_unknown_field_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("{instruction}\n{text_a}\n{text_b}\n{judge_name}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_template(str(path), "pairwise")
    msg = str(err.value)
    assert "bad.txt:4:" in msg and "{judge_name}" in msg and "preference.pair_template" in msg


def test_missing_field_names_the_file(tmp_path):
    path = tmp_path / "rate.txt"
    path.write_text("Rate this: {text}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rate\.txt.*\{instruction\}.*preference\.rating_template"):
        load_template(str(path), "rating")


def test_positional_field_is_unknown(tmp_path):
    path = tmp_path / "pos.txt"
    path.write_text("{instruction} {text} {}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pos\.txt:1: field '\{\}' is not a plain name"):
        load_template(str(path), "rating")


def test_unbalanced_brace_names_the_file(tmp_path):
    path = tmp_path / "brace.txt"
    path.write_text("{instruction} {text} }", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"brace\.txt:1: single '\}'"):
        load_template(str(path), "rating")


def test_missing_file_and_unknown_kind(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.txt.*not found.*preference\.pair_template"):
        load_template(str(tmp_path / "nope.txt"), "pairwise")
    with pytest.raises(ConfigError, match="unknown judge template kind 'triple'"):
        load_template(None, "triple")  # type: ignore[arg-type]


def test_render_without_a_needed_field_raises():
    with pytest.raises(ConfigError, match="text_b"):
        render(load_template(None, "pairwise"), instruction="i", text_a="a")


# -- comparison plan -------------------------------------------------------------------------------
def test_plan_counterbalances_every_pair_once_per_order_per_item():
    items = ["i1", "i2", "i3"]
    plan = comparison_plan(items, SOURCES)
    k = len(SOURCES)
    assert len(plan) == len(items) * k * (k - 1)
    ordered = Counter((c.item_id, c.first, c.second) for c in plan)
    # every ordered pair of distinct sources exactly once per item (both orders of each unordered pair)
    expected = {(i, a, b) for i in items for a, b in itertools.permutations(SOURCES, 2)}
    assert set(ordered) == expected and set(ordered.values()) == {1}
    # so every source is shown first as often as second: k − 1 times each per item
    for item in items:
        firsts = Counter(c.first for c in plan if c.item_id == item)
        seconds = Counter(c.second for c in plan if c.item_id == item)
        assert firsts == seconds == {s: k - 1 for s in SOURCES}
    assert len({c.id for c in plan}) == len(plan)


def test_plan_order_and_ids_are_stable():
    plan = comparison_plan(["x", "y"], ["a", "b", "c"])
    assert plan[:6] == [
        Comparison("x|a>b", "x", "a", "b"), Comparison("x|b>a", "x", "b", "a"),
        Comparison("x|a>c", "x", "a", "c"), Comparison("x|c>a", "x", "c", "a"),
        Comparison("x|b>c", "x", "b", "c"), Comparison("x|c>b", "x", "c", "b"),
    ]
    assert [c.item_id for c in plan[6:]] == ["y"] * 6
    assert plan == comparison_plan(["x", "y"], ["a", "b", "c"])


@pytest.mark.parametrize(("items", "sources", "error", "match"), [
    (["i"], ["a", "a", "b"], ConfigError, "duplicate source"),
    (["i"], ["a"], ConfigError, "at least 2"),
    (["i"], ["a|b", "c"], ConfigError, "separators"),
    (["i", "i"], ["a", "b"], DataError, "duplicate item"),
])
def test_plan_rejects_bad_input(items, sources, error, match):
    with pytest.raises(error, match=match):
        comparison_plan(items, sources)
