"""Text preprocessing shared by the metric families."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.metrics.text import (
    sentences_for_bleu,
    sentences_of,
    simple_tokens,
    simple_words,
    split_sentences,
    strip_markdown,
    summarize,
    text_sentences,
    word_tokenize,
)


@pytest.mark.parametrize(("markdown", "plain"), [
    ("# Title here #", "Title here"),
    ("### Sub title", "Sub title"),
    ("Some **bold**, *italic*, ***both***, __under__, _em_ and ~~gone~~.",
     "Some bold, italic, both, under, em and gone."),
    ("snake_case_name and 2 * 3 * 4 stay", "snake_case_name and 2 * 3 * 4 stay"),
    ("- dash item\n* star item\n  + nested item", "dash item\nstar item\nnested item"),
    ("1. first\n2) second\na) lettered", "first\nsecond\nlettered"),
    ("> quoted\n> > twice", "quoted\ntwice"),
    ("```python\nx = 1\n```", "\nx = 1\n"),
    ("Run `pip install x` now.", "Run pip install x now."),
    ("See [the docs](http://x.y/z) and ![a cat](cat.png).", "See the docs and a cat."),
    ("Go to <https://a.b/c>.", "Go to https://a.b/c."),
    ("| A | B |\n|---|:-:|\n| 1 | 2 |", "A B\n\n1 2"),
    ("above\n\n---\n\nbelow", "above\n\n\n\nbelow"),
    ("Setext\n======", "Setext\n"),
    ("line<br>break and <b>bold</b>", "line break and bold"),
    ("", ""),
])
def test_strip_markdown(markdown: str, plain: str) -> None:
    assert strip_markdown(markdown) == plain


def test_strip_markdown_keeps_line_structure() -> None:
    text = "# Title\n\nPara one.\n\n- item one\n- item two\n"
    assert strip_markdown(text).split("\n") == ["Title", "", "Para one.", "", "item one", "item two", ""]


def test_split_sentences_abbreviations_and_newlines() -> None:
    text = ("Mr. Smith met Dr. Jones in St. Louis. They talked, e.g. about apples, pears, etc. "
            "Then they left!\nA list item without a period\n\nIs it done? Yes.")
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones in St. Louis.",
        "They talked, e.g. about apples, pears, etc.",
        "Then they left!",
        "A list item without a period",
        "Is it done?",
        "Yes.",
    ]


def test_split_sentences_empty() -> None:
    assert split_sentences("") == []
    assert split_sentences("\n \n") == []


def test_sentences_of_strips_then_splits() -> None:
    assert sentences_of("## Steps\n1. **Mix** the flour. Add water.\n2. Bake it.") == [
        "Steps", "Mix the flour.", "Add water.", "Bake it."]


def test_sentences_for_bleu_keeps_four_words_or_more() -> None:
    text = "Sure! Here it is.\nThis one has five words.\n- Four words are enough\n- Three words only"
    assert sentences_for_bleu(text) == ["This one has five words.", "Four words are enough"]


def test_word_tokenize_is_nltk_treebank_per_sentence() -> None:
    # Treebank detaches only a final period, so the text is split into sentences first
    assert word_tokenize("It costs $3.50. Don't wait.") == [
        "It", "costs", "$", "3.50", ".", "Do", "n't", "wait", "."]


def test_simple_tokens_and_words() -> None:
    assert simple_tokens("Don't STOP, it's 3.5!") == ["don't", "stop", ",", "it's", "3", ".", "5", "!"]
    assert simple_words("Don't STOP, it's 3.5!") == ["don't", "stop", "it's", "3", "5"]


def test_text_sentences_prefers_precomputed() -> None:
    assert text_sentences(["A b. C d."], [["given"]]) == [["given"]]
    assert text_sentences(["One two three. Four five six."], None) == [["One two three.", "Four five six."]]
    with pytest.raises(ValueError, match="2 sentence lists for 1 texts"):
        text_sentences(["x"], [["a"], ["b"]])


def test_summarize_counts_undefined() -> None:
    stats = summarize(np.array([1.0, np.nan, 3.0]))
    assert stats == {"mean": 2.0, "median": 2.0, "sd": pytest.approx(2**0.5), "min": 1.0, "max": 3.0,
                     "n": 2.0, "n_undefined": 1.0}
    empty = summarize(np.array([np.nan]))
    assert np.isnan(empty["mean"]) and empty["n_undefined"] == 1.0
