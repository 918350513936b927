"""``toy/unigram``: a categorical (unigram) model over whitespace tokens, the ground truth of the
recursive collapse loop.

A toy model answers every prompt with exactly ``length`` tokens drawn i.i.d. from one categorical
distribution and ignores the prompt. Refitted by maximum likelihood on its own samples
(:func:`collapselab.train.toy.train_toy`: token counts), it is the Wright–Fisher resampling chain
whose expectations :mod:`collapselab.loop.closed_form` computes exactly, so a run of the real
pipeline with toy sources and targets can be checked against them.

Model ids:

* ``toy/unigram`` — the defaults below;
* ``toy/unigram:types=100,zipf=1.0,length=10`` — any of the three, comma-separated:
  ``types`` (int ≥ 1, default :data:`DEFAULT_TYPES`) tokens ``w0 … w{types-1}``, ``zipf``
  (float ≥ 0, default :data:`DEFAULT_ZIPF`) the exponent s of the Zipf law
  p_i ∝ (i + 1)^(−s) (0: uniform), ``length`` (int ≥ 1, default :data:`DEFAULT_LENGTH`) tokens
  per answer.

With ``spec.adapter`` (a folder the toy trainer wrote) the distribution is the fit stored in its
``toy_unigram.json`` — p_i = count_i / Σ count — and the length is the stored one; the id's
parameters are then ignored.

Sampling (``generate``): for each prompt a NumPy generator seeded from
``prompt_seed(decoding.seed, prompt.id)`` *and* a fingerprint of the model (a hash of the base
parameters, or of the stored fit including the seed it was trained with). The pipeline reuses a
decoding seed across chains (every generation ≥ 1 samples with ``decoding.seed + g`` whatever the
chain), so without the fingerprint two chains' models would draw the same random numbers and
their samples would be correlated; with it, different fitted models sample independently, and a
resumed run (same model, same seed, same prompt id) samples the same text. Temperature T:
q_i ∝ p_i^(1/T) (T = 0: greedy, every token the most probable one, ties to the first); then
``top_p``: the nucleus — tokens in order of decreasing q, kept while the mass before them is
below ``top_p`` (so the token that crosses it is kept), renormalised (the order of Hugging Face's
temperature and top-p warpers). ``num_beams`` > 1 is not supported (ModelError). An answer is cut
to ``max_new_tokens`` (``finish_reason`` "length"), else it ends after ``length`` tokens ("stop").

``continuation_logprobs``: log p(token) under the untempered distribution for each whitespace
token of the continuation; a token the model gives no mass (unseen in its fit, or not a
``w<i>`` of its base vocabulary) gets the floor :data:`LOGPROB_FLOOR` = log 1e-9 instead of −inf,
so a perplexity stays finite. ``choice_logprobs`` raises ModelError: a toy model cannot judge.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress, prompt_seed

#: the toy models' family name (``toy/unigram``)
FAMILY = "unigram"
DEFAULT_TYPES = 100
DEFAULT_ZIPF = 1.0
DEFAULT_LENGTH = 10
#: the file a toy adapter folder holds (written by :func:`collapselab.train.toy.train_toy`)
ADAPTER_FILE = "toy_unigram.json"
ADAPTER_FORMAT = "collapselab-toy-unigram"
#: log-probability of a token the model gives no mass (documented in the module docstring)
LOGPROB_FLOOR = math.log(1e-9)


@dataclass(frozen=True)
class ToyParams:
    """The parameters of a ``toy/unigram:...`` id."""

    types: int = DEFAULT_TYPES
    zipf: float = DEFAULT_ZIPF
    length: int = DEFAULT_LENGTH


def parse_toy_name(name: str) -> ToyParams:
    """The parameters of a toy model name (``unigram`` or ``unigram:types=..,zipf=..,length=..``);
    a ModelError names the bad part."""
    family, _, args = name.partition(":")
    if family != FAMILY:
        raise ModelError(f"unknown toy model {name!r}: use 'toy/unigram' or 'toy/unigram:types=100,zipf=1.0,length=10'")
    values: dict[str, Any] = {}
    for part in filter(None, (a.strip() for a in args.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in ("types", "zipf", "length"):
            raise ModelError(f"toy model {name!r}: {part!r} is not one of types=INT, zipf=FLOAT, length=INT")
        if key in values:
            raise ModelError(f"toy model {name!r}: {key} is given twice")
        try:
            value: float = float(raw) if key == "zipf" else int(raw)
        except ValueError:
            kind = "a number" if key == "zipf" else "an integer"
            raise ModelError(f"toy model {name!r}: {key} must be {kind}, not {raw.strip()!r}") from None
        if key == "zipf" and not (math.isfinite(value) and value >= 0):
            raise ModelError(f"toy model {name!r}: zipf must be a finite number ≥ 0, not {raw.strip()!r}")
        if key != "zipf" and value < 1:
            raise ModelError(f"toy model {name!r}: {key} must be at least 1, not {value}")
        values[key] = value
    return ToyParams(**values)


def check_toy_spec(spec: ModelSpec) -> None:
    """Raise ModelError when ``spec`` cannot name a toy model (its name; an adapter that is set
    must hold a readable fit)."""
    parse_toy_name(spec.name)
    if spec.adapter is not None:
        read_toy_adapter(Path(spec.adapter))


def zipf_probabilities(types: int, zipf: float) -> np.ndarray:
    """The base distribution: p_i = (i + 1)^(−s) / Σ_j (j + 1)^(−s), i = 0 … types − 1."""
    weights = np.arange(1, types + 1, dtype=float) ** (-zipf)
    return weights / weights.sum()


def read_toy_adapter(folder: Path) -> dict[str, Any]:
    """The fit stored in ``folder/toy_unigram.json`` (``tokens``, ``counts``, ``length``, ...),
    checked; a ModelError names the file and the problem."""
    path = Path(folder) / ADAPTER_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"toy adapter {folder}: no {ADAPTER_FILE} (written by the toy trainer)") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"toy adapter {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != ADAPTER_FORMAT:
        raise ModelError(f"toy adapter {path}: 'format' must be {ADAPTER_FORMAT!r}")
    tokens, counts, length = data.get("tokens"), data.get("counts"), data.get("length")
    if not isinstance(tokens, list) or not isinstance(counts, list) or len(tokens) != len(counts) or not tokens:
        raise ModelError(f"toy adapter {path}: 'tokens' and 'counts' must be non-empty lists of the same length")
    if len(set(tokens)) != len(tokens) or not all(isinstance(t, str) and t.split() == [t] for t in tokens):
        raise ModelError(f"toy adapter {path}: 'tokens' must be distinct whitespace-free strings")
    if not all(isinstance(c, int) and c > 0 for c in counts):
        raise ModelError(f"toy adapter {path}: 'counts' must be positive integers")
    if not isinstance(length, int) or length < 1:
        raise ModelError(f"toy adapter {path}: 'length' must be an integer ≥ 1, not {length!r}")
    return data


class ToyModel:
    """A categorical :class:`~collapselab.models.base.LanguageModel` (see the module docstring)."""

    def __init__(self, spec: ModelSpec) -> None:
        params = parse_toy_name(spec.name)
        self.spec = spec
        if spec.adapter is not None:
            fit = read_toy_adapter(Path(spec.adapter))
            self.tokens: list[str] = list(fit["tokens"])
            counts = np.asarray(fit["counts"], dtype=float)
            self.probs: np.ndarray = counts / counts.sum()
            self.length: int = fit["length"]
            identity: dict[str, Any] = {"tokens": fit["tokens"], "counts": fit["counts"], "length": fit["length"],
                                        "seed": fit.get("seed")}
        else:
            self.tokens = [f"w{i}" for i in range(params.types)]
            self.probs = zipf_probabilities(params.types, params.zipf)
            self.length = params.length
            identity = {"types": params.types, "zipf": params.zipf, "length": params.length}
        self.index = {t: i for i, t in enumerate(self.tokens)}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).digest()
        #: mixed into every prompt's seed: different models sample independently under one seed
        self.fingerprint = int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    @property
    def is_chat(self) -> bool:
        return self.spec.chat == "always"

    @property
    def max_context(self) -> int:
        return self.spec.max_context or 4096

    def sampling_probabilities(self, decoding: DecodingSpec) -> np.ndarray:
        """The distribution answers are drawn from under ``decoding`` (temperature, then top-p)."""
        p = self.probs
        if decoding.temperature == 0:
            q = np.zeros_like(p)
            q[int(np.argmax(p))] = 1.0
            return q
        with np.errstate(divide="ignore"):
            logits = np.log(p) / decoding.temperature
        q = np.exp(logits - logits.max())
        q /= q.sum()
        if decoding.top_p < 1.0:
            order = np.argsort(-q, kind="stable")  # ties: the lower index first
            before = np.cumsum(q[order]) - q[order]
            dropped = order[before >= decoding.top_p]
            q = q.copy()
            q[dropped] = 0.0
            q /= q.sum()
        return q

    def generate(self, prompts: Sequence[ChatPrompt], decoding: DecodingSpec, *,
                 progress: Progress | None = None) -> list[Generation]:
        if decoding.num_beams > 1:
            raise ModelError(f"{self.spec.id}: toy models do not support beam search (num_beams {decoding.num_beams})")
        q = self.sampling_probabilities(decoding)
        out = []
        for p in prompts:
            rng = np.random.default_rng([prompt_seed(decoding.seed, p.id), self.fingerprint])
            # all ``length`` tokens are drawn before the cut, so max_new_tokens truncates the same text
            drawn = rng.choice(len(q), size=self.length, p=q)
            words = [self.tokens[i] for i in drawn[: decoding.max_new_tokens]]
            reason = "length" if self.length > decoding.max_new_tokens else "stop"
            out.append(Generation(" ".join(words), len(p.user.split()), len(words), reason))
        if progress:
            progress(len(prompts))
        return out

    def logprob(self, token: str) -> float:
        """log p(token), or :data:`LOGPROB_FLOOR` for a token without mass."""
        i = self.index.get(token)
        return math.log(self.probs[i]) if i is not None and self.probs[i] > 0 else LOGPROB_FLOOR

    def continuation_logprobs(self, prompts: Sequence[ChatPrompt], continuations: Sequence[str], *,
                              progress: Progress | None = None) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise ModelError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        out = [[self.logprob(w) for w in c.split()] for c in continuations]
        if progress:
            progress(len(prompts))
        return out

    def choice_logprobs(self, prompts: Sequence[ChatPrompt], choices: Sequence[str], *,
                        progress: Progress | None = None) -> list[dict[str, float]]:
        raise ModelError(f"toy models cannot judge: {self.spec.id} has no next-token read-out for choices")

    def close(self) -> None:
        pass
