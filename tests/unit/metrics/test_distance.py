"""MAUVE, Jensen–Shannon and Fréchet against direct library computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import jensenshannon

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.distance import (
    Frechet,
    JSDivergence,
    Mauve,
    frechet_distance,
    gaussian_fit,
    js_divergence_counts,
    ngram_counts,
)
from collapselab.metrics.embeddings import unit_rows
from collapselab.metrics.naive_embedding import frechet_naive, js_divergence_naive, ngram_counter
from collapselab.metrics.text import simple_tokens


def gaussian_rows(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) + shift
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def text_set(name: str, texts: list[str] | None = None, emb: np.ndarray | None = None,
             human: TextSet | None = None) -> TextSet:
    n = len(texts) if texts is not None else len(emb)
    return TextSet(name=name, kind="human" if human is None else "condition", ids=[str(i) for i in range(n)],
                   texts=texts if texts is not None else ["x"] * n, embeddings=emb, human=human)


def random_docs(seed: int, n_docs: int = 60, vocab: int = 80) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab + 1)
    weights /= weights.sum()
    return [[f"w{k}" for k in rng.choice(vocab, size=rng.integers(0, 30), p=weights)] for _ in range(n_docs)]


# ---------------------------------------------------------------------------------------- MAUVE


def test_mauve_equals_compute_mauve_with_the_same_features_and_seed():
    import mauve

    human = text_set("human", emb=gaussian_rows(120, 16, seed=1))
    cond = text_set("cond", emb=gaussian_rows(100, 16, seed=2, shift=0.15), human=human)
    result = Mauve(seed=7).compute(cond)
    direct = mauve.compute_mauve(p_features=cond.embeddings, q_features=human.embeddings, seed=7)
    assert result.aggregates["value"] == direct.mauve
    assert result.aggregates["mauve_star"] == direct.mauve_star
    assert result.aggregates["num_buckets"] == 10  # "auto": the smaller n / 10
    assert 0 < result.aggregates["value"] < 1
    same = Mauve(seed=7).compute(text_set("same", emb=human.embeddings, human=human))
    assert same.aggregates["value"] == pytest.approx(1.0)


def test_mauve_too_few_texts_is_undefined():
    human = text_set("human", emb=gaussian_rows(3, 8, seed=1))
    result = Mauve(num_buckets=10).compute(text_set("c", emb=gaussian_rows(3, 8, seed=2), human=human))
    assert np.isnan(result.aggregates["value"]) and "buckets" in result.details["reason"]
    assert build_metric("mauve").name == "mauve[buckets=auto,scaling=5]"
    quick = Mauve(kmeans_num_redo=1, kmeans_max_iter=100)
    assert quick.name == "mauve[buckets=auto,scaling=5,redo=1,iter=100]"


# ---------------------------------------------------------------------------------- JS divergence


@pytest.mark.parametrize("n", [1, 2, 3])
def test_js_counts_match_scipy_and_the_counter_version(n):
    a, b = random_docs(1), random_docs(2, vocab=120)
    p, q = ngram_counts(a, b, n)
    ca, cb = ngram_counter(a, n), ngram_counter(b, n)
    assert p.sum() == sum(ca.values()) and q.sum() == sum(cb.values())
    assert sorted(p[p > 0]) == sorted(ca.values())  # the same multiset of n-gram counts
    expected = jensenshannon(p, q, base=2) ** 2
    assert js_divergence_counts(p, q) == pytest.approx(expected, abs=1e-12)
    assert js_divergence_counts(p, q) == pytest.approx(js_divergence_naive(a, b, n), abs=1e-12)


def test_ngrams_do_not_cross_text_boundaries():
    p, q = ngram_counts([["a", "b"], ["c", "d"]], [["b", "c"]], 2)
    assert p.sum() == 2 and q.sum() == 1
    assert js_divergence_counts(p, q) == pytest.approx(1.0)  # ("b", "c") only spans a boundary in a


def test_js_metric_on_texts():
    human = text_set("human", texts=["The cat sat on the mat.", "A dog barked at the postman!"])
    cond = text_set("cond", texts=["The cat sat.", "The dog, the cat and the mat."], human=human)
    for n in (1, 2):
        value = JSDivergence(n=n).compute(cond).aggregates["value"]
        expected = js_divergence_naive([simple_tokens(t) for t in cond.texts],
                                       [simple_tokens(t) for t in human.texts], n)
        assert value == pytest.approx(expected, abs=1e-12)
        assert 0 < value < 1
    assert JSDivergence(n=2).compute(text_set("h", texts=human.texts, human=human)).aggregates["value"] == 0
    empty = JSDivergence(n=3).compute(text_set("e", texts=["hi", ""], human=human))
    assert np.isnan(empty.aggregates["value"])


# ------------------------------------------------------------------------------------- Fréchet


def test_frechet_matches_a_direct_scipy_computation():
    x = gaussian_rows(400, 24, seed=3)
    y = gaussian_rows(300, 24, seed=4, shift=0.2)
    human = text_set("human", emb=y)
    value = Frechet().compute(text_set("c", emb=x, human=human)).aggregates["value"]
    xu, yu = unit_rows(x), unit_rows(y)
    mu1, mu2 = xu.mean(0), yu.mean(0)
    s1, s2 = np.cov(xu.T), np.cov(yu.T)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert value == pytest.approx(direct, rel=1e-9)
    assert value == pytest.approx(frechet_naive(xu, yu), rel=1e-9)
    assert value > 0.01


def test_frechet_is_zero_for_identical_sets_and_handles_singular_covariances():
    x = gaussian_rows(200, 16, seed=5)
    human = text_set("human", emb=x)
    identical = Frechet().compute(text_set("c", emb=x, human=human)).aggregates["value"]
    assert identical == pytest.approx(0, abs=1e-8)
    few = gaussian_rows(5, 16, seed=6)  # 5 points in 16-d: rank-deficient covariance
    value = frechet_distance(*gaussian_fit(unit_rows(few)), *gaussian_fit(unit_rows(x)))
    assert np.isfinite(value) and value > 0


def test_distance_metrics_need_the_human_set():
    lonely = text_set("c", texts=["a b"], emb=gaussian_rows(1, 4, 0))
    for metric in (Frechet(), JSDivergence(), Mauve()):
        with pytest.raises(ValueError, match="human"):
            metric.compute(lonely)
