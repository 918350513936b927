"""Heaps' law, vocabulary size and rare-tail coverage against curve_fit and plain loops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
from collapselab.errors import ConfigError
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.naive_embedding import (
    heaps_points_naive,
    rare_tail_coverage_naive,
    vocabulary_size_naive,
)
from collapselab.metrics.text import word_tokenize
from collapselab.metrics.vocabulary import (
    Heaps,
    RareTailCoverage,
    VocabularySize,
    fit_heaps,
    heaps_curve,
    lowercase_tokens,
)


def zipf_tokens(n: int, seed: int, vocab: int = 5000, exponent: float = 1.1) -> list[str]:
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
    return [f"w{k}" for k in rng.choice(vocab, size=n, p=weights / weights.sum())]


def zipf_texts(n_texts: int, seed: int, vocab: int = 3000) -> list[str]:
    """Sentences of Zipf-distributed words, with capitals and punctuation to lower-case/split."""
    rng = np.random.default_rng(seed)
    words = zipf_tokens(n_texts * 40, seed, vocab)
    texts = []
    for i in range(n_texts):
        chunk = words[i * 40:(i + 1) * 40][: rng.integers(5, 40)]
        texts.append(" ".join(chunk).capitalize().replace(" w1 ", " W1, ") + ".")
    return texts


def text_set(texts: list[str], human: TextSet | None = None) -> TextSet:
    ids = [str(i) for i in range(len(texts))]
    return TextSet(name="t", kind="condition", ids=ids, texts=texts, human=human)


def reference_fit(n: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Plain curve_fit from its default start (1, 1), converged tightly."""
    popt, _ = curve_fit(lambda x, k, b: k * x ** b, n.astype(float), v.astype(float), maxfev=10_000,
                        ftol=1e-14, xtol=1e-14, gtol=1e-14)
    return popt


# ---------------------------------------------------------------------------------------- Heaps


@pytest.mark.parametrize("seed", [0, 1])
def test_heaps_curve_and_fit_match_the_naive_curve_and_curve_fit(seed):
    tokens = zipf_tokens(20_000 + 7_000 * seed + 345, seed)
    n, v = heaps_curve(tokens, step=500)
    ns, vs = heaps_points_naive(tokens, step=500)
    assert n.tolist() == ns and v.tolist() == vs
    k, beta = fit_heaps(n, v)
    np.testing.assert_allclose([k, beta], reference_fit(n, v), rtol=1e-6)
    assert 0.3 < beta < 1


def test_heaps_metric_on_texts():
    texts = zipf_texts(120, seed=2)
    result = Heaps(step=100).compute(text_set(texts))
    tokens = [tok for t in texts for tok in word_tokenize(t.lower())]
    assert result.aggregates["n_tokens"] == len(tokens)
    ns, vs = heaps_points_naive(tokens, step=100)
    assert result.details["N"] == ns and result.details["V"] == vs
    k, beta = reference_fit(np.array(ns), np.array(vs))
    assert result.aggregates["beta"] == pytest.approx(beta, rel=1e-6)
    assert result.aggregates["K"] == pytest.approx(k, rel=1e-6)
    assert build_metric("heaps").name == "heaps[step=1000]"


def test_heaps_needs_three_points():
    result = Heaps().compute(text_set(["Just a few words here."]))
    assert np.isnan(result.aggregates["beta"]) and np.isnan(result.aggregates["K"])
    assert "at least 3 curve points" in result.details["reason"]
    with pytest.raises(ConfigError):
        Heaps(step=0)


# ----------------------------------------------------------------------------- vocabulary size


def test_vocabulary_size_matches_plain_loops():
    texts = zipf_texts(80, seed=3) + [""]
    result = VocabularySize(budget=500).compute(text_set(texts))
    per_text = [word_tokenize(t.lower()) for t in texts]
    types, ttr = vocabulary_size_naive(per_text, 500)
    assert result.aggregates["types"] == types
    assert result.aggregates["ttr_budget"] == pytest.approx(ttr)
    assert result.aggregates["budget_tokens"] == 500
    assert result.per_item["types"].tolist() == [len(set(t)) for t in per_text]
    assert "The" not in {tok for t in lowercase_tokens(texts) for tok in t}  # lower-cased
    short = VocabularySize(budget=10_000).compute(text_set(texts[:3]))
    assert short.aggregates["budget_tokens"] == sum(len(t) for t in per_text[:3])


# ------------------------------------------------------------------------------ rare-tail coverage


def test_rare_tail_coverage_matches_plain_loops():
    human = text_set(zipf_texts(100, seed=4))
    cond = text_set(zipf_texts(100, seed=5), human=human)
    result = RareTailCoverage(max_count=2).compute(cond)
    per_text = [word_tokenize(t.lower()) for t in cond.texts]
    per_human = [word_tokenize(t.lower()) for t in human.texts]
    expected = rare_tail_coverage_naive(per_text, per_human, 2)
    assert result.aggregates["value"] == pytest.approx(expected)
    assert 0 < expected < 1
    counts: dict[str, int] = {}
    for toks in per_human:
        for tok in toks:
            counts[tok] = counts.get(tok, 0) + 1
    tail = {w for w, c in counts.items() if c <= 2}
    assert result.aggregates["tail_types"] == len(tail)
    expected_share = [sum(t in tail for t in toks) / len(toks) for toks in per_text]
    np.testing.assert_allclose(result.per_item["tail_share"], expected_share)


def test_rare_tail_coverage_of_the_human_set_is_one_and_needs_human():
    human = text_set(zipf_texts(30, seed=6))
    assert RareTailCoverage().compute(text_set(human.texts, human=human)).aggregates["value"] == 1.0
    with pytest.raises(ValueError, match="human"):
        RareTailCoverage().compute(human)
