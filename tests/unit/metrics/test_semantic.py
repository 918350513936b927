"""Semantic diversity and Vendi against explicit pairwise computations and ``vendi_score``."""

from __future__ import annotations

import numpy as np
import pytest

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
from collapselab.errors import ConfigError
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.embeddings import unit_rows
from collapselab.metrics.naive_embedding import (
    per_item_distance_matrix,
    semantic_diversity_loop,
    semantic_diversity_matrix,
    vendi_primal,
)
from collapselab.metrics.semantic import SemanticDiversity, Vendi, vendi_from_unit_rows

DIM = 384


def clustered(n: int, seed: int, dim: int = DIM, spread: float = 1.0) -> np.ndarray:
    """Unit rows around a few shared directions, so cosines are far from 0 (random Gaussian
    rows in 384-d are nearly orthogonal and would make every distance ≈ 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    x = centres[rng.integers(0, 4, n)] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sentence_set(n_texts: int = 40, seed: int = 0) -> TextSet:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n_texts)  # some texts have no sentence at all
    owner = np.repeat(np.arange(n_texts), counts)
    return TextSet(
        name="s", kind="condition", ids=[f"t{i}" for i in range(n_texts)], texts=["x"] * n_texts,
        embeddings=clustered(n_texts, seed + 1), sentence_embeddings=clustered(len(owner), seed + 2),
        sentence_owner=owner,
    )


def test_sentence_level_matches_the_explicit_pairwise_matrix():
    ts = sentence_set()
    result = SemanticDiversity().compute(ts)
    expected = semantic_diversity_matrix(ts.sentence_embeddings)
    assert 0.3 < expected < 0.9  # the fixture is not degenerate
    assert result.aggregates["mean"] == pytest.approx(expected, abs=1e-6)
    assert result.aggregates["n_units"] == len(ts.sentence_owner)


def test_sentence_per_item_values_decompose_the_aggregate():
    ts = sentence_set(seed=3)
    result = SemanticDiversity(level="sentence").compute(ts)
    per_item = result.per_item["distance"]
    expected = per_item_distance_matrix(ts.sentence_embeddings, ts.sentence_owner, len(ts))
    np.testing.assert_allclose(per_item, expected, atol=1e-6)
    counts = np.bincount(ts.sentence_owner, minlength=len(ts))
    assert np.isnan(per_item[counts == 0]).all()
    # the aggregate is the per-item mean weighted by sentences per text
    weighted = np.nansum(per_item * counts) / counts.sum()
    assert weighted == pytest.approx(result.aggregates["mean"], abs=1e-9)


def test_response_level_matches_the_matrix_and_is_the_plain_per_item_mean():
    ts = sentence_set(seed=5)
    result = SemanticDiversity(level="response").compute(ts)
    assert result.aggregates["mean"] == pytest.approx(semantic_diversity_matrix(ts.embeddings), abs=1e-6)
    assert result.per_item["distance"].mean() == pytest.approx(result.aggregates["mean"], abs=1e-9)


def test_pair_loop_and_matrix_agree():
    e = clustered(25, seed=7, dim=16)
    assert semantic_diversity_loop(e) == pytest.approx(semantic_diversity_matrix(e), abs=1e-9)


def test_registered_name_and_needs():
    metric = build_metric("semantic_diversity", level="response")
    assert metric.name == "semantic_diversity[level=response]"
    assert metric.needs == {"embeddings"}
    assert build_metric("semantic_diversity").needs == {"sentence_embeddings"}
    with pytest.raises(ConfigError):
        SemanticDiversity(level="paragraph")  # type: ignore[arg-type]


def test_undefined_and_missing_inputs():
    one = TextSet(name="one", kind="condition", ids=["a"], texts=["x"], sentence_embeddings=clustered(1, 0),
                  sentence_owner=np.array([0]))
    result = SemanticDiversity().compute(one)
    assert np.isnan(result.aggregates["mean"]) and "at least 2" in result.details["reason"]
    bare = TextSet(name="bare", kind="condition", ids=["a"], texts=["x"])
    with pytest.raises(ValueError, match="sentence_embeddings"):
        SemanticDiversity().compute(bare)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # vendi_score uses scipy.sparse.csr
@pytest.mark.parametrize("n", [300, 50])  # n > d (dual) and n < d (primal)
def test_vendi_matches_vendi_score(n):
    from vendi_score import vendi

    x = clustered(n, seed=n, dim=64)
    ts = TextSet(name="v", kind="condition", ids=[str(i) for i in range(n)], texts=["x"] * n, embeddings=x)
    value = Vendi().compute(ts).aggregates["value"]
    assert value == pytest.approx(vendi.score_dual(x.astype(np.float64)), rel=1e-6)
    assert value == pytest.approx(vendi.score_K(x.astype(np.float64) @ x.T.astype(np.float64)), rel=1e-6)
    assert value == pytest.approx(vendi_primal(x), rel=1e-9)


def test_vendi_extremes():
    same = unit_rows(np.tile(clustered(1, 0, dim=8), (10, 1)))
    assert vendi_from_unit_rows(same) == pytest.approx(1.0, abs=1e-9)
    assert vendi_from_unit_rows(np.eye(8)) == pytest.approx(8.0, rel=1e-9)  # 8 orthogonal items
