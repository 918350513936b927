"""Experiment 1 — distribution collapse.

For every *text set* (each model's responses to the test prompts, each source's synthetic
training answers, the human training and test references):

* ``embed``    — sentences (markdown stripped, split) and their embeddings, plus one embedding
                 per text; computed once, read by every embedding metric;
* ``score``    — token log-probabilities: the vanilla target scores a set's texts (output
                 perplexity) and each fine-tuned model scores the human test references
                 (human-text perplexity);
* ``evaluate`` — the metric suite with bootstrap intervals → ``aggregates.parquet`` and
                 ``per_item.parquet`` (see :mod:`collapselab.metrics.tables`);
* ``stats``    — tests across conditions, metric concordance, factorial analysis;
* ``embedding_map`` — one PCA over every set's embeddings (the report's map).
"""

from __future__ import annotations

from typing import Any

from collapselab.config.spec import ExperimentSpec, MetricSpec
from collapselab.loop.homogeneity import homogeneity_stages
from collapselab.naming import slug
from collapselab.pipeline.experiments.collapse import plan, run
from collapselab.pipeline.experiments.collapse.params import ScoreParams, SetInfo, SetParams
from collapselab.pipeline.experiments.spine import Spine
from collapselab.pipeline.experiments.spine.params import CellParams
from collapselab.pipeline.keying import scorer_key_settings
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import plan_summary
from collapselab.pipeline.stage import Stage

EXPERIMENT = "collapse"

# version 2: texts longer than the model's window are embedded by chunks (collapse.embedding_long_texts)
register_kind(StageKind(
    "embed", 2, run.run_embed, plan.plan_embed, unit="texts", params=SetParams, experiment=EXPERIMENT,
    outputs=("sentences.parquet", "embeddings.npy", "sentence_embeddings.npy", "ids.json", "summary.json"),
    description="sentences and embeddings of one text set"))
register_kind(StageKind(
    "score", 1, run.run_score, plan.plan_score, unit="texts", params=ScoreParams, loads_model=True,
    experiment=EXPERIMENT, outputs=("logprobs.jsonl", "summary.json"),
    description="per-token log-probabilities of a set's texts under one model (teacher-forced)"))
register_kind(StageKind(
    "sample", 1, run.run_sample, plan.plan_sample, unit="answers", params=CellParams, loads_model=True,
    experiment=EXPERIMENT, outputs=("samples.jsonl", "summary.json"),
    description="k answers per test prompt from one model (collapse.samples: diversity within a prompt)"))
register_kind(StageKind(
    "evaluate", 1, run.run_evaluate, plan.plan_evaluate, unit="texts", params=SetParams, experiment=EXPERIMENT,
    outputs=("aggregates.parquet", "per_item.parquet", "details.json", "set.json"),
    report=True, description="the metric suite on one text set, with intervals"))
# version 2: tests paired by item where the conditions answer the same items
# version 3: mixed-model family (run as random effect) with several seeds; unit column; the reason for
# paired/unpaired in each note; whole items resampled in pooled paired intervals
register_kind(StageKind(
    "stats", 3, run.run_stats, plan_summary, unit="sets", experiment=EXPERIMENT,
    outputs=("tests.parquet", "concordance.json", "factorial.parquet", "seed_spread.parquet", "summary.json"),
    report=True, description="tests across conditions, metric concordance, factorial analysis"))
register_kind(StageKind(
    "embedding_map", 1, run.run_embedding_map, plan.plan_embedding_map, unit="texts", experiment=EXPERIMENT,
    outputs=("embedding_map.parquet",),
    description="one 2-D PCA over every text set's embeddings (the report's map)"))

#: The default suite: every family, with the study's settings where the study had the metric.
DEFAULT_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(name=n, settings=s) for n, s in [
        ("output_perplexity", {}),
        ("output_perplexity_gap", {}),
        ("human_perplexity", {}),
        ("lexical_diversity", {"mode": "individual"}),
        ("lexical_diversity", {"mode": "aggregated"}),
        ("distinct", {"n": 1}), ("distinct", {"n": 2}), ("distinct", {"n": 3}), ("distinct", {"n": 4}),
        ("compression_ratio", {}),
        ("ngram_entropy", {"n": 2}),
        ("mattr", {}),
        ("semantic_diversity", {}),
        ("vendi", {}),
        ("nearest_neighbor_distance", {}),
        ("heaps", {}),
        ("vocabulary_size", {}),
        ("rare_tail_coverage", {}),
        ("mauve", {}),
        ("js_divergence", {"n": 1}), ("js_divergence", {"n": 2}),
        ("frechet", {}),
        ("length", {}),
        ("human_perplexity_tail", {}),
        ("verbatim_ngrams", {"n": 8}), ("verbatim_ngrams", {"n": 13}),
        ("longest_copy", {}),
    ]
)


#: The within-prompt suite of the k-answers sets (``collapse.samples``; NoveltyBench's distinct@k
#: and the mean pairwise distance among a prompt's answers).
DEFAULT_SAMPLE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(name="distinct_at_k"), MetricSpec(name="within_prompt_distance"),
)


def metric_specs(spec: ExperimentSpec) -> tuple[MetricSpec, ...]:
    """The configured metric suite, or :data:`DEFAULT_METRICS`."""
    return spec.collapse.metrics if spec.collapse.metrics is not None else DEFAULT_METRICS


def sample_metric_specs(spec: ExperimentSpec) -> tuple[MetricSpec, ...]:
    """The within-prompt suite of the k-answers sets: ``collapse.samples.metrics`` or the default."""
    samples = spec.collapse.samples
    return samples.metrics if samples is not None and samples.metrics is not None else DEFAULT_SAMPLE_METRICS


def _reads_training_data(metric: dict[str, Any]) -> bool:
    """Whether a metric reads the set's model's training texts (the memorization family)."""
    from collapselab.metrics import METRICS

    return metric["name"] in METRICS and METRICS.info(metric["name"]).get("family") == "memorization"


def _metric_key(metric: MetricSpec) -> dict[str, Any]:
    """A metric as the evaluate stage's key sees it: its spec and, once its code has changed what
    it reports, its version (absent at version 1, so keys from before versions existed stay)."""
    from collapselab.metrics.base import metric_version

    version = metric_version(metric.name)
    return {**metric.model_dump(mode="json"), **({"version": version} if version > 1 else {})}


def response_set_name(cell: CellParams) -> str:
    """``target/condition/seedS`` (and ``/genG`` for generations after the first)."""
    return (f"{cell.target_name}/{cell.condition.label}/seed{cell.seed}"
            + (f"/gen{cell.generation}" if cell.generation else ""))


def text_sets(spec: ExperimentSpec, spine: Spine) -> list[SetInfo]:
    """The sets Experiment 1 measures: the human test references, every respond stage's answers
    and (``collapse.training_data``) the human and each source's generation-0 training answers."""
    tier_of = {m: t for t, members in spec.tiers.items() for m in members}
    sets: list[SetInfo] = [SetInfo("human:test", "human", (spine.prepare,), "test.jsonl",
                                   {"condition": "human-reference"})]
    for r in spine.responds:
        p: CellParams = r.params
        tiers = {tier_of.get(src) for src in p.condition.sources}
        sets.append(SetInfo(
            response_set_name(p), "condition", (r,), "responses.jsonl",
            {"condition": p.condition.label, "target": p.target_name, "seed": p.seed, "diversity": p.condition.kind,
             "tier": tiers.pop() if len(tiers) == 1 else None, "generation": p.generation},
        ))
    if spec.collapse.samples is not None:  # k answers per prompt, from every cell's model
        for r in spine.responds:
            p = r.params
            sample = Stage("sample", r.name, settings={**r.settings, "samples": spec.collapse.samples.model_dump(
                mode="json", exclude={"metrics"})}, inputs=r.inputs, params=p)
            labels = next(x.labels for x in sets if x.producers == (r,))
            sets.append(SetInfo(response_set_name(p) + "/samples", "condition", (sample,), "samples.jsonl",
                                {**labels, "samples": spec.collapse.samples.k}))
    if spec.collapse.training_data:
        sets.append(SetInfo("source:human", "source", (spine.prepare,), "train.jsonl", {"source": "human"}))
        for source in spec.sources:
            # the sources' own data (generation 0; with seed_scope "data", the first seed's draw)
            # (at the source's own decoding: a condition's decoding variant samples its own stages)
            base = spec.source_decoding(source.name).model_dump(exclude={"seed"})
            gens = tuple(s for s in spine.of_kind("generate") if s.params.source == source.name
                         and not s.params.generation and s.params.data_seed in (None, spec.seeds[0])
                         and s.params.decoding.model_dump(exclude={"seed"}) == base)
            if gens:
                sets.append(SetInfo(f"source:{source.name}", "source", gens, "synthetic.jsonl",
                                    {"source": source.name, "tier": tier_of.get(source.name)}))
    return sets


def add_stages(spec: ExperimentSpec, spine: Spine) -> list[Stage]:
    """Experiment 1's stages (none when ``collapse.enabled`` is false)."""
    if not spec.collapse.enabled:
        return []
    sets = text_sets(spec, spine)
    embedder: dict[str, Any] = {"model": spec.collapse.embedding_model or "packaged:all-MiniLM-L6-v2"}
    if spec.collapse.embedding_long_texts != "chunk":  # in the key only when not the default
        embedder["long_texts"] = spec.collapse.embedding_long_texts
    new: list[Stage] = []
    embeds: dict[str, Stage] = {}
    for info in sets:
        embeds[info.name] = Stage(
            "embed", slug(info.name), settings={"embedder": embedder, "set": info.name, "file": info.file},
            inputs=info.producers, params=SetParams(info),
        )
    new += embeds.values()

    vanilla = dict(zip(spine.target_names, spec.targets, strict=True))
    metrics = [_metric_key(m) for m in metric_specs(spec)]
    sample_metrics = [_metric_key(m) for m in sample_metric_specs(spec)]
    wants_training = any(_reads_training_data(m) for m in metrics)
    new += list(dict.fromkeys(s for info in sets if info.file == "samples.jsonl" for s in info.producers))
    wants_ppl = any(m["name"].endswith("perplexity") for m in metrics)
    # output_perplexity_gap compares a condition with the references under the vanilla target:
    # a fine-tuned condition's evaluate then reads that scoring pass too
    wants_gap = any(m["name"] == "output_perplexity_gap" for m in metrics)
    evaluates: list[Stage] = []
    first_target = spine.target_names[0]
    batch = spec.collapse.score_batch_size
    for info in sets:
        scores: list[Stage] = []
        if info.file == "samples.jsonl":  # the within-prompt suite only: no scoring
            evaluates.append(Stage(
                "evaluate", slug(info.name),
                settings={"set": info.name, "metrics": sample_metrics, "bootstrap": spec.collapse.bootstrap,
                          "jackknife_groups": spec.collapse.jackknife_groups,
                          "confidence": spec.collapse.confidence, "seed": spec.collapse.seed},
                inputs=tuple(dict.fromkeys((*info.producers, embeds[info.name], embeds["human:test"]))),
                params=SetParams(info)))
            continue
        if wants_ppl and info.kind in ("condition", "human"):
            tname = info.labels.get("target") or first_target
            scorer = vanilla[tname]
            scores.append(Stage(
                "score", f"{slug(info.name)}-by-vanilla-{tname}" if info.kind == "condition"
                else f"human-test-by-vanilla-{tname}",
                settings={"scorer": scorer_key_settings(scorer), "set": info.name, "file": info.file,
                          "system_prompt": spec.decoding.system_prompt},
                inputs=info.producers, params=ScoreParams(info, "outputs", scorer, batch),
            ))
            if info.kind == "condition":
                train = spine.train(tname, info.labels["condition"], info.labels["seed"],
                                    info.labels.get("generation", 0))
                # the vanilla target scoring the human references is one stage, shared by the
                # human reference set (its output perplexity) and the vanilla condition
                scorer_label = slug(info.name) if train else f"vanilla-{tname}"
                human_scorings = [(scorer_label, train)]
                if train and wants_gap:  # the references under the vanilla target too (the same stage
                    human_scorings.append((f"vanilla-{tname}", None))  # as the vanilla condition's)
                for by, trained in human_scorings:
                    scores.append(Stage(
                        "score", f"human-test-by-{by}",
                        settings={"scorer": scorer_key_settings(scorer), "set": "human:test", "file": "test.jsonl",
                                  "system_prompt": spec.decoding.system_prompt},
                        inputs=(spine.prepare,) + ((trained,) if trained else ()),
                        params=ScoreParams(sets[0], "human", scorer, batch),
                    ))
        new += scores
        inputs = (*info.producers, embeds[info.name], embeds["human:test"], *scores)
        if wants_training and info.kind == "condition":
            train = spine.train(info.labels.get("target") or first_target, info.labels["condition"],
                                info.labels["seed"], info.labels.get("generation", 0))
            if train is not None:  # the training data the memorization metrics compare with
                inputs = (*inputs, train.inputs[0])
        evaluates.append(Stage(
            "evaluate", slug(info.name),
            settings={"set": info.name, "metrics": metrics, "bootstrap": spec.collapse.bootstrap,
                      "jackknife_groups": spec.collapse.jackknife_groups, "confidence": spec.collapse.confidence,
                      "seed": spec.collapse.seed},
            inputs=tuple(dict.fromkeys(inputs)), params=SetParams(info),
        ))
    new += evaluates
    new = list({s.label: s for s in new}.values())  # shared stages appear once
    # all scoring by the vanilla target first, so the model pool loads it once
    new.sort(key=lambda s: (("sample", "embed", "score", "evaluate").index(s.kind),
                            any(i.kind == "train" for i in s.inputs) if s.kind == "score" else 0))
    stats_settings = {"confidence": spec.collapse.confidence, "seed": spec.collapse.seed, **spec.stats.key_settings()}
    if spec.generations.count > 1:
        # concordance and the factorial analysis read generation 0 (issue 13); one-round runs keep their key
        stats_settings["round"] = "generation 0 for concordance and factorial"
    new.append(Stage("stats", "collapse", settings=stats_settings, inputs=tuple(evaluates)))
    new.append(Stage("embedding_map", "collapse", settings={"method": "pca", "dims": 2},
                     inputs=tuple(embeds.values())))
    new += homogeneity_stages(spec, embeds)  # how alike the sources answer the same prompts
    return new
