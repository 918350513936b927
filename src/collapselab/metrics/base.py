"""The contract every metric family follows, and the registry ``collapselab ls metrics`` lists.

A metric is built by a registered factory whose keyword arguments are its settings; it reads a
:class:`TextSet` (texts plus the expensive shared inputs — sentences, embeddings, token
log-probabilities — computed once per text set and reused by every metric) and returns a
:class:`MetricResult`: per-item values (one per text, for the statistics) and corpus-level
aggregates. Its reported name carries its parameters, e.g. ``self_bleu[order=3,mode=individual]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from collapselab.registry import Registry

Need = Literal["sentences", "embeddings", "sentence_embeddings", "logprobs", "human_logprobs", "human",
               "samples", "sample_embeddings", "training_texts"]


@dataclass
class TextSet:
    """The texts of one group — a condition's responses, a source's synthetic training answers or
    the human references — with the shared inputs the metrics need.

    ``sentences[i]`` are the sentences of ``texts[i]`` (markdown stripped, split);
    ``sentence_embeddings`` stacks the embeddings of all sentences in that order, and
    ``sentence_owner[j]`` is the index of the text sentence ``j`` belongs to. ``embeddings[i]`` is
    the embedding of the whole text ``i``. ``logprobs[i]`` are the per-token log-probabilities of
    text ``i`` under the scoring model (the vanilla target, for output perplexity);
    ``human_logprobs[k]`` those of the k-th human reference under this set's own model (for
    human-text perplexity). ``human`` is the human reference set for
    the distance-to-human metrics.
    """

    name: str
    kind: str  # "condition", "source" or "human"
    ids: list[str]
    texts: list[str]
    sentences: list[list[str]] | None = None
    embeddings: np.ndarray | None = None
    sentence_embeddings: np.ndarray | None = None
    sentence_owner: np.ndarray | None = None
    logprobs: list[np.ndarray] | None = None
    human_logprobs: list[np.ndarray] | None = None
    human: TextSet | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: a set of k answers per prompt (``collapse.samples``): item i is a prompt, ``samples[i]`` its
    #: k answers and ``sample_embeddings[i]`` their embeddings (k × d); ``texts[i]`` is the first
    samples: list[list[str]] | None = None
    sample_embeddings: list[np.ndarray] | None = None
    #: the texts the set's model was fine-tuned on (its mix's answers), for the memorization
    #: metrics; None where there are none (vanilla, sources, human references)
    training_texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class MetricResult:
    """Per-item values (arrays aligned with ``TextSet.ids``; NaN where undefined, and counted in
    ``aggregates['n_undefined']`` by the caller) and corpus aggregates. ``details`` holds
    anything a plot needs (e.g. a Heaps curve)."""

    per_item: dict[str, np.ndarray] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Metric(Protocol):
    """A configured metric."""

    name: str  # reported name, parameters included
    family: str
    higher_is_better: bool | None  # None: no better direction (e.g. length)
    needs: frozenset[str]

    def compute(self, texts: TextSet) -> MetricResult: ...

    # Optional: ``pinned(result, texts) -> Metric`` — the metric as it must be recomputed on subsets
    # of ``texts`` for an interval, with every random draw made inside ``compute`` fixed to the one
    # the full-set ``result`` made (see metrics/evaluate.py). Metrics that draw nothing omit it.
    # Optional: ``bootstrap_replicates(texts, result, n, rng) -> list[dict[str, float]]`` — the
    # aggregates of ``n`` bootstrap replicates made by the metric itself, for a metric that a
    # jackknife cannot recompute faithfully (MAUVE: k-means would be re-run in every replicate).
    # Optional: ``aggregate_items(values) -> dict[str, float]`` — aggregates as a function of the
    # per-item values (the interval then resamples those).


@dataclass
class MetricInfo:
    family: str
    higher_is_better: bool | None
    description: str


#: Metric factories: ``name -> factory(**settings) -> Metric``. Registered lazily by family module.
METRICS: Registry[Callable[..., Metric]] = Registry("metric")


#: A statistic's possible values: (lowest, highest), None where unbounded.
Range = tuple[float | None, float | None]
UNBOUNDED: Range = (None, None)
_RANGES: dict[str, tuple[Range, dict[str, Range]]] = {}


def register_metric(name: str, *, family: str, higher_is_better: bool | None, description: str,
                    module: str, factory: str, version: int = 1, range: Range = UNBOUNDED,
                    ranges: Mapping[str, Range] | None = None) -> None:
    """Register a factory ``module:factory`` lazily (listing metrics imports no family module).

    ``version``: bump it when the metric's code changes what it reports (values or intervals):
    the evaluate stages of every set that uses it are then recomputed, and only those.
    ``range``: the values the metric's statistics can take, e.g. ``(0, 1)`` for a share; ``ranges``
    overrides it per statistic. Counts (``n``, ``n_*``) and standard deviations (``sd*``) are
    non-negative without saying so. Intervals are built so that they stay inside the range
    (:mod:`collapselab.metrics.evaluate`)."""
    direction = {True: "higher", False: "lower", None: "-"}[higher_is_better]
    METRICS.add(name, f"{module}:{factory}", description=description, family=family, direction=direction,
                version=str(version))
    _RANGES[name] = (range, dict(ranges or {}))


def declared_range(name: str) -> Range | None:
    """The range a metric was registered with, None when it declared none (a test requires one)."""
    entry = _RANGES.get(name)
    return None if entry is None or entry[0] == UNBOUNDED and not entry[1] else entry[0]


def statistic_range(name: str, statistic: str) -> Range:
    """The possible values of one statistic of metric ``name`` (its registered name)."""
    default, specific = _RANGES.get(name, (UNBOUNDED, {}))
    if statistic in specific:
        return specific[statistic]
    if statistic == "n" or statistic.startswith("n_") or statistic == "num_buckets":
        return (0.0, None)
    if statistic == "sd" or statistic.startswith("sd_") or statistic.endswith("_sd"):
        return (0.0, None)
    return default


def human_pairing(texts: TextSet) -> np.ndarray | None:
    """For each text of the set, the index in ``texts.human`` of the reference with the same id (the
    human answer to the same prompt), when the set's ids are distinct and every one of them is a
    reference's id — a condition's responses to the test prompts. None otherwise (no references,
    repeated ids, or texts answering other prompts such as synthetic training answers): the two
    samples are then independent. Intervals resample a paired text together with its reference."""
    human = texts.human
    if human is None or len(set(texts.ids)) != len(texts.ids) or len(set(human.ids)) != len(human.ids):
        return None
    position = {id_: i for i, id_ in enumerate(human.ids)}
    if not all(id_ in position for id_ in texts.ids):
        return None
    return np.fromiter((position[id_] for id_ in texts.ids), dtype=np.int64, count=len(texts.ids))


def metric_version(name: str) -> int:
    """The registered code version of metric ``name`` (1 for an unknown name: validate reports it)."""
    return int(METRICS.info(name).get("version", "1")) if name in METRICS else 1


def build_metric(name: str, **settings: Any) -> Metric:
    return METRICS.get(name)(**settings)


def param_name(base: str, **params: Any) -> str:
    """``param_name("distinct", n=2)`` → ``distinct[n=2]``."""
    if not params:
        return base
    return base + "[" + ",".join(f"{k}={v}" for k, v in params.items()) + "]"


def subset(texts: TextSet, indices: np.ndarray) -> TextSet:
    """The text set restricted to (possibly repeated) ``indices`` — what a bootstrap resample
    recomputes a corpus-level metric on. Sentences and their embeddings follow their texts; the
    human reference set is kept whole (it is the fixed target of comparison)."""
    indices = np.asarray(indices, dtype=np.int64)
    sent_emb = owner = None
    if texts.sentence_embeddings is not None and texts.sentence_owner is not None:
        rows = [np.flatnonzero(texts.sentence_owner == i) for i in indices]
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        sent_emb = texts.sentence_embeddings[flat]
        owner = np.concatenate([np.full(len(r), k) for k, r in enumerate(rows)]) if rows else flat
    return TextSet(
        name=texts.name,
        kind=texts.kind,
        ids=[texts.ids[i] for i in indices],
        texts=[texts.texts[i] for i in indices],
        sentences=[texts.sentences[i] for i in indices] if texts.sentences is not None else None,
        embeddings=texts.embeddings[indices] if texts.embeddings is not None else None,
        sentence_embeddings=sent_emb,
        sentence_owner=owner,
        logprobs=[texts.logprobs[i] for i in indices] if texts.logprobs is not None else None,
        human_logprobs=texts.human_logprobs,
        human=texts.human,
        meta=texts.meta,
        samples=[texts.samples[i] for i in indices] if texts.samples is not None else None,
        sample_embeddings=([texts.sample_embeddings[i] for i in indices]
                           if texts.sample_embeddings is not None else None),
        training_texts=texts.training_texts,
    )
