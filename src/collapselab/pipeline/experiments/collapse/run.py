"""Experiment 1's runners: embed, score, evaluate, stats, embedding_map."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from collapselab.config.spec import MetricSpec
from collapselab.pipeline.context import StageContext
from collapselab.pipeline.experiments.collapse.params import SetInfo
from collapselab.pipeline.stage import Stage
from collapselab.store.jsonsafe import jsonable


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


def run_sample(ctx) -> None:
    """k answers per test prompt (``collapse.samples``): the cell's model answers each of the first
    ``prompts`` test prompts k times; answer j of prompt P has the id ``P#j``, which seeds its
    sampling, so every answer is its own draw and a resumed stage redraws exactly the same text."""
    from collapselab.pipeline.experiments.spine.run import answer_rows
    from collapselab.store.atomic import read_jsonl

    p = ctx.stage.params
    samples = ctx.spec.collapse.samples
    test = read_jsonl(ctx.input_dir(ctx.stage.input("prepare")) / "test.jsonl")[:samples.prompts]
    rows = [{**r, "id": f"{r['id']}#{j}", "item": r["id"], "sample": j} for r in test for j in range(samples.k)]
    target = p.target
    if p.condition.kind != "vanilla":
        adapter = ctx.input_dir(ctx.stage.input("train")) / "adapter"
        target = target.model_copy(update={"adapter": str(adapter)})
    decoding = ctx.spec.decoding.model_copy(update={"seed": p.seed})
    extra = {"target": p.target_name, "condition": p.condition.label}
    answer_rows(ctx, target, rows, decoding, extra, "samples.jsonl",
                row_fields=lambda r: {"item": r["item"], "sample": r["sample"]})


def run_embed(ctx) -> None:
    """Sentences and embeddings of one text set."""
    import pandas as pd

    from collapselab.metrics.text import sentences_of
    from collapselab.store.atomic import write_bytes, write_json

    info: SetInfo = ctx.stage.params.text_set
    rows = read_set_rows(ctx, info)
    sentences = [sentences_of(r["text"]) for r in rows]
    flat = [s for sents in sentences for s in sents]
    ctx.set_total(len(rows) + len(flat))
    embedder = _embedder(ctx.spec.collapse.embedding_model)
    long_texts = ctx.spec.collapse.embedding_long_texts
    texts = [r["text"] for r in rows]
    text_emb = embedder.encode(texts, batch_size=ctx.spec.collapse.embedding_batch_size, progress=ctx.advance,
                               long_texts=long_texts)
    sent_emb = embedder.encode(flat, batch_size=ctx.spec.collapse.embedding_batch_size, progress=ctx.advance,
                               long_texts=long_texts)
    # how many texts the model could not read in one pass: chunked, or embedded from their beginning
    n_text, n_sent = embedder.token_counts(texts), embedder.token_counts(flat)
    write_json(ctx.out / "summary.json", {
        "set": info.name, "long_texts": long_texts, "window": embedder.window, "texts": len(texts),
        "texts_over_window": int((n_text > embedder.window).sum()),
        "share_texts_over_window": float((n_text > embedder.window).mean()) if len(texts) else 0.0,
        "max_text_pieces": int(n_text.max()) if len(texts) else 0,
        "sentences": len(flat), "sentences_over_window": int((n_sent > embedder.window).sum()),
        "share_sentences_over_window": float((n_sent > embedder.window).mean()) if flat else 0.0,
    })
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
    info: SetInfo = p.text_set
    rows = read_set_rows(ctx, info)
    model_spec = p.model.model_copy(update={"batch_size": p.batch_size})
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
    write_json(ctx.out / "summary.json", {"set": info.name, "role": p.role, "model": model_spec.id,
                                          "adapter": model_spec.adapter is not None, "texts": len(rows),
                                          "tokens": int(sum(len(lp) for lp in logprobs))})


def load_textset(ctx, stage: Stage) -> Any:
    """Assemble the TextSet an evaluate stage measures, from its producers, embeds and scores."""
    import pandas as pd

    from collapselab.metrics.base import TextSet
    from collapselab.store.atomic import read_jsonl

    info: SetInfo = stage.params.text_set

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
    human_rows = read_set_rows(ctx, human_stage.params.text_set)
    if info.file == "samples.jsonl":  # k answers per prompt: one item per prompt
        return _samples_textset(ctx, stage, info, rows, embedded("human:test", "human", human_rows))
    texts = embedded(info.name, info.kind, rows)
    texts.human = texts if info.name == "human:test" else embedded("human:test", "human", human_rows)
    for score in (s for s in stage.inputs if s.kind == "score"):
        records = {r["id"]: np.asarray(r["logprobs"]) for r in read_jsonl(ctx.input_dir(score) / "logprobs.jsonl")}
        if score.settings["set"] == info.name:  # this set's texts under the vanilla target
            texts.logprobs = [records[i] for i in texts.ids]
        if score.settings["set"] == "human:test":
            by_vanilla = not any(i.kind == "train" for i in score.inputs)
            references = [records[r["id"]] for r in human_rows]
            if by_vanilla:  # the references under the set's scoring model (output_perplexity_gap)
                texts.human.logprobs = references
            # the references under this set's own model: the fine-tuned one where there is one
            if not by_vanilla or texts.human_logprobs is None:
                texts.human_logprobs = references
    mixes = [s for s in stage.inputs if s.kind == "mix"]
    if mixes:  # the training data of the set's model (the memorization metrics)
        texts.training_texts = [e["response"] for e in read_jsonl(ctx.input_dir(mixes[0]) / "train.jsonl")]
    texts.meta = {"labels": info.labels}
    return texts


def _samples_textset(ctx, stage: Stage, info: SetInfo, rows: list[dict], human: Any) -> Any:
    """The TextSet of a set of k answers per prompt: item i is a prompt (its id), ``samples[i]``
    its answers in sample order and ``sample_embeddings[i]`` their embeddings; ``texts[i]`` the
    first answer."""
    from collapselab.metrics.base import TextSet
    from collapselab.store.atomic import read_jsonl

    emb_stage = next(s for s in stage.inputs if s.kind == "embed" and s.settings["set"] == info.name)
    vectors = load_npy(ctx.input_dir(emb_stage) / "embeddings.npy")
    records = [r for producer in info.producers for r in read_jsonl(ctx.input_dir(producer) / info.file)]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r["item"], []).append(i)
    ids = list(groups)
    order = {item: sorted(idx, key=lambda i: records[i]["sample"]) for item, idx in groups.items()}
    samples = [[records[i]["response"] for i in order[item]] for item in ids]
    texts = TextSet(info.name, info.kind, ids, [s[0] for s in samples], samples=samples,
                    sample_embeddings=[vectors[order[item]] for item in ids])
    texts.human = human
    texts.meta = {"labels": info.labels}
    return texts


def run_evaluate(ctx) -> None:
    """The metric suite on one text set, with bootstrap intervals."""
    from collapselab.metrics.evaluate import evaluate_textset
    from collapselab.store.atomic import write_json

    stage = ctx.stage
    info: SetInfo = stage.params.text_set
    texts = load_textset(ctx, stage)
    specs = [MetricSpec(name=m["name"], settings=m["settings"]) for m in stage.settings["metrics"]]
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
    write_json(ctx.out / "details.json", json.loads(json.dumps(details, default=jsonable)))
    write_json(ctx.out / "set.json", {"name": info.name, "kind": info.kind, "labels": info.labels,
                                      "texts": len(texts)})


def run_stats(ctx) -> None:
    """Tests across conditions, metric concordance and the factorial analysis."""
    import pandas as pd

    from collapselab.stats.collapse import collapse_statistics

    aggregates = pd.concat([pd.read_parquet(ctx.input_dir(s) / "aggregates.parquet") for s in ctx.stage.inputs],
                           ignore_index=True)
    per_item = pd.concat([pd.read_parquet(ctx.input_dir(s) / "per_item.parquet") for s in ctx.stage.inputs],
                         ignore_index=True)
    labels = {s.params.text_set.name: s.params.text_set.labels for s in ctx.stage.inputs}
    collapse_statistics(aggregates, per_item, labels, ctx.out, seed=ctx.stage.settings["seed"],
                        paired=ctx.stage.settings.get("stats", {}).get("paired", True))


def run_embedding_map(ctx: StageContext) -> None:
    """A 2-D map of every text set's embeddings: one PCA over all of them, so every set shares the
    axes (the report draws it; it never recomputes). Columns: set_name, set_kind, condition,
    item_id, x, y (x, y absent when there are fewer than two texts)."""
    import pandas as pd

    from collapselab.store.frames import write_parquet

    frames, vectors = [], []
    embeds = [s for s in ctx.stage.inputs if s.kind == "embed"]
    ctx.set_total(len(embeds) + 1)
    for s in embeds:
        info = s.params.text_set
        folder = ctx.input_dir(s)
        ids = json.loads((folder / "ids.json").read_text())
        frames.append(pd.DataFrame({"set_name": info.name, "set_kind": info.kind,
                                    "condition": info.labels.get("condition") or info.labels.get("source"),
                                    "item_id": ids}))
        vectors.append(load_npy(folder / "embeddings.npy"))
        ctx.advance(1)
    embedding_map = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if vectors and sum(len(v) for v in vectors) >= 2:
        x = np.concatenate(vectors).astype(np.float64)
        x -= x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        embedding_map["x"] = xy[:, 0]
        embedding_map["y"] = xy[:, 1] if xy.shape[1] > 1 else 0.0
    write_parquet(embedding_map, ctx.out / "embedding_map.parquet")
    ctx.advance(1)
