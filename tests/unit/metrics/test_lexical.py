"""Lexical family: every metric against a plain, independent computation on the same texts."""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest

from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.lexical import (
    CompressionRatio,
    Distinct,
    LexicalDiversity,
    Mattr,
    NgramEntropy,
    Tokenizer13a,
    self_bleu,
    sentence_self_bleu,
)
from collapselab.metrics.naive_lexical import (
    naive_compression_ratio,
    naive_distinct,
    naive_mattr,
    naive_ngram_entropy,
    naive_self_bleu,
    naive_sentence_self_bleu,
)
from collapselab.metrics.text import sentences_for_bleu

HANDWRITTEN = [
    "",
    "Sure!",
    "Only one sentence here, nothing more.",
    "The cat sat on the mat. The cat sat on the rug.",
    "## Answer\n\n**Paris** is the capital of France. It is known for the *Eiffel Tower*. "
    "Paris is the capital of France.",
    "Here are the steps:\n1. Preheat the oven to 200 degrees.\n2. Mix the flour and the water.\n"
    "3. Bake the bread for 30 minutes.\n- Let it cool before you cut it.",
    "| Name | Age |\n|---|---|\n| Alice Smith is here | 30 years old now |\n"
    "| Bob Jones is there | 25 years old now |",
    "Use `pip install sacrebleu` to install it. Then run the [script](http://x.y) again. Done.",
    "Yes. No. Maybe. I do not know what you want me to say.",
    "Dr. Smith went to Washington. He met Mr. Jones there, e.g. at the office. They talked for hours.",
    "A a a a a a a a. A a a a a a a a. A a a a a a a a.",
    "word word word word. other other other other.",
    "> Quoted wisdom goes here today.\n> And another quoted line follows it.",
    "Short one. Another short one here. And a much longer sentence that goes on and on and on.",
    "x1 x2 x3 x4 x5 x6 x7. y1 y2 y3 y4. z1 z2 z3 z4 z5 z6 z7 z8 z9 z10.",
    "The results were good, i.e. better than expected. The results were good, i.e. better than expected.",
    "```\ncode line one here ok\ncode line two here ok\n```\nAnd some prose after the code block.",
    "Numbers like 3.14 and 2,718 appear here. Prices rose by 5-10 percent in 2023.",
]

VOCABULARY = ("the a an of to in and is was it this that model data text output training diversity "
              "language large small new old many few very more less good bad result results , ; :").split()


def generated_texts(n: int, seed: int = 0) -> list[str]:
    """Seeded multi-sentence texts over a small shared vocabulary, some sentences repeated."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences: list[str] = []
        for _ in range(rng.randint(0, 7)):
            if sentences and rng.random() < 0.15:
                sentences.append(rng.choice(sentences))
                continue
            words = [rng.choice(VOCABULARY) for _ in range(rng.randint(1, 18))]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", "."]))
        joiner = rng.choice([" ", "\n", "\n- "])
        texts.append(joiner.join(sentences))
    return texts


TEXTS = HANDWRITTEN + generated_texts(24)


def text_set(texts: list[str]) -> TextSet:
    return TextSet(name="t", kind="condition", ids=[f"r{i}" for i in range(len(texts))], texts=texts)


def bleu_sentence_lists(texts: list[str]) -> list[list[str]]:
    return [sentences_for_bleu(t) for t in texts]


# --- Self-BLEU ---------------------------------------------------------------------------------


def test_tokenizer_13a_gives_sacrebleus_tokens() -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a as SacreTokenizer13a

    rng = random.Random(5)
    pieces = [*"ab1 2.,-&;:!?()[]{}<>/\\'\"$%#@*+=_~^`|\u00e9\u201c\u2014\n\t",
              "&amp;", "&quot;", "&lt;", "&gt;", "<skipped>", "-\n"]
    fuzz = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    fuzz += ["".join(rng.choice("a1 .,-") for _ in range(rng.randint(0, 20))) for _ in range(3000)]
    tricky = ["a..5", "x...y", "1,000.50", "3-4", "e.g., this", "&amp;lt; &quot;q&quot;", "<skipped> ok",
              "line-\nbreak", "U.S.A.", "end.", ".start", "", " ", "word. 5. 6,7,8"]
    sentences = [s for t in TEXTS for s in sentences_for_bleu(t)]
    lines = fuzz + tricky + sentences
    reference = SacreTokenizer13a()
    assert Tokenizer13a().tokenize(lines) == [reference(line).split() for line in lines]


def test_fast_sentence_scores_equal_sacrebleu_individual() -> None:
    groups = [s for s in bleu_sentence_lists(TEXTS) if len(s) >= 2]
    assert len(groups) > 20
    for fast, naive in zip(sentence_self_bleu(groups), naive_sentence_self_bleu(groups), strict=True):
        np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-9)


def test_fast_sentence_scores_equal_sacrebleu_pooled() -> None:
    pooled = [[s for sents in bleu_sentence_lists(TEXTS) for s in sents]]
    (fast,), (naive,) = sentence_self_bleu(pooled), naive_sentence_self_bleu(pooled)
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-9)


@pytest.mark.parametrize("max_order", [1, 2, 4])
def test_fast_sentence_scores_other_orders(max_order: int) -> None:
    groups = [s for s in bleu_sentence_lists(TEXTS) if len(s) >= 2]
    for fast, naive in zip(sentence_self_bleu(groups, max_order), naive_sentence_self_bleu(groups, max_order),
                           strict=True):
        np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-9)


def test_effective_order_brevity_penalty_and_closest_length_ties() -> None:
    groups = [
        ["a b c", "a b c d e f g"],  # 3-token hypothesis: no 4-grams; brevity penalty
        ["one two three four five", "one two three", "one two three four five six seven"],  # tie 3 vs 7 -> 3
        ["p q r s", "t u v w"],  # no match at all -> 0
        ["same words here now", "same words here now"],  # identical -> 100
        ["x y", "x y z w", "x"],  # 1-token reference
    ]
    fast, naive = sentence_self_bleu(groups, 4), naive_sentence_self_bleu(groups, 4)
    for f, n in zip(fast, naive, strict=True):
        np.testing.assert_allclose(f, n, rtol=0, atol=1e-9)
    assert fast[2].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(fast[3], [100.0, 100.0])


@pytest.mark.parametrize(("mode", "sample"), [("individual", 100), ("aggregated", 0), ("aggregated", 8)])
def test_self_bleu_equals_plain_loop(mode: str, sample: int) -> None:
    sentences = bleu_sentence_lists(TEXTS)
    fast = self_bleu(sentences, mode=mode, sample=sample, seed=3)
    naive = naive_self_bleu(sentences, mode=mode, sample=sample, seed=3)
    assert fast.used.tolist() == naive.used.tolist()
    assert fast.value == pytest.approx(naive.value, abs=1e-9)
    np.testing.assert_allclose(fast.per_response, naive.per_response, rtol=0, atol=1e-9)
    assert fast.n_sentences == naive.n_sentences


def test_lexical_diversity_individual() -> None:
    metric = LexicalDiversity()
    assert metric.name == "lexical_diversity[mode=individual,max_order=3]"
    result = metric.compute(text_set(TEXTS))
    sentences = bleu_sentence_lists(TEXTS)
    expected = 100.0 - naive_self_bleu(sentences).per_response
    values = result.per_item["lexical_diversity"]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9)
    n_single = sum(len(s) < 2 for s in sentences)
    assert result.aggregates["n_undefined"] == n_single > 0
    assert np.isnan(values[[len(s) < 2 for s in sentences]]).all()
    assert result.aggregates["mean"] == pytest.approx(np.nanmean(expected), abs=1e-9)
    assert result.aggregates["self_bleu"] == pytest.approx(100.0 - np.nanmean(expected), abs=1e-9)


def test_lexical_diversity_aggregated_and_sampling() -> None:
    texts = generated_texts(60, seed=1)
    metric = LexicalDiversity(mode="aggregated", sample=10, seed=7)
    assert metric.name == "lexical_diversity[mode=aggregated,max_order=3,sample=10,seed=7]"
    result = metric.compute(text_set(texts))
    naive = naive_self_bleu(bleu_sentence_lists(texts), mode="aggregated", sample=10, seed=7)
    assert result.aggregates["corpus"] == pytest.approx(100.0 - naive.value, abs=1e-9)
    assert result.aggregates["n_responses"] == 10
    assert result.per_item == {}
    assert result.details["sampled_ids"] == [f"r{i}" for i in naive.used]
    # seeded: same seed, same sample; another seed, another sample
    again = LexicalDiversity(mode="aggregated", sample=10, seed=7).compute(text_set(texts))
    assert again.details == result.details
    other = LexicalDiversity(mode="aggregated", sample=10, seed=8).compute(text_set(texts))
    assert other.details["sampled_ids"] != result.details["sampled_ids"]


def test_lexical_diversity_uses_precomputed_sentences() -> None:
    ts = text_set(["ignored text"])
    ts.sentences = [["the cat sat on the mat .", "the cat sat on the rug .", "tiny"]]
    value = LexicalDiversity().compute(ts).per_item["lexical_diversity"][0]
    assert value == pytest.approx(100.0 - 100.0 * (12 / 35) ** (1 / 3), abs=1e-9)


def test_lexical_diversity_golden() -> None:
    # "The cat sat on the mat." vs "The cat sat on the rug." (13a: 7 tokens each, period split off):
    # 1-grams 6/7 match, 2-grams 4/6, 3-grams 3/5, equal lengths (BP = 1), both directions alike:
    # Self-BLEU = 100·(6/7 · 4/6 · 3/5)^(1/3) = 100·(12/35)^(1/3) ≈ 69.99, diversity ≈ 30.01.
    result = LexicalDiversity().compute(text_set(["The cat sat on the mat. The cat sat on the rug."]))
    expected = 100.0 - 100.0 * (12 / 35) ** (1 / 3)
    assert result.per_item["lexical_diversity"][0] == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(30.01, abs=0.005)


def test_lexical_diversity_edge_cases() -> None:
    result = LexicalDiversity().compute(text_set(["", "Only one sentence of words here.", "Hi. Yo."]))
    assert np.isnan(result.per_item["lexical_diversity"]).all()
    assert result.aggregates["n_undefined"] == 3
    assert math.isnan(result.aggregates["mean"])
    aggregated = LexicalDiversity(mode="aggregated").compute(text_set(["", "One two three four."]))
    assert math.isnan(aggregated.aggregates["corpus"]) and aggregated.aggregates["n_undefined"] == 2


def test_lexical_diversity_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        LexicalDiversity(mode="pairwise")
    with pytest.raises(ValueError, match="sample"):
        LexicalDiversity(mode="aggregated", sample=-1)


# --- distinct-n, entropy, compression, MATTR ---------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_distinct_equals_counter_version(n: int) -> None:
    result = Distinct(n=n).compute(text_set(TEXTS))
    corpus, per_item = naive_distinct(TEXTS, n)
    assert result.aggregates["corpus"] == pytest.approx(corpus, abs=1e-12)
    np.testing.assert_allclose(result.per_item["distinct"], per_item, rtol=0, atol=1e-12)
    assert result.aggregates["n_undefined"] == np.isnan(per_item).sum() > 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_entropy_equals_counter_version(n: int) -> None:
    result = NgramEntropy(n=n).compute(text_set(TEXTS))
    corpus, per_item = naive_ngram_entropy(TEXTS, n)
    assert result.aggregates["corpus"] == pytest.approx(corpus, abs=1e-9)
    np.testing.assert_allclose(result.per_item["ngram_entropy"], per_item, rtol=0, atol=1e-9)


def test_compression_ratio_equals_zlib() -> None:
    result = CompressionRatio().compute(text_set(TEXTS))
    corpus, per_item = naive_compression_ratio(TEXTS)
    assert result.aggregates["corpus"] == corpus
    np.testing.assert_array_equal(result.per_item["compression_ratio"], per_item)


@pytest.mark.parametrize("window", [1, 3, 10, 50])
def test_mattr_equals_window_loop(window: int) -> None:
    result = Mattr(window=window).compute(text_set(TEXTS))
    np.testing.assert_allclose(result.per_item["mattr"], naive_mattr(TEXTS, window), rtol=0, atol=1e-12)


def test_golden_values() -> None:
    ts = text_set(["a b a b", "a b a b c"])
    # bigrams of "a b a b": ab, ba, ab -> 2 distinct of 3; pooled with ab ba ab bc: 3 of 7
    distinct = Distinct(n=2).compute(ts)
    assert distinct.per_item["distinct"][0] == pytest.approx(2 / 3)
    assert distinct.aggregates["corpus"] == pytest.approx(3 / 7)
    # unigrams of "a b a b": p = (1/2, 1/2) -> 1 bit
    assert NgramEntropy(n=1).compute(ts).per_item["ngram_entropy"][0] == pytest.approx(1.0)
    # "a b a b c", window 3: windows aba (2), bab (2), abc (3) -> (2/3 + 2/3 + 3/3) / 3 = 7/9;
    # "a b a b" is shorter than window 5 -> plain TTR 2/4
    assert Mattr(window=3).compute(ts).per_item["mattr"][1] == pytest.approx(7 / 9)
    assert Mattr(window=5).compute(ts).per_item["mattr"][0] == pytest.approx(0.5)
    text = "to be or not to be " * 20
    ratio = CompressionRatio().compute(text_set([text])).per_item["compression_ratio"][0]
    raw = text.strip().encode()
    assert ratio == len(raw) / len(zlib.compress(raw, 9)) > 5


def test_empty_set_and_empty_texts() -> None:
    for metric in (Distinct(n=2), NgramEntropy(n=2), CompressionRatio(), Mattr()):
        result = metric.compute(text_set(["", "## "]))
        (values,) = result.per_item.values()
        assert np.isnan(values).all() and result.aggregates["n_undefined"] == 2
        assert math.isnan(result.aggregates.get("corpus", float("nan")))


def test_registered_names_build_the_metrics() -> None:
    import collapselab.metrics.catalog_lexical  # noqa: F401  (registers the family)

    assert build_metric("lexical_diversity", mode="aggregated", sample=5).name == (
        "lexical_diversity[mode=aggregated,max_order=3,sample=5,seed=0]")
    assert build_metric("distinct", n=3).name == "distinct[n=3]"
    assert build_metric("ngram_entropy").name == "ngram_entropy[n=2]"
    assert build_metric("mattr", window=20).name == "mattr[window=20]"
    assert build_metric("compression_ratio").higher_is_better is False
    assert build_metric("length").higher_is_better is None


def test_primary_statistics_and_item_aggregates() -> None:
    ts = text_set(TEXTS)
    individual = LexicalDiversity()
    result = individual.compute(ts)
    assert individual.primary == "mean" and LexicalDiversity(mode="aggregated").primary == "corpus"
    # what the evaluator's per-item bootstrap recomputes equals the full-set aggregates
    items = individual.aggregate_items(result.per_item["lexical_diversity"])
    assert items == {k: v for k, v in result.aggregates.items() if k != "n_sentences"}
    mattr = Mattr()
    mattr_result = mattr.compute(ts)
    assert mattr.aggregate_items(mattr_result.per_item["mattr"]) == mattr_result.aggregates
    for metric in (Distinct(), NgramEntropy(), CompressionRatio()):
        assert metric.primary == "corpus" and "corpus" in metric.compute(ts).aggregates

