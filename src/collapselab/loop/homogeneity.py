"""Inter-source homogeneity: how different the synthetic-data sources really are (issue 13).

The study's claim that drawing training data from several source models protects against collapse
rests on the sources answering differently. Jiang et al. (2025, "Artificial Hivemind: The
Open-Ended Homogeneity of Language Models (and Beyond)", arXiv:2510.22954) find that many models
answer open prompts alike; a multi-source condition whose sources write the same answers is then a
single source in disguise. This module measures, for every pair of sources A and B on the train
prompts both answered (P_AB, n = |P_AB|; each prompt counted once, its first answer kept):

* **paired embedding similarity** s̄ = (1/n) Σ_{p∈P_AB} cos(e_A(p), e_B(p)), e = the text's
  embedding (the ``embed`` stage's, L2-normalised), with a percentile-bootstrap interval over
  prompts (Efron & Tibshirani 1993, ch. 13; :func:`collapselab.stats.bootstrap.bootstrap_ci`);
* **unpaired baseline** b = (1 / (n(n−1))) Σ_{p≠q} cos(e_A(p), e_B(q)): how alike any answer of A
  is to any answer of B to a *different* prompt (the similarity the shared topic and register give
  for free), and the **paired excess** s̄ − b: how much more alike the two answers to the *same*
  prompt are. The excess is the mean of per-prompt terms
  d(p) = cos(e_A(p), e_B(p)) − [Σ_{q≠p} cos(e_A(p), e_B(q)) + Σ_{q≠p} cos(e_A(q), e_B(p))] / (2(n−1)),
  whose mean is exactly s̄ − b; its interval bootstraps the d(p) (each prompt keeps its own
  comparison row, an approximation: resampling does not recompute the baseline's pairs);
* **shared n-gram rate** (1/n) Σ_p J(G_n(a_p), G_n(b_p)), J(X, Y) = |X ∩ Y| / |X ∪ Y| (Jaccard),
  G_n(t) = the set of word n-grams of t: markdown stripped (:func:`~collapselab.metrics.text.plain_text`)
  and lower-cased words (:func:`~collapselab.metrics.text.simple_words`), the lexical family's
  tokenisation without punctuation — punctuation would make ", and the" a shared 3-gram of any two
  English answers. J is undefined (NaN, left out and counted) when neither text has n words;
* **cluster overlap** O = Σ_c min(h_A(c), h_B(c)), h_S(c) = the share of S's answers (to P_AB) in
  cluster c of one k-means (scikit-learn, k-means++, seeded; k = ``homogeneity.clusters`` capped by
  the number of distinct texts) fitted on the pooled embeddings of all synthetic sources. The
  histogram intersection (Swain & Ballard 1991) equals 1 − total-variation distance: 1 means the
  same clusters in the same shares, 0 disjoint clusters, and O is the share of answers that can be
  matched cluster for cluster — a direct reading that 1 − Jensen–Shannon divergence (log-scaled,
  not a share of anything) lacks. Interval: prompts resampled jointly for both sources, clusters
  kept fixed.

Aggregates (``tiers.parquet``, ``conditions.parquet``): a tier's value is the mean over its
sources' pairs, a multi-source condition's the mean over its sources' pairs, pairs weighted
equally (each pair is one comparison, whatever the mix's weights); ``similarity_weighted`` is the
mix-weighted Σ_{i<j} w_i w_j s̄_ij / Σ_{i<j} w_i w_j — the expected paired similarity of two
training answers drawn from the mix from different sources. No intervals there: pairs that share a
source are not independent. The human training references (``source:human``), when measured, are
compared with every source as a yardstick (``reference`` pairs) and never enter the aggregates nor
the clustering fit.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import Estimate, PlanContext
from collapselab.pipeline.stage import Stage
from collapselab.stats.bootstrap import BootstrapResult, bootstrap_ci, bootstrap_ci_func

if TYPE_CHECKING:
    from collapselab.config.spec import ExperimentSpec
    from collapselab.pipeline.context import StageContext

#: the name of the human training references among the measured sets (a yardstick, not a source)
HUMAN = "human"
#: the metrics of a pair, averaged over pairs in the tier and condition tables
PAIR_METRICS = ("similarity", "baseline", "excess", "ngram_rate", "cluster_overlap")
_NO_INTERVAL = BootstrapResult(math.nan, math.nan, math.nan)


# -- pure functions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceTexts:
    """One source's answers: prompt ids, texts and their embeddings (rows in the same order)."""

    ids: Sequence[str]
    texts: Sequence[str]
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.texts) == len(self.embeddings):
            raise ValueError(f"{len(self.ids)} ids, {len(self.texts)} texts and {len(self.embeddings)} embeddings")


def shared_prompts(ids_a: Sequence[str], ids_b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(ia, ib)`` of the prompts both sources answered, in A's order. A prompt
    answered twice by one source counts once, with its first answer (each prompt one unit)."""
    first_b: dict[str, int] = {}
    for j, pid in enumerate(ids_b):
        first_b.setdefault(pid, j)
    ia, ib, seen = [], [], set()
    for i, pid in enumerate(ids_a):
        if pid in first_b and pid not in seen:
            seen.add(pid)
            ia.append(i)
            ib.append(first_b[pid])
    return np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (the embed stage writes them so; re-normalising costs nothing and
    makes a dot product a cosine whatever the input)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding is the zero vector: its cosine is undefined")
    return x / norms


def paired_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_p, b_p) for every row p of two aligned embedding matrices."""
    if a.shape != b.shape:
        raise ValueError(f"unaligned embeddings: {a.shape} and {b.shape}")
    return np.einsum("ij,ij->i", _unit_rows(a), _unit_rows(b))


def unpaired_terms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per prompt p, u(p) = [Σ_{q≠p} cos(a_p, b_q) + Σ_{q≠p} cos(a_q, b_p)] / (2(n−1)): the mean
    similarity of p's answers to the other source's answers to *other* prompts. Their mean is the
    unpaired baseline (1/(n(n−1))) Σ_{p≠q} cos(a_p, b_q). O(n·d): the row and column sums of the
    cosine matrix are a_p·Σb and b_p·Σa, so the n×n matrix is never built. NaN when n < 2."""
    n = len(a)
    if n < 2:
        return np.full(n, np.nan)
    ua, ub = _unit_rows(a), _unit_rows(b)
    diagonal = np.einsum("ij,ij->i", ua, ub)
    rows = ua @ ub.sum(axis=0) - diagonal  # Σ_{q≠p} cos(a_p, b_q)
    cols = ub @ ua.sum(axis=0) - diagonal  # Σ_{q≠p} cos(a_q, b_p)
    return (rows + cols) / (2 * (n - 1))


def mean_interval(values: np.ndarray, *, bootstrap: int, confidence: float, seed: int) -> BootstrapResult:
    """The mean of per-prompt values (NaN left out) with its percentile-bootstrap interval over
    prompts; no interval when ``bootstrap`` is 0 or fewer than two values are defined."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return _NO_INTERVAL
    if bootstrap < 1:
        return BootstrapResult(float(np.nanmean(values)), math.nan, math.nan)
    return bootstrap_ci(values, np.mean, n_resamples=bootstrap, confidence=confidence, seed=seed)


@dataclass(frozen=True)
class PairedSimilarity:
    """The paired similarity, the unpaired baseline and the excess of one source pair."""

    similarity: BootstrapResult
    baseline: float
    excess: BootstrapResult
    per_prompt: np.ndarray  # cos(a_p, b_p)


def paired_similarity(a: np.ndarray, b: np.ndarray, *, bootstrap: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> PairedSimilarity:
    """Mean paired cosine of two aligned embedding matrices (rows = shared prompts) with its interval,
    the unpaired baseline (:func:`unpaired_terms`) and the paired excess s̄ − b with its interval
    (the per-prompt terms d(p) = cos(a_p, b_p) − u(p), bootstrapped over prompts; see the module)."""
    cos = paired_cosines(a, b)
    unpaired = unpaired_terms(a, b)
    similarity = mean_interval(cos, bootstrap=bootstrap, confidence=confidence, seed=seed)
    baseline = float(unpaired.mean()) if len(unpaired) >= 2 else math.nan
    excess = mean_interval(cos - unpaired, bootstrap=bootstrap, confidence=confidence, seed=seed)
    return PairedSimilarity(similarity, baseline, excess, cos)


def ngram_set(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """G_n(text): the set of word n-grams of the markdown-stripped, lower-cased words of ``text``.
    Not cached: the sets of a whole corpus would take gigabytes; the markdown stripping, the costly
    step, is cached by :func:`~collapselab.metrics.text.plain_text`."""
    from collapselab.metrics.text import plain_text, simple_words

    words = simple_words(plain_text(text))
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def ngram_jaccard(a: str, b: str, n: int) -> float:
    """|G_n(a) ∩ G_n(b)| / |G_n(a) ∪ G_n(b)|; NaN when neither text has an n-gram."""
    ga, gb = ngram_set(a, n), ngram_set(b, n)
    union = len(ga | gb)
    return len(ga & gb) / union if union else math.nan


def ngram_rates(texts_a: Sequence[str], texts_b: Sequence[str], n: int) -> np.ndarray:
    """Per aligned prompt, :func:`ngram_jaccard` of the two answers."""
    if len(texts_a) != len(texts_b):
        raise ValueError(f"unaligned texts: {len(texts_a)} and {len(texts_b)}")
    return np.array([ngram_jaccard(x, y, n) for x, y in zip(texts_a, texts_b, strict=True)], dtype=np.float64)


def fit_clusters(pool: np.ndarray, k: int, seed: int):
    """k-means on the pooled (unit-length) embeddings; k capped by the number of distinct rows (more
    clusters than points cannot be fitted; identical points would leave clusters empty). Returns
    the fitted ``sklearn.cluster.KMeans``."""
    from sklearn.cluster import KMeans

    x = _unit_rows(pool)
    k = max(1, min(k, len(np.unique(x, axis=0))))
    # several k-means++ starts: the clusters should not hinge on one lucky start
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)


def cluster_labels(model, embeddings: np.ndarray) -> np.ndarray:
    """The nearest cluster centre of each (unit-length) embedding."""
    return model.predict(_unit_rows(embeddings)).astype(np.int64)


def cluster_histogram(labels: np.ndarray, k: int) -> np.ndarray:
    """h(c) = the share of ``labels`` equal to c, c = 0 … k−1 (all NaN for no labels)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k).astype(np.float64)
    return counts / counts.sum() if counts.sum() else np.full(k, np.nan)


def histogram_intersection(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """Σ_c min(h_A(c), h_B(c)) = 1 − ½ Σ_c |h_A(c) − h_B(c)| (total variation), in [0, 1]."""
    return float(np.minimum(h_a, h_b).sum())


def cluster_overlap(labels_a: np.ndarray, labels_b: np.ndarray, k: int, *, bootstrap: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """:func:`histogram_intersection` of two sources' cluster histograms over the same prompts
    (aligned labels), with a percentile-bootstrap interval: prompts resampled jointly, clusters fixed."""
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    if len(la) != len(lb):
        raise ValueError(f"unaligned labels: {len(la)} and {len(lb)}")
    if not len(la):
        return _NO_INTERVAL

    def overlap(idx: np.ndarray) -> float:
        return histogram_intersection(cluster_histogram(la[idx], k), cluster_histogram(lb[idx], k))

    if bootstrap < 1:
        return BootstrapResult(overlap(np.arange(len(la))), math.nan, math.nan)
    return bootstrap_ci_func(len(la), overlap, n_resamples=bootstrap, confidence=confidence, seed=seed)


def compare_pair(a: SourceTexts, b: SourceTexts, labels_a: np.ndarray, labels_b: np.ndarray, k: int, *,
                 ngram: int, bootstrap: int, confidence: float, seed: int) -> dict[str, Any]:
    """Every measure of one source pair on the prompts both answered (one row of ``pairs.parquet``;
    the ``_low`` / ``_high`` columns are the interval's ends)."""
    ia, ib = shared_prompts(a.ids, b.ids)
    row: dict[str, Any] = {"n_shared": len(ia)}
    sim = paired_similarity(a.embeddings[ia], b.embeddings[ib], bootstrap=bootstrap, confidence=confidence,
                            seed=seed)
    rates = ngram_rates([a.texts[i] for i in ia], [b.texts[i] for i in ib], ngram)
    results = {
        "similarity": sim.similarity, "excess": sim.excess,
        "ngram_rate": mean_interval(rates, bootstrap=bootstrap, confidence=confidence, seed=seed),
        "cluster_overlap": cluster_overlap(labels_a[ia], labels_b[ib], k, bootstrap=bootstrap,
                                           confidence=confidence, seed=seed),
    }
    for name, result in results.items():
        row.update({name: result.estimate, f"{name}_low": result.low, f"{name}_high": result.high})
    row["baseline"] = sim.baseline
    row["ngram_undefined"] = int(np.isnan(rates).sum())
    return row


def homogeneity_tables(
    sources: Mapping[str, SourceTexts], *, tiers: Mapping[str, Sequence[str]] | None = None,
    conditions: Sequence[Mapping[str, Any]] = (), ngram: int = 3, clusters: int = 8, bootstrap: int = 1000,
    confidence: float = 0.95, seed: int = 0, reference: str | None = HUMAN,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The pair, tier and condition tables and a summary for ``sources`` (name → answers).

    ``reference`` names the human references among ``sources`` (compared with every source, left
    out of the k-means fit and the aggregates). ``conditions``: ``{"label", "sources", "weights"}``
    per multi-source condition."""
    tiers = dict(tiers or {})
    tier_of = {m: t for t, members in tiers.items() for m in members}
    synthetic = [s for s in sources if s != reference]
    if len(synthetic) < 2:
        raise ValueError(f"homogeneity needs two or more sources, got {synthetic}")
    model = fit_clusters(np.concatenate([sources[s].embeddings for s in synthetic]), clusters, seed)
    k = int(model.n_clusters)
    labels = {s: cluster_labels(model, src.embeddings) for s, src in sources.items()}

    pairs = list(itertools.combinations(synthetic, 2))
    if reference in sources:  # the yardstick: every source against the human answers
        pairs += [(reference, s) for s in synthetic]
    rows = []
    for name_a, name_b in pairs:
        row = {"source_a": name_a, "source_b": name_b, "reference": reference in (name_a, name_b),
               "tier_a": tier_of.get(name_a), "tier_b": tier_of.get(name_b)}
        row.update(compare_pair(sources[name_a], sources[name_b], labels[name_a], labels[name_b], k,
                                ngram=ngram, bootstrap=bootstrap, confidence=confidence, seed=seed))
        rows.append(row)
    pair_table = pd.DataFrame(rows)

    groups = [{"tier": t, "sources": [m for m in members if m in synthetic]} for t, members in tiers.items()]
    groups.append({"tier": "all sources", "sources": synthetic})
    tier_table = pd.DataFrame([{"tier": g["tier"], "sources": ", ".join(g["sources"]),
                                **group_means(pair_table, g["sources"])} for g in groups])
    cond_rows = []
    for cond in conditions:
        members = list(cond["sources"])
        weights = dict(zip(members, cond.get("weights") or [1.0] * len(members), strict=True))
        cond_rows.append({"condition": cond["label"], "sources": ", ".join(members),
                          "note": cond.get("note", ""), **group_means(pair_table, members, weights)})
    condition_table = pd.DataFrame(cond_rows, columns=["condition", "sources", "note", "n_pairs", "missing_pairs",
                                                       *PAIR_METRICS, "similarity_weighted"])
    summary = {
        "sources": synthetic, "reference": reference if reference in sources else None,
        "texts": {s: len(src.ids) for s, src in sources.items()},
        "duplicate_ids": {s: len(src.ids) - len(set(src.ids)) for s, src in sources.items()},
        "clusters_requested": clusters, "clusters": k,
        "cluster_shares": {s: cluster_histogram(labels[s], k).tolist() for s in sources},
        "ngram": ngram, "bootstrap": bootstrap, "confidence": confidence, "seed": seed, "pairs": len(pairs),
    }
    return pair_table, tier_table, condition_table, summary


def group_means(pairs: pd.DataFrame, members: Sequence[str],
                weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The mean of each pair metric over the pairs of ``members`` (pairs weighted equally; a pair
    not measured counts in ``missing_pairs``), and with ``weights`` the mix-weighted similarity
    Σ w_i w_j s_ij / Σ w_i w_j over the measured pairs."""
    wanted = {frozenset(p) for p in itertools.combinations(dict.fromkeys(members), 2)}
    found = pairs[[frozenset((a, b)) in wanted for a, b in zip(pairs["source_a"], pairs["source_b"],
                                                                 strict=True)]] if len(pairs) else pairs
    out: dict[str, Any] = {"n_pairs": len(found), "missing_pairs": len(wanted) - len(found)}
    for metric in PAIR_METRICS:
        values = found[metric].to_numpy(dtype=np.float64) if len(found) else np.array([])
        out[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    if weights is not None:
        w = np.array([weights[a] * weights[b] for a, b in zip(found["source_a"], found["source_b"], strict=True)],
                     dtype=np.float64) if len(found) else np.array([])
        s = found["similarity"].to_numpy(dtype=np.float64) if len(found) else np.array([])
        ok = np.isfinite(s)
        out["similarity_weighted"] = float((w[ok] * s[ok]).sum() / w[ok].sum()) if ok.any() else math.nan
    return out


# -- the stage -----------------------------------------------------------------------------------------
def source_name(set_name: str) -> str:
    """``source:NAME`` → ``NAME`` (the human references' set → :data:`HUMAN`)."""
    return set_name.removeprefix("source:")


def _condition_entries(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The multi-source conditions as the stage's key and runner see them. A decorated condition's
    value is measured on the sources' default-decoding, uncurated answers: its note says so."""
    entries = []
    for cond in spec.conditions:
        if cond.kind != "multi":
            continue
        notes = ([f"decoding={cond.decoding}: measured on the default-decoding answers"] if cond.decoding else []) \
            + ([f"curate={cond.curation}: measured before curation"] if cond.curation else [])
        entries.append({"label": cond.label, "sources": list(cond.sources),
                        "weights": list(cond.normalized_weights), "note": "; ".join(notes)})
    return entries


def homogeneity_stages(spec: ExperimentSpec, source_embeds: Mapping[str, Stage]) -> list[Stage]:
    """The ``homogeneity`` stage over the ``source:NAME`` embed stages of ``source_embeds`` (set name →
    embed stage; other sets are ignored), or none when ``collapse.homogeneity.enabled`` is false or
    fewer than two synthetic sources are measured. ``source:human``, when present, is the yardstick."""
    settings_of = spec.collapse.homogeneity
    embeds = {name: stage for name, stage in sorted(source_embeds.items()) if name.startswith("source:")}
    if not settings_of.enabled or sum(source_name(n) != HUMAN for n in embeds) < 2:
        return []
    measured = {source_name(n) for n in embeds}
    settings = {
        "sets": list(embeds), "ngram": settings_of.ngram, "clusters": settings_of.clusters,
        "bootstrap": spec.collapse.bootstrap, "confidence": spec.collapse.confidence, "seed": spec.collapse.seed,
        "tiers": {t: [m for m in members if m in measured] for t, members in sorted(spec.tiers.items())},
        "conditions": _condition_entries(spec),
    }
    producers = [p for stage in embeds.values() for p in stage.params.text_set.producers]
    return [Stage("homogeneity", "sources", settings=settings,
                  inputs=tuple(dict.fromkeys([*embeds.values(), *producers])))]


def _read_source(ctx: StageContext, embed: Stage) -> SourceTexts:
    """One set's answers (from its producers) and embeddings (from its embed stage), checked aligned."""
    from collapselab.errors import DataError
    from collapselab.pipeline.experiments.collapse.run import load_npy, read_set_rows

    folder = ctx.input_dir(embed)
    rows = read_set_rows(ctx, embed.params.text_set)
    ids = json.loads((folder / "ids.json").read_text())
    embeddings = load_npy(folder / "embeddings.npy")
    if [r["id"] for r in rows] != ids or len(embeddings) != len(ids):
        raise DataError(f"{embed.label}: ids.json / embeddings.npy do not match its set's {len(rows)} texts")
    return SourceTexts(ids, [r["text"] for r in rows], embeddings)


def run_homogeneity(ctx: StageContext) -> None:
    """Pairs, tiers, multi-source conditions and a summary (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    settings = ctx.stage.settings
    embeds = {s.settings["set"]: s for s in ctx.stage.inputs if s.kind == "embed"}
    ctx.set_total(len(settings["sets"]) + 1)
    sources = {}
    for set_name in settings["sets"]:
        sources[source_name(set_name)] = _read_source(ctx, embeds[set_name])
        ctx.advance(1)
    # small matrices (384-d): one BLAS thread is as fast and does not spin on a busy machine
    with threadpool_limits(1):
        pairs, tiers, conditions, summary = homogeneity_tables(
            sources, tiers=settings["tiers"], conditions=settings["conditions"], ngram=settings["ngram"],
            clusters=settings["clusters"], bootstrap=settings["bootstrap"], confidence=settings["confidence"],
            seed=settings["seed"])
    write_parquet(pairs, ctx.out / "pairs.parquet")
    write_parquet(tiers, ctx.out / "tiers.parquet")
    write_parquet(conditions, ctx.out / "conditions.parquet")
    write_json(ctx.out / "summary.json", summary)
    ctx.advance(1)


def plan_homogeneity(stage: Stage, ctx: PlanContext) -> Estimate:
    """One row per source pair (and per source against the human references); no model runs."""
    names = [source_name(n) for n in stage.settings["sets"]]
    m = sum(n != HUMAN for n in names)
    n_pairs = m * (m - 1) // 2 + (m if HUMAN in names else 0)
    return Estimate(None, n_pairs, notes=["cosines, n-gram overlap and one k-means over stored embeddings"])


register_kind(StageKind(
    "homogeneity", 1, run_homogeneity, plan_homogeneity, unit="pairs", experiment="collapse",
    outputs=("pairs.parquet", "conditions.parquet", "tiers.parquet", "summary.json"), report=True,
    description="how alike the sources' answers to the same train prompts are (similarity, n-grams, clusters)"))
