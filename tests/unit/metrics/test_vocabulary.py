"""Heaps' law, vocabulary size and rare-tail coverage against curve_fit and plain loops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
from collapselab.errors import ConfigError
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.budget import budget_prefix, seeded_order
from collapselab.metrics.naive_embedding import (
    budget_prefix_naive,
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
    assert build_metric("heaps").name == "heaps[step=1000,token_budget=100000]"
    assert build_metric("heaps", token_budget=None).name == "heaps[step=1000]"
    assert build_metric("heaps").primary == "beta_budget"
    assert build_metric("heaps", token_budget=None).primary == "beta"


def test_heaps_needs_three_points():
    result = Heaps().compute(text_set(["Just a few words here."]))
    assert np.isnan(result.aggregates["beta"]) and np.isnan(result.aggregates["K"])
    assert "at least 3 curve points" in result.details["reason"]
    with pytest.raises(ConfigError):
        Heaps(step=0)


# ----------------------------------------------------------------------------- vocabulary size


def test_vocabulary_size_matches_plain_loops():
    texts = zipf_texts(80, seed=3) + [""]
    ts = text_set(texts)
    result = VocabularySize(token_budget=500, checkpoints=[100, 5000]).compute(ts)
    per_text = [word_tokenize(t.lower()) for t in texts]
    types, v_budget = vocabulary_size_naive(per_text, ts.ids, 500)
    assert result.aggregates["types"] == types
    assert result.aggregates["types_budget"] == v_budget
    assert result.aggregates["ttr_budget"] == pytest.approx(v_budget / 500)
    assert result.aggregates["budget_tokens"] == 500
    assert result.aggregates["types_at_100"] == vocabulary_size_naive(per_text, ts.ids, 100)[1]
    assert result.per_item["types"].tolist() == [len(set(t)) for t in per_text]
    assert "The" not in {tok for t in lowercase_tokens(texts) for tok in t}  # lower-cased
    n_tokens = sum(map(len, per_text))
    assert n_tokens < 5000 and np.isnan(result.aggregates["types_at_5000"])
    # a set shorter than the budget: NaN with the reason, never a shorter range (the old ttr_budget
    # silently used the tokens there were)
    short = VocabularySize(token_budget=10_000).compute(text_set(texts[:3]))
    assert np.isnan(short.aggregates["types_budget"]) and np.isnan(short.aggregates["ttr_budget"])
    assert "token budget 10000 not reached" in short.details["budget_reason"]
    assert build_metric("vocabulary_size").primary == "types_budget"
    assert build_metric("vocabulary_size", token_budget=None).primary == "types"
    with pytest.raises(ConfigError, match="token_budget"):
        VocabularySize(token_budget=0)
    with pytest.raises(ConfigError, match="checkpoints"):
        VocabularySize(checkpoints=[10, -1])


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


def test_rare_tail_coverage_at_a_token_budget_matches_plain_loops():
    human = text_set(zipf_texts(100, seed=4))
    cond = text_set(zipf_texts(100, seed=5), human=human)
    result = RareTailCoverage(max_count=2, token_budget=800).compute(cond)
    per_text = [word_tokenize(t.lower()) for t in cond.texts]
    per_human = [word_tokenize(t.lower()) for t in human.texts]
    prefix = budget_prefix_naive(per_text, cond.ids, 800)
    expected = rare_tail_coverage_naive([prefix], per_human, 2)
    assert result.aggregates["value_budget"] == pytest.approx(expected)
    assert result.aggregates["value_budget"] < result.aggregates["value"]  # fewer tokens, fewer types
    assert RareTailCoverage().primary == "value_budget"
    short = RareTailCoverage(token_budget=10**6).compute(cond)
    assert np.isnan(short.aggregates["value_budget"]) and "not reached" in short.details["budget_reason"]


# ------------------------------------------------------------------------------------ token budget


def test_budget_prefix_is_a_seeded_id_keyed_order_and_matches_a_plain_loop():
    per_text = [[f"t{i}-{j}" for j in range(i % 7)] for i in range(40)]
    ids = [f"p{i}" for i in range(40)]
    for budget, seed in [(1, 0), (37, 0), (60, 3), (sum(map(len, per_text)), 1)]:
        fast = budget_prefix(per_text, ids, budget, seed)
        assert [tok for t in fast for tok in t] == budget_prefix_naive(per_text, ids, budget, seed)
    assert budget_prefix(per_text, ids, 10**6) is None and budget_prefix_naive(per_text, ids, 10**6) is None
    # a subset's order is the full set's order restricted to it (what a jackknife replicate needs)
    order = seeded_order(ids, 5)
    kept = [i for i in range(40) if i % 3]
    assert [kept[i] for i in seeded_order([ids[i] for i in kept], 5)] == [i for i in order if i % 3]
    assert seeded_order(ids, 0).tolist() != seeded_order(ids, 1).tolist()


def zipf_word_set(n_texts: int, seed: int, words: int = 40, vocab: int = 50_000) -> TextSet:
    """Texts of ``words`` i.i.d. Zipf(1.1) words each: every set is drawn from the same process."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -1.1
    toks = rng.choice(vocab, size=n_texts * words, p=weights / weights.sum())
    texts = [" ".join(f"w{k}" for k in toks[i * words:(i + 1) * words]) for i in range(n_texts)]
    return TextSet("s", "condition", [f"s{seed}-{i}" for i in range(n_texts)], texts)


def test_heaps_token_budget_removes_the_length_artefact():
    """Regression (audit c1): one Zipf process, a set 3× longer than another. The whole-set β of
    the longer set is clearly lower (the local exponent falls with N); fitted on a common token
    budget the two agree within sampling error, estimated from three disjoint equal-length
    samples of the same process."""
    short, long = zipf_word_set(750, 0), zipf_word_set(2250, 1)  # 30k and 90k tokens
    metric = Heaps(step=1000, token_budget=30_000)
    a, b = metric.compute(short).aggregates, metric.compute(long).aggregates
    assert (a["n_tokens"], b["n_tokens"]) == (30_000, 90_000)
    thirds = [TextSet("s", "condition", long.ids[k::3], long.texts[k::3]) for k in range(3)]
    sd = float(np.std([metric.compute(t).aggregates["beta_budget"] for t in thirds], ddof=1))
    sd_diff = np.sqrt(2) * max(sd, 1e-3)  # sd of a difference of two independent fits
    assert a["beta"] - b["beta"] > 0.03 and a["beta"] - b["beta"] > 4 * sd_diff  # old: a length effect
    assert abs(a["beta_budget"] - b["beta_budget"]) < 3 * sd_diff  # budget: the same process agrees


def test_heaps_budget_fit_matches_curve_fit_on_the_naive_prefix():
    texts = zipf_texts(150, seed=7)
    ts = text_set(texts)
    result = Heaps(step=200, token_budget=1000, seed=2).compute(ts)
    per_text = [word_tokenize(t.lower()) for t in texts]
    prefix = budget_prefix_naive(per_text, ts.ids, 1000, seed=2)
    ns, vs = heaps_points_naive(prefix, step=200)
    k, beta = reference_fit(np.array(ns), np.array(vs))
    assert result.aggregates["beta_budget"] == pytest.approx(beta, rel=1e-6)
    assert result.aggregates["K_budget"] == pytest.approx(k, rel=1e-6)
    short = Heaps(step=200, token_budget=10**6).compute(ts)
    assert np.isnan(short.aggregates["beta_budget"]) and "not reached" in short.details["budget_reason"]
    assert np.isfinite(short.aggregates["beta"])  # the whole-set fit stays
    with pytest.raises(ConfigError, match="3 curve points"):
        Heaps(step=1000, token_budget=2000)


def test_vocabulary_tokens_are_markdown_stripped():
    """Regression (audit b5): "#", "**", "*" and "|" are not vocabulary; the same stripping as the
    lexical family's (text.plain_text)."""
    plain = ["The cat sat on the mat. It was warm.", "Dogs bark at night."]
    marked = ["# The cat\n\n**sat** on the *mat*. It was warm.", "- Dogs | bark | at night."]
    for a, b in zip(lowercase_tokens(plain), lowercase_tokens(marked), strict=True):
        assert not {"#", "*", "**", "|", "-"} & set(b)
        assert set(b) <= set(a) | {"."}
    plain_set, marked_set = text_set(plain), text_set(marked)
    assert (VocabularySize(token_budget=None).compute(marked_set).aggregates["types"]
            == VocabularySize(token_budget=None).compute(plain_set).aggregates["types"])
    assert lowercase_tokens(marked, "simple")[0][:3] == ("the", "cat", "sat")
