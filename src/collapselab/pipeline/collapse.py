"""Experiment 1 stages — distribution collapse.

For every *text set* (each model's responses to the test prompts, each source's synthetic
training answers, the human training and test references):

* ``embed``    — sentences (markdown stripped, split) and their embeddings, plus one embedding
                 per text; computed once, read by every embedding metric;
* ``score``    — token log-probabilities: the vanilla target scores a set's texts (output
                 perplexity) and each fine-tuned model scores the human test references
                 (human-text perplexity);
* ``evaluate`` — the metric suite with bootstrap intervals → ``aggregates.parquet`` and
                 ``per_item.parquet`` (see :mod:`collapselab.metrics.tables`);
* ``stats``    — tests across conditions, metric concordance, factorial analysis.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.config.spec import ExperimentSpec, MetricSpec
from collapselab.pipeline.graph import Stage, model_key_settings

#: The default suite: every family, with the study's settings where the study had the metric.
DEFAULT_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(name=n, settings=s) for n, s in [
        ("output_perplexity", {}),
        ("human_perplexity", {}),
        ("lexical_diversity", {"mode": "individual"}),
        ("lexical_diversity", {"mode": "aggregated"}),
        ("distinct", {"n": 1}), ("distinct", {"n": 2}), ("distinct", {"n": 3}), ("distinct", {"n": 4}),
        ("compression_ratio", {}),
        ("ngram_entropy", {"n": 2}),
        ("mattr", {}),
        ("semantic_diversity", {}),
        ("vendi", {}),
        ("heaps", {}),
        ("vocabulary_size", {}),
        ("rare_tail_coverage", {}),
        ("mauve", {}),
        ("js_divergence", {"n": 1}), ("js_divergence", {"n": 2}),
        ("frechet", {}),
        ("length", {}),
    ]
)


def metric_specs(spec: ExperimentSpec) -> tuple[MetricSpec, ...]:
    return spec.collapse.metrics if spec.collapse.metrics is not None else DEFAULT_METRICS


@dataclass(frozen=True)
class SetInfo:
    """Where a text set comes from and how it is labelled in the result tables."""

    name: str
    kind: str  # condition | source | human
    producers: tuple[Stage, ...]
    file: str  # responses.jsonl | synthetic.jsonl | train.jsonl | test.jsonl
    labels: dict[str, Any]


def _embedder_settings(spec: ExperimentSpec) -> dict[str, Any]:
    return {"model": spec.collapse.embedding_model or "packaged:all-MiniLM-L6-v2"}


def add_collapse_stages(spec: ExperimentSpec, stages: list[Stage]) -> list[Stage]:
    """Append Experiment 1's stages to the spine's."""
    if not spec.collapse.enabled:
        return stages
    prepare = stages[0]
    responds = [s for s in stages if s.kind == "respond"]
    trains = {(s.params["target_name"], s.params["condition"].label, s.params["seed"], s.params.get("generation", 0)): s
              for s in stages if s.kind == "train"}
    tier_of = {m: t for t, members in spec.tiers.items() for m in members}

    sets: list[SetInfo] = [SetInfo("human:test", "human", (prepare,), "test.jsonl",
                                   {"condition": "human-reference"})]
    for r in responds:
        p = r.params
        cond = p["condition"]
        tiers = {tier_of.get(src) for src in cond.sources}
        generation = p.get("generation", 0)
        sets.append(SetInfo(
            response_set_name(p), "condition", (r,), "responses.jsonl",
            {"condition": cond.label, "target": p["target_name"], "seed": p["seed"],
             "diversity": cond.kind, "tier": tiers.pop() if len(tiers) == 1 else None, "generation": generation},
        ))
    if spec.collapse.training_data:
        sets.append(SetInfo("source:human", "source", (prepare,), "train.jsonl", {"source": "human"}))
        for source in spec.sources:
            # the sources' own data (generation 0; with seed_scope "data", the first seed's draw)
            gens = tuple(s for s in stages if s.kind == "generate" and s.params["source"] == source.name
                         and not s.params.get("generation") and s.params.get("data_seed") in (None, spec.seeds[0]))
            if gens:
                sets.append(SetInfo(f"source:{source.name}", "source", gens, "synthetic.jsonl",
                                    {"source": source.name, "tier": tier_of.get(source.name)}))

    embedder = _embedder_settings(spec)
    new: list[Stage] = []
    embeds: dict[str, Stage] = {}
    for info in sets:
        embeds[info.name] = Stage(
            "embed", _slug(info.name), settings={"embedder": embedder, "set": info.name, "file": info.file},
            inputs=info.producers, params={"set": info},
        )
    new += embeds.values()

    vanilla = {name: t for name, t in zip(_target_names(spec), spec.targets, strict=True)}
    metrics = [m.model_dump(mode="json") for m in metric_specs(spec)]
    wants_ppl = any(m["name"].endswith("perplexity") for m in metrics)
    evaluates: list[Stage] = []
    first_target = next(iter(vanilla.items()))
    for info in sets:
        scores: list[Stage] = []
        if wants_ppl and info.kind in ("condition", "human"):
            tname = info.labels.get("target") or first_target[0]
            scorer = vanilla[tname]
            scores.append(Stage(
                "score", f"{_slug(info.name)}-by-vanilla-{tname}" if info.kind == "condition"
                else f"human-test-by-vanilla-{tname}",
                settings={"scorer": model_key_settings(scorer), "set": info.name, "file": info.file,
                          "system_prompt": spec.decoding.system_prompt},
                inputs=info.producers, params={"set": info, "role": "outputs", "model": scorer,
                                               "batch_size": spec.collapse.score_batch_size},
            ))
            if info.kind == "condition":
                cond = info.labels["condition"]
                train = trains.get((tname, cond, info.labels["seed"], info.labels.get("generation", 0)))
                # the vanilla target scoring the human references is one stage, shared by the
                # human reference set (its output perplexity) and the vanilla condition
                scorer_label = _slug(info.name) if train else f"vanilla-{tname}"
                scores.append(Stage(
                    "score", f"human-test-by-{scorer_label}",
                    settings={"scorer": model_key_settings(scorer), "set": "human:test", "file": "test.jsonl",
                              "system_prompt": spec.decoding.system_prompt},
                    inputs=(prepare,) + ((train,) if train else ()),
                    params={"set": sets[0], "role": "human", "model": scorer,
                            "batch_size": spec.collapse.score_batch_size},
                ))
        new += scores
        inputs = (*info.producers, embeds[info.name], embeds["human:test"], *scores)
        evaluates.append(Stage(
            "evaluate", _slug(info.name),
            settings={"set": info.name, "metrics": metrics, "bootstrap": spec.collapse.bootstrap,
                      "jackknife_groups": spec.collapse.jackknife_groups, "confidence": spec.collapse.confidence,
                      "seed": spec.collapse.seed},
            inputs=tuple(dict.fromkeys(inputs)), params={"set": info},
        ))
    new += evaluates
    new = list({s.label: s for s in new}.values())  # shared stages appear once
    # all scoring by the vanilla target first, so the model pool loads it once
    new.sort(key=lambda s: (("embed", "score", "evaluate").index(s.kind),
                            any(i.kind == "train" for i in s.inputs) if s.kind == "score" else 0))
    new.append(Stage("stats", "collapse", settings={"confidence": spec.collapse.confidence,
                                                    "seed": spec.collapse.seed},
                     inputs=tuple(evaluates), params={}))
    return stages + new


def response_set_name(params: dict[str, Any]) -> str:
    """``target/condition/seedS`` (and ``/genG`` for generations after the first)."""
    generation = params.get("generation", 0)
    return (f"{params['target_name']}/{params['condition'].label}/seed{params['seed']}"
            + (f"/gen{generation}" if generation else ""))


def _target_names(spec: ExperimentSpec) -> list[str]:
    from collapselab.pipeline.graph import target_names

    return target_names(spec.targets)


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace(":", "-").replace("/", "--")).strip("_")


# -- runners ---------------------------------------------------------------------------------------
def read_set_rows(ctx, info: SetInfo) -> list[dict[str, Any]]:
    """The rows of a text set, as (id, text, prompt) dicts in a stable order."""
    from collapselab.store.atomic import read_jsonl

    rows = []
    for producer in info.producers:
        for r in read_jsonl(ctx.input_dir(producer) / info.file):
            if "prompt_id" in r:  # respond / generate output
                rows.append({"id": r["prompt_id"], "text": r["response"], "prompt": r["prompt"]})
            else:  # prepare: human references
                rows.append({"id": r["id"], "text": r["response"], "prompt": r["user"]})
    return rows


def run_embed(ctx) -> None:
    """Sentences and embeddings of one text set."""
    import pandas as pd

    from collapselab.metrics.text import sentences_of
    from collapselab.store.atomic import write_bytes, write_json

    info: SetInfo = ctx.stage.params["set"]
    rows = read_set_rows(ctx, info)
    sentences = [sentences_of(r["text"]) for r in rows]
    flat = [s for sents in sentences for s in sents]
    ctx.set_total(len(rows) + len(flat))
    embedder = _embedder(ctx.spec.collapse.embedding_model)
    text_emb = embedder.encode([r["text"] for r in rows], batch_size=ctx.spec.collapse.embedding_batch_size,
                               progress=ctx.advance)
    sent_emb = embedder.encode(flat, batch_size=ctx.spec.collapse.embedding_batch_size, progress=ctx.advance)
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(sentences)]) if flat else np.zeros(0, int)
    table = pd.DataFrame({"item_id": [rows[i]["id"] for i in owner], "sentence": flat,
                          "owner": owner.astype(np.int64)})
    table.to_parquet(ctx.out / "sentences.parquet", index=False)
    write_bytes(ctx.out / "embeddings.npy", _npy(text_emb.astype(np.float32)))
    write_bytes(ctx.out / "sentence_embeddings.npy", _npy(sent_emb.astype(np.float32)))
    write_json(ctx.out / "ids.json", [r["id"] for r in rows])


@functools.lru_cache(maxsize=1)
def _embedder(model: str | None):
    """One embedding model per process: every embed stage of a run reuses it."""
    from collapselab.metrics.embeddings import Embedder

    return Embedder(model) if model else Embedder()


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_npy(path) -> np.ndarray:
    """Load an embedding file; never unpickles."""
    return np.load(path, allow_pickle=False)


def run_score(ctx) -> None:
    """Per-token log-probabilities of a set's texts under one model (teacher-forced)."""
    from collapselab.models.base import ChatPrompt
    from collapselab.store.atomic import write_json, write_jsonl

    p = ctx.stage.params
    info: SetInfo = p["set"]
    rows = read_set_rows(ctx, info)
    model_spec = p["model"].model_copy(update={"batch_size": p["batch_size"]})
    trains = [s for s in ctx.stage.inputs if s.kind == "train"]
    if trains:
        model_spec = model_spec.model_copy(update={"adapter": str(ctx.input_dir(trains[0]) / "adapter")})
    ctx.set_total(len(rows))
    model = ctx.models.get(model_spec)
    system = ctx.stage.settings["system_prompt"]
    prompts = [ChatPrompt(r["id"], r["prompt"], system) for r in rows]
    logprobs = model.continuation_logprobs(prompts, [r["text"] for r in rows], progress=ctx.advance)
    write_jsonl(ctx.out / "logprobs.jsonl",
                [{"id": r["id"], "n_tokens": len(lp), "logprobs": [round(float(x), 6) for x in lp]}
                 for r, lp in zip(rows, logprobs, strict=True)])
    write_json(ctx.out / "summary.json", {"set": info.name, "role": p["role"], "model": model_spec.id,
                                          "adapter": model_spec.adapter is not None, "texts": len(rows),
                                          "tokens": int(sum(len(lp) for lp in logprobs))})


def load_textset(ctx, stage: Stage) -> Any:
    """Assemble the TextSet an evaluate stage measures, from its producers, embeds and scores."""
    import pandas as pd

    from collapselab.metrics.base import TextSet
    from collapselab.store.atomic import read_jsonl

    info: SetInfo = stage.params["set"]

    def embedded(set_name: str, kind: str, rows: list[dict]) -> TextSet:
        emb_stage = next(s for s in stage.inputs if s.kind == "embed" and s.settings["set"] == set_name)
        folder = ctx.input_dir(emb_stage)
        sent = pd.read_parquet(folder / "sentences.parquet")
        owner = sent["owner"].to_numpy()
        sentences: list[list[str]] = [[] for _ in rows]
        for o, text in zip(owner, sent["sentence"], strict=True):
            sentences[o].append(text)
        return TextSet(set_name, kind, [r["id"] for r in rows], [r["text"] for r in rows], sentences=sentences,
                       embeddings=load_npy(folder / "embeddings.npy"),
                       sentence_embeddings=load_npy(folder / "sentence_embeddings.npy"), sentence_owner=owner)

    rows = read_set_rows(ctx, info)
    human_stage = next(s for s in stage.inputs if s.kind == "embed" and s.settings["set"] == "human:test")
    human_rows = read_set_rows(ctx, human_stage.params["set"])
    texts = embedded(info.name, info.kind, rows)
    texts.human = texts if info.name == "human:test" else embedded("human:test", "human", human_rows)
    for score in (s for s in stage.inputs if s.kind == "score"):
        records = {r["id"]: np.asarray(r["logprobs"]) for r in read_jsonl(ctx.input_dir(score) / "logprobs.jsonl")}
        if score.settings["set"] == info.name:  # this set's texts under the vanilla target
            texts.logprobs = [records[i] for i in texts.ids]
        if score.settings["set"] == "human:test":  # the human references under this set's model
            texts.human_logprobs = [records[r["id"]] for r in human_rows]
    texts.meta = {"labels": info.labels}
    return texts


def run_evaluate(ctx) -> None:
    """The metric suite on one text set, with bootstrap intervals."""
    from collapselab.metrics.evaluate import evaluate_textset
    from collapselab.store.atomic import write_json

    stage = ctx.stage
    info: SetInfo = stage.params["set"]
    texts = load_textset(ctx, stage)
    specs = [MetricSpec(**m) for m in stage.settings["metrics"]]
    ctx.set_total(len(specs))
    labels = {"set_name": info.name, "set_kind": info.kind, **{k: info.labels.get(k) for k in
              ("condition", "target", "seed", "source")}, "generation": info.labels.get("generation", 0)}
    from threadpoolctl import threadpool_limits

    # The metrics' linear algebra is on small matrices (384-d): one BLAS thread is as fast on a
    # quiet machine and up to 100x faster on a busy one (spinning OpenBLAS threads).
    with threadpool_limits(1):
        aggregates, per_item, details = evaluate_textset(
            texts, specs, labels, bootstrap=stage.settings["bootstrap"],
            jackknife_groups=stage.settings["jackknife_groups"], confidence=stage.settings["confidence"],
            seed=stage.settings["seed"], progress=ctx.advance,
        )
    aggregates.to_parquet(ctx.out / "aggregates.parquet", index=False)
    per_item.to_parquet(ctx.out / "per_item.parquet", index=False)
    write_json(ctx.out / "details.json", json.loads(json.dumps(details, default=_jsonable)))
    write_json(ctx.out / "set.json", {"name": info.name, "kind": info.kind, "labels": info.labels,
                                      "texts": len(texts)})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def run_stats(ctx) -> None:
    """Tests across conditions, metric concordance and the factorial analysis."""
    import pandas as pd

    from collapselab.stats.collapse import collapse_statistics

    aggregates = pd.concat([pd.read_parquet(ctx.input_dir(s) / "aggregates.parquet") for s in ctx.stage.inputs],
                           ignore_index=True)
    per_item = pd.concat([pd.read_parquet(ctx.input_dir(s) / "per_item.parquet") for s in ctx.stage.inputs],
                         ignore_index=True)
    labels = {s.params["set"].name: s.params["set"].labels for s in ctx.stage.inputs}
    collapse_statistics(aggregates, per_item, labels, ctx.out, seed=ctx.stage.settings["seed"])
