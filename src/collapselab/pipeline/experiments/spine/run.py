"""The spine's runners: prepare, generate, mix, train, respond (and :func:`answer_rows`, which
every stage that has a model answer prompts uses). A runner reads its inputs' folders and writes
into ``ctx.out`` (the stage's partial folder); the executor commits the folder when it returns."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import DataError
from collapselab.models.base import ChatPrompt
from collapselab.pipeline.context import StageContext
from collapselab.store.atomic import read_jsonl, write_json, write_jsonl


# -- prepare ---------------------------------------------------------------------------------------
def run_prepare(ctx: StageContext) -> None:
    """Load the human corpus, split it (stratified, seeded) and cut the train prompts into shards."""
    from collapselab.corpora.base import CORPORA
    from collapselab.corpora.split import format_prompt, make_shards, split_records

    spec = ctx.spec
    records = CORPORA.get(spec.corpus.kind)(spec.corpus)
    if not records:
        raise DataError(f"corpus {spec.corpus.kind!r} ({spec.corpus.path or spec.corpus.name or 'built-in'}) is empty")
    train, test = split_records(records, spec.split)
    shards = make_shards(train, spec.n_shards, spec.split.seed)
    shard_of = {r.id: i for i, shard in enumerate(shards) for r in shard}

    def row(r: Any, **extra: Any) -> dict[str, Any]:
        return {**r.to_dict(), "user": format_prompt(r, spec.corpus.context_first), **extra}

    write_jsonl(ctx.out / "train.jsonl", [row(r, shard=shard_of[r.id]) for r in train])
    write_jsonl(ctx.out / "test.jsonl", [row(r) for r in test])
    write_json(ctx.out / "summary.json", {
        "corpus_records": len(records), "train": len(train), "test": len(test),
        "shards": [len(s) for s in shards],
        "train_categories": dict(Counter(r.category for r in train)),
        "test_categories": dict(Counter(r.category for r in test)),
    })


# -- generate / respond (shared) -------------------------------------------------------------------
def answer_rows(ctx: StageContext, model_spec: ModelSpec, rows: list[dict], decoding: DecodingSpec,
                extra: dict[str, Any], output: str,
                row_fields: Callable[[dict], dict[str, Any]] | None = None) -> None:
    """A model answers ``rows`` (each with ``id``, ``user``, ``category`` and, for human data, the
    reference ``response``), resumably; writes ``output`` and ``summary.json`` into the stage.
    ``row_fields(row)`` adds per-row fields to each record."""
    from collapselab.synth.generate import answer_prompts

    ctx.set_total(len(rows))
    if not rows:  # e.g. a shard's part that a clamped mix boundary leaves empty: no model to load
        write_jsonl(ctx.out / output, [])
        write_json(ctx.out / "summary.json", {"n": 0, "empty_responses": 0, **extra, "model": model_spec.id})
        return
    model = ctx.models.get(model_spec)
    prompts = [ChatPrompt(r["id"], r["user"], decoding.system_prompt) for r in rows]
    decoding_json = decoding.model_dump(mode="json")

    def make_record(r: dict, g: Any) -> dict[str, Any]:
        return {
            "prompt_id": r["id"], "prompt": r["user"], "category": r["category"], "response": g.text,
            "human_response": r.get("response"), **(row_fields(r) if row_fields else {}), **extra,
            "model": model_spec.id, "decoding": decoding_json, "seed": decoding.seed,
            "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens, "finish_reason": g.finish_reason,
        }

    records, summary = answer_prompts(
        model, rows, prompts, decoding, ctx.out, make_record,
        chunk_size=max(1, model_spec.batch_size * 2), progress=ctx.advance,
    )
    write_jsonl(ctx.out / output, records)
    write_json(ctx.out / "summary.json", {**summary, **extra, "model": model_spec.id})
    (ctx.out / "partial.jsonl").unlink(missing_ok=True)


def run_generate(ctx: StageContext) -> None:
    """A source answers one shard of the train prompts (with ``part``: only those of them that a
    multi-source condition assigns to the source)."""
    p = ctx.stage.params
    prepare = ctx.stage.input("prepare")
    train = read_jsonl(ctx.input_dir(prepare) / "train.jsonl")
    rows = [r for r in train if r["shard"] == p.shard]
    model: ModelSpec = p.model
    extra: dict[str, Any] = {"source": p.source, "shard": p.shard}
    if p.part is not None:
        owner = condition_owners(p.part, train, prepare.settings)
        rows = [r for r in rows if owner[r["id"]] == p.source]
        extra["part_of"] = p.part.label
    if p.chain_train is not None:  # a later generation: the previous generation's fine-tuned model
        model = model.model_copy(update={"adapter": str(ctx.input_dir(p.chain_train) / "adapter")})
        extra["generation"] = p.generation
    answer_rows(ctx, model, rows, p.decoding, extra, "synthetic.jsonl")


def run_respond(ctx: StageContext) -> None:
    """The vanilla or fine-tuned target answers the test prompts."""
    p = ctx.stage.params
    test = read_jsonl(ctx.input_dir(ctx.stage.input("prepare")) / "test.jsonl")
    target: ModelSpec = p.target
    if p.condition.kind != "vanilla":
        adapter = ctx.input_dir(ctx.stage.input("train")) / "adapter"
        target = target.model_copy(update={"adapter": str(adapter)})
    decoding = ctx.spec.decoding.model_copy(update={"seed": p.seed})
    extra = {"target": p.target_name, "condition": p.condition.label}
    answer_rows(ctx, target, test, decoding, extra, "responses.jsonl")


# -- mix -------------------------------------------------------------------------------------------
def run_mix(ctx: StageContext) -> None:
    """The training set of one condition, with provenance on every example."""
    from collapselab.synth.mix import human_examples, synthetic_examples

    cond = ctx.stage.params.condition
    prepare = ctx.stage.input("prepare")
    train = read_jsonl(ctx.input_dir(prepare) / "train.jsonl")
    dropped = 0
    shares: dict[str, Any] = {}
    removed: list[dict[str, Any]] = []  # what was left out, and why (dropped.jsonl)
    curation: dict[str, Any] = {}
    generation = ctx.stage.params.generation
    if cond.kind == "human":
        examples = human_examples(train)
    else:
        # a closed multi-source loop's later generations are written by its own model alone
        closed = generation > 0 and ctx.stage.settings.get("multi_loop") == "closed"
        owner = None if closed else condition_owners(cond, train, prepare.settings)
        examples = []
        for gen in (s for s in ctx.stage.inputs if s.kind == "generate"):
            part, empty = synthetic_examples(
                r for r in read_jsonl(ctx.input_dir(gen) / "synthetic.jsonl")
                 if owner is None or owner[r["prompt_id"]] == gen.params.source)
            examples += part
            dropped += len(empty)
            removed += empty
        order = {r["id"]: i for i, r in enumerate(train)}
        examples.sort(key=lambda e: order[e["id"]])
        # the shares are those of the generated pool, before any curation changes them
        shares = _check_shares(cond, examples, ctx.spec.split.weight_tolerance, owner)
        curates = [s for s in ctx.stage.inputs if s.kind == "curate"]
        if curates:
            examples, cut, curation = _curate(ctx, curates[0], examples)
            removed += cut
    if generation:
        examples = _next_generation(ctx, examples, train, generation)
    if not examples:
        raise DataError(f"condition {cond.label}: no training examples left (dropped {dropped} empty answers"
                        + (f", curation dropped {curation.get('curation_dropped', 0)}" if curation else "") + ")")
    if generation and ctx.stage.settings["mode"] == "accumulate-subsample":
        pool = examples  # all data so far; the generation trains on a fixed-size sample of it
        write_jsonl(ctx.out / "pool.jsonl", pool)
        examples = _subsample(ctx, pool, generation)
    write_jsonl(ctx.out / "dropped.jsonl", removed)
    write_jsonl(ctx.out / "train.jsonl", examples)
    write_json(ctx.out / "summary.json", {
        "condition": cond.label, "examples": len(examples), "dropped_empty": dropped,
        "by_origin": dict(Counter(e["origin"] for e in examples)), **shares, **curation,
        "system_prompt": ctx.stage.settings["system_prompt"],
    })


def _curate(ctx: StageContext, curate, examples: list[dict]) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """A curated condition's examples as its curate stage chose them (kept ones, repeated where
    resampled), the ones it dropped with their reasons, and the summary's curation entries."""
    from collapselab.synth.curation import apply_curation

    rows = read_jsonl(ctx.input_dir(curate) / "curation.jsonl")
    kept, cut = apply_curation(examples, rows)
    return kept, cut, {"curation": curate.settings["curation"]["name"], "curated_from": len(examples),
                       "curation_kept": len(kept), "curation_dropped": len(cut)}


def condition_owners(cond, train: list[dict], prepare_settings: dict[str, Any]) -> dict[str, str] | None:
    """For a multi-source condition, the source that answers each train prompt; None for a single
    source (:func:`collapselab.corpora.shares.source_of_prompt`)."""
    from collapselab.corpora.shares import source_of_prompt

    return source_of_prompt(cond, train, prepare_settings)


def _check_shares(cond, examples: list[dict], tolerance: float, owner: dict[str, str] | None) -> dict[str, Any]:
    """The requested and realised shares of a multi-source mix's sources (after empty answers were
    dropped), and the prompts assigned to each; a :class:`DataError` when a realised share differs
    from its weight by more than ``tolerance``."""
    if cond.kind != "multi" or owner is None:
        return {}
    counts = Counter(e["origin"] for e in examples)
    assigned = Counter(owner.values())
    n = max(1, len(examples))
    requested = dict(zip(cond.sources, cond.normalized_weights, strict=True))
    realised = {s: counts.get(s, 0) / n for s in cond.sources}
    worst = max(cond.sources, key=lambda s: abs(realised[s] - requested[s]))
    if abs(realised[worst] - requested[worst]) > tolerance:
        raise DataError(
            f"condition {cond.label}: source {worst} makes up {realised[worst]:.1%} of the {n} training examples, "
            f"{requested[worst]:.1%} were requested (split.weight_tolerance {tolerance:g}); realised: "
            + ", ".join(f"{s} {counts.get(s, 0)} ({realised[s]:.1%})" for s in cond.sources)
            + ". Empty answers are dropped: check the sources' outputs, or raise split.weight_tolerance"
        )
    return {"requested_shares": requested, "realised_shares": realised,
            "realised_counts": {s: counts.get(s, 0) for s in cond.sources},
            "assigned_counts": {s: assigned.get(s, 0) for s in cond.sources}}


def _next_generation(ctx: StageContext, new: list[dict], train: list[dict], generation: int) -> list[dict]:
    """A later generation's training set: some new examples answered by the human reference
    instead — a share (``human_fraction``, chosen per prompt by a seeded hash, so the choice does
    not depend on the order) or a count (``human_count``: the examples with the smallest hashes) —
    ids tagged with the generation, and in ``accumulate`` / ``accumulate-subsample`` mode every
    earlier example too (the latter's pool: the caller draws the training sample from it)."""
    import hashlib

    settings = ctx.stage.settings
    human = {r["id"]: r["response"] for r in train}

    def rank(e: dict) -> float:
        digest = hashlib.sha256(f"{settings['mix_seed']}\x00{generation}\x00{e['id']}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2**64

    count = settings.get("human_count")
    chosen = ({id(e) for e in sorted(new, key=rank)[:count]} if count is not None
              else {id(e) for e in new if rank(e) < settings["human_fraction"]})
    out = []
    for e in new:
        if id(e) in chosen:
            prompt = prompt_of(e["id"])
            e = {"id": e["id"], "prompt": e["prompt"], "response": human[prompt], "category": e["category"],
                 "origin": "human", "shard": e["shard"]}
        out.append({**e, "id": f"{e['id']}@g{generation}", "generation": generation})
    if settings["mode"] in ("accumulate", "accumulate-subsample"):
        previous = next(s for s in ctx.stage.inputs if s.kind == "mix")
        folder = ctx.input_dir(previous)
        # accumulate-subsample: the previous generation's pool of all data, not the sample it trained on
        pool = folder / "pool.jsonl"
        out = read_jsonl(pool if pool.exists() else folder / "train.jsonl") + out
    return out


def _subsample(ctx: StageContext, pool: list[dict], generation: int) -> list[dict]:
    """accumulate-subsample (Kazdan et al. 2025): a seeded sample without replacement of
    ``subsample`` examples (None: as many as generation 0 had) from all data so far, in pool order."""
    import numpy as np

    size = ctx.stage.settings.get("subsample") or sum(1 for e in pool if not e.get("generation"))
    if size > len(pool):
        raise DataError(f"generations.subsample: {size} examples requested in generation {generation}, but the "
                        f"pool of all data so far holds {len(pool)}; lower generations.subsample")
    rng = np.random.default_rng([ctx.stage.settings["mix_seed"], generation])
    keep = np.sort(rng.choice(len(pool), size=size, replace=False))
    return [pool[i] for i in keep]


# -- train -----------------------------------------------------------------------------------------
def prompt_of(example_id: str) -> str:
    """The train prompt an example answers: its id without a later generation's ``@gG`` tags and
    without a resampled copy's ``~K`` (curation by importance resampling)."""
    return re.sub(r"(~\d+)?(@g\d+)*$", "", example_id)


def train_examples(mix: list[dict], system: str | None, *, by_prompt: bool) -> list[Any]:
    """A mix's rows as :class:`~collapselab.train.lora.TrainExample`; with ``by_prompt`` (an
    accumulated generation: one example per prompt and generation, ids ``ID@gG``) each carries its
    prompt as ``group``, so the validation split keeps a prompt's examples on one side (audit c7).
    Without it every example is its own group: the split stays the plain one by example id."""
    from collapselab.train.lora import TrainExample

    return [TrainExample(ChatPrompt(e["id"], e["prompt"], system), e["response"], e["id"],
                         group=prompt_of(e["id"]) if by_prompt else None) for e in mix]


def run_train(ctx: StageContext) -> None:
    """LoRA fine-tuning of one target on one condition's training set with one seed."""
    from collapselab.models.hf import resolve_weights
    from collapselab.train.lora import train_lora

    p = ctx.stage.params
    target: ModelSpec = p.target
    # a 'vllm' target is trained with transformers on the same weights (resolve_weights), then
    # served by vLLM with the adapter as a LoRA request
    if target.backend not in ("hf", "vllm", "toy"):
        raise DataError(f"target {target.id}: only 'hf' targets (and 'vllm' ones, trained as 'hf' ones; 'toy' ones, "
                        "refitted by counting) can be fine-tuned")
    ctx.models.close()  # free the sampling model's memory before training
    mix = read_jsonl(ctx.input_dir(ctx.stage.input("mix")) / "train.jsonl")
    system = ctx.stage.input("mix").settings["system_prompt"]
    examples = train_examples(mix, system, by_prompt=ctx.stage.settings.get("val_split") == "prompt")

    def progress(step: int, total: int, loss: float) -> None:
        ctx.set_total(total)
        ctx.advance(1)

    if target.backend == "toy":  # the ground-truth loop: a categorical model refitted by counting
        from collapselab.train.toy import train_toy

        train_toy(target, examples, out_dir=ctx.out, seed=p.seed, progress=progress)
        return

    lora = ctx.spec.lora_for(p.target_name)
    if lora.strategy == "fsdp":  # several processes on this node (the stage's GPUs under Ray)
        from collapselab.train.distributed import launch_fsdp, training_processes

        launch_fsdp(resolve_weights(target), examples, lora, seed=p.seed, out_dir=ctx.out,
                    processes=training_processes(ctx.spec.run), chat_mode=target.chat, progress=progress,
                    threads=ctx.spec.run.threads, nodes=ctx.spec.run.nodes, ray_address=ctx.spec.run.ray_address)
        return
    train_lora(resolve_weights(target), examples, lora, seed=p.seed, out_dir=ctx.out,
               chat_mode=target.chat, progress=progress)
