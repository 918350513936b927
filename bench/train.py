"""Benchmark: collapselab's LoRA recipe (:func:`~collapselab.train.lora.train_lora`) against the
standard way to run the same fine-tuning — peft + transformers ``Trainer`` — on the same examples
and settings in the same run, and against the recipe's own full-logits path.

    python bench/train.py                        # SmolLM2-135M-Instruct, 64 Austen examples, batch 8, 1 epoch
    python bench/train.py --quick --no-record    # the tiny random-init model, 16 examples: seconds

Three sides, each a whole fine-tuning run from the model folder to a saved adapter, one after the
other in one process, after an untimed warm-up run of each on ``--warmup`` examples (the first
run in a process pays one-off costs: imports, thread pools, kernel set-up); ``--repeat`` runs them
again in rotated order and keeps each side's best:

1. **ours**: ``train_lora`` as the train stage calls it; the LM head and the log-softmax run only
   at the positions whose next token is a label (transformers' ``logits_to_keep`` with a boolean
   mask): with the completion loss the prompt (~52% of the tokens of these examples) and the
   padding need no logits.
2. **ours, full logits**: ``train_lora(full_logits=True)``, the recipe as it was before: logits at
   every position (the LM head of SmolLM2-135M, 49,152 × 576, is about a fifth of its forward
   pass), the label positions selected from them.
3. **Trainer**: the standard way, TRL's ``SFTTrainer`` minus its data preparation (TRL is not
   installed here): ``AutoModelForCausalLM`` (float32 weights) + ``peft.get_peft_model`` + a
   ``transformers.Trainer`` with ``bf16=True`` (CPU autocast, ``use_cpu`` without a GPU),
   ``optim="adamw_torch"``, the same learning rate, cosine schedule and warmup steps
   (``ceil(warmup_ratio · steps)``), weight decay, gradient clipping (1.0), batch size, gradient
   accumulation and seed, 1 epoch, and ``DataCollatorForSeq2Seq`` (right padding, labels padded
   with -100). Its examples are collapselab's encodings (same chat template, same tokens) with
   the completion-only labels TRL builds for prompt–completion data (-100 on the prompt), so the
   model computes the loss itself: logits at every position, upcast to float32, cross-entropy
   over the label positions. It gets them in collapselab's shuffled order with
   ``train_sampling_strategy="sequential"``, so every side runs the same micro-batches and the
   per-step losses can be compared step by step.

Settings on every side: ``LoraSpec`` defaults (the study's: r 16, α 32, dropout 0.1 on
q/k/v/o/gate/up/down, lr 5e-5, cosine, 3% warmup, weight decay 0.01, bf16, max length 1,024), batch
8, 1 epoch, no validation split (``val_fraction`` 0: the Trainer evaluates nothing either), seed
42, ``--threads`` torch threads.

What is counted: tokens are the non-padding tokens (prompt and answer) fed through training forward
passes (``TrainResult.train_tokens``; the same on every side). **tok/s** is over the steady loop:
the tokens of optimizer steps 2..n divided by the time from the end of step 1 to the end of step n
(step ends from ``train_lora``'s progress callback and a ``TrainerCallback.on_step_end``), so model
loading, tokenisation, the first step's one-off costs and saving are out; the end-to-end time
(model folder to saved adapter) is reported with it. Loss: each side's per-step training loss
(the token-weighted mean over the step's label tokens on all three), the last step's, and the
largest relative per-step difference from ours. The two collapselab paths compute the same loss
(equal to rounding); the Trainer draws other dropout masks (it reseeds before training), so its
losses differ by dropout noise (``--dropout 0`` removes it).

Examples: ``--examples`` seeded Austen continuation tasks (:mod:`collapselab.corpora.austen`, the
packaged corpus; the study's system prompt). Appends a dated row to the ``## train`` table of
bench/RESULTS.md (a new section goes before ``## gpu``, which stays last); ``--no-record``: don't,
``--out``: write everything as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network timeout
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/judges.py: spinning threads on 2 shared cores

import torch  # noqa: E402
from _machine import append_table_rows, cpu_model  # noqa: E402  # bench/ is on sys.path when a script runs

from collapselab.config.spec import STUDY_SYSTEM_PROMPT, LoraSpec  # noqa: E402
from collapselab.errors import DataError  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.train.lora import (  # noqa: E402
    IGNORE_INDEX,
    MAX_GRAD_NORM,
    TrainExample,
    _optimizer_steps,
    encode_examples,
    matching_targets,
    train_lora,
)

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## train"
BEFORE = "## gpu"  # the section the new one is put in front of (gpu.py appends its rows at the file's end)
SIDES = ("ours", "ours_full_logits", "trainer")
LABELS = {"ours": "ours", "ours_full_logits": "ours, full logits", "trainer": "Trainer"}
SECTION_HEADER = """## train

`python bench/train.py` — LoRA fine-tuning throughput of collapselab's recipe (`train_lora`: the LM
head and log-softmax only at label positions, through transformers' `logits_to_keep` mask) against
the standard way, peft + transformers `Trainer` (TRL's `SFTTrainer` minus its data preparation;
logits at every position, upcast to float32 for the loss), and against the recipe's previous
full-logits path (`full_logits=True`), same run. Same examples (seeded Austen continuation tasks,
completion-only labels, the same micro-batches in the same order on every side), same settings
(`LoraSpec` defaults: r 16, α 32, dropout 0.1, lr 5e-5, cosine, 3% warmup, weight decay 0.01, bf16
autocast on float32 weights; batch 8, 1 epoch, no validation), one side after the other after an
untimed warm-up run of each. tok/s: non-padding tokens fed through training forward passes, per
second of the steady loop (optimizer steps 2..n: loading, the first step and saving are out;
end-to-end seconds in the notes). Loss: the last step's
training loss (token-weighted mean over its label tokens) of each side; "max step diff": the
largest relative per-step difference from ours (the Trainer draws other dropout masks).

"""
COLUMNS = [("date", ""), ("machine", ""), ("versions", ""), ("settings", ""), ("ours tok/s", ":"),
           ("ours full-logits tok/s", ":"), ("Trainer tok/s", ":"), ("ours / Trainer", ":"),
           ("ours / full logits", ":"), ("last-step loss: ours / full / Trainer", ""), ("notes", "")]
SECTION_HEADER += ("| " + " | ".join(name for name, _ in COLUMNS) + " |\n"
                   + "|" + "|".join("---" + align for _, align in COLUMNS) + "|\n")

FULL = {"model": "hf/smollm2-135m-instruct", "examples": 64, "batch_size": 8, "max_length": 1024,
        "threads": os.cpu_count() or 1}
QUICK = {"model": "tiny", "examples": 16, "batch_size": 4, "max_length": 512, "threads": 1}

_WORDS = ("river garden letter morning sister dance fortune carriage visit evening promise window journey "
          "weather kindness rain estate cousin music winter").split()


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def austen_examples(n: int, seed: int) -> list[TrainExample]:
    """``n`` seeded Austen continuation tasks (distinct passages) as training examples with the
    study's system prompt, as the pipeline's train stage builds them from a mix."""
    import numpy as np

    from collapselab.config.spec import CorpusSpec
    from collapselab.corpora.austen import load_austen

    records = load_austen(CorpusSpec())
    if n > len(records):
        raise SystemExit(f"the Austen corpus has {len(records)} passages; asked for {n}")
    picks = sorted(np.random.default_rng(seed).choice(len(records), size=n, replace=False).tolist())
    return [TrainExample(ChatPrompt(records[i].id, records[i].prompt, STUDY_SYSTEM_PROMPT), records[i].response,
                         records[i].id) for i in picks]


def synthetic_examples(n: int, seed: int) -> list[TrainExample]:
    """Continuation tasks of seeded word salad, for ``--quick`` where the Austen data is missing."""
    import numpy as np

    from collapselab.corpora.continuation import CONTINUATION_INSTRUCTION

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(30, 60)))]
        cut = int(len(words) * 0.4)
        out.append(TrainExample(ChatPrompt(f"s{i}", CONTINUATION_INSTRUCTION + " ".join(words[:cut]),
                                           STUDY_SYSTEM_PROMPT), " ".join(words[cut:]) + ".", f"s{i}"))
    return out


def model_folder(name: str, work: Path) -> Path:
    """The weights folder of ``name``: a packaged/hub/folder ``hf/...`` id, or ``tiny`` (built in ``work``)."""
    if name == "tiny":
        from collapselab.models.tiny import build_tiny_model

        return build_tiny_model(work / "tiny-model")
    from collapselab.config.spec import ModelSpec
    from collapselab.models.hf import resolve_weights

    return resolve_weights(ModelSpec(id=name))


def step_plan(model_dir: Path, examples: Sequence[TrainExample], lora: LoraSpec,
              seed: int) -> tuple[list[Any], list[list[int]], int]:
    """collapselab's encodings of ``examples``, its micro-batches (example indices, in training
    order) for one epoch, and the number of prompt tokens (the share the completion loss skips)."""
    from transformers import AutoTokenizer

    from collapselab.models.formatting import uses_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded, _, dropped = encode_examples(tokenizer, examples, uses_chat_template(tokenizer, "auto"),
                                          lora.max_length, lora.loss)
    if dropped:
        raise SystemExit(f"{dropped} examples have nothing to learn within max_length={lora.max_length}")
    total_steps = math.ceil(math.ceil(len(encoded) / lora.batch_size) / lora.grad_accum)
    steps = _optimizer_steps(len(encoded), lora.batch_size, lora.grad_accum, torch.Generator().manual_seed(seed))
    micro = [batch for _, (_, group) in zip(range(total_steps), steps, strict=False) for batch in group]
    return [e for _, e in encoded], micro, sum(len(e.prompt_ids) for _, e in encoded)


# --------------------------------------------------------------------------------------------------
# The three sides
# --------------------------------------------------------------------------------------------------


def run_ours(model_dir: Path, examples: Sequence[TrainExample], lora: LoraSpec, seed: int, out_dir: Path,
             *, full_logits: bool) -> dict[str, Any]:
    """One ``train_lora`` run; step-end times from its progress callback."""
    ends: list[float] = []
    started = time.perf_counter()
    result = train_lora(model_dir, examples, lora, seed=seed, out_dir=out_dir, full_logits=full_logits,
                        progress=lambda *_: ends.append(time.perf_counter()))
    seconds = time.perf_counter() - started
    curve = [json.loads(line) for line in (out_dir / "loss_curve.jsonl").read_text().splitlines()]
    return {"step_ends": [t - started for t in ends], "seconds": seconds, "tokens": result.train_tokens,
            "losses": [r["train_loss"] for r in curve]}


def run_trainer(model_dir: Path, encoded: Sequence[Any], order: Sequence[int], lora: LoraSpec, seed: int,
                out_dir: Path) -> dict[str, Any]:
    """peft + transformers ``Trainer`` on the same encodings, in the same order, same settings."""
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # after the optimizer step
            self.ends.append(time.perf_counter())

    started = time.perf_counter()
    transformers.set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=matching_targets(model, lora.target_modules),
                                             task_type="CAUSAL_LM"))
    features = []
    for i in order:  # collapselab's shuffled order; the Trainer reads it sequentially
        e = encoded[i]
        labels = e.input_ids if lora.loss == "full" else [IGNORE_INDEX] * len(e.prompt_ids) + e.answer_ids
        features.append({"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": labels})
    total_steps = math.ceil(math.ceil(len(features) / lora.batch_size) / lora.grad_accum)
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), num_train_epochs=1, per_device_train_batch_size=lora.batch_size,
        gradient_accumulation_steps=lora.grad_accum, learning_rate=lora.learning_rate,
        lr_scheduler_type="constant_with_warmup" if lora.scheduler == "constant" else lora.scheduler,
        warmup_steps=math.ceil(lora.warmup_ratio * total_steps), weight_decay=lora.weight_decay,
        max_grad_norm=MAX_GRAD_NORM, optim="adamw_torch", bf16=lora.dtype == "bfloat16",
        use_cpu=not torch.cuda.is_available(), seed=seed, train_sampling_strategy="sequential",
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False,
        dataloader_pin_memory=False, log_level="error",
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=features, callbacks=[clock],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest",
                                                           label_pad_token_id=IGNORE_INDEX))
    trainer.remove_callback(PrinterCallback)  # it prints every step's logs (there is no tqdm bar to carry them)
    trainer.train()
    model.save_pretrained(out_dir / "adapter")
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_ends": [t - started for t in clock.ends], "seconds": seconds,
            "tokens": sum(len(f["input_ids"]) for f in features), "losses": losses}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def loop_rate(run: dict[str, Any], step_tokens: Sequence[int]) -> float:
    """Tokens of steps 2..n per second between the end of step 1 and the end of step n (with a
    single step: all tokens over the whole run)."""
    ends = run["step_ends"]
    if len(ends) < 2:
        return sum(step_tokens) / run["seconds"]
    return sum(step_tokens[1:]) / (ends[-1] - ends[0])


def max_rel_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest relative difference of ``a`` from ``b``, step by step (NaN when their lengths differ)."""
    if len(a) != len(b):
        return math.nan
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "peft"))


def table_row(summary: dict[str, Any]) -> str:
    s, r = summary["settings"], summary["results"]
    settings = (f"{s['model']}, {s['examples']} {s['data']} examples ({summary['tokens']} tokens, "
                f"{summary['prompt_share']:.0%} prompt), batch {s['batch_size']}, 1 epoch = {summary['steps']} steps, "
                f"{s['threads']} threads")
    loss = " / ".join(f"{r[side]['losses'][-1]:.4f}" for side in SIDES)
    seconds = " / ".join(f"{r[side]['seconds']:.1f}" for side in SIDES)
    notes = (f"end-to-end s: {seconds}; "
             f"max step diff from ours: full logits {summary['diff_full']:.1e}, Trainer {summary['diff_trainer']:.1e}; "
             f"warm-up {s['warmup']} examples, best of {s['repeat']}; "
             f"load avg {summary['load_avg'][0]:.1f} -> {summary['load_avg'][1]:.1f}")
    cells = [summary["date"], summary["machine"], summary["versions"], settings,
             *(f"{r[side]['tok_s']:.1f}" for side in SIDES),
             f"{summary['ratio_trainer']:.2f}x", f"{summary['ratio_full']:.2f}x", loss, notes]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def record(path: Path, rows: list[str]) -> None:
    """Append ``rows`` to the ``## train`` table of ``path`` (the section, when missing, in front of ``## gpu``)."""
    append_table_rows(path, SECTION, SECTION_HEADER, rows, before=BEFORE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny random-init model, 16 examples (seconds)")
    for name, value in FULL.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                            help=f"default {value} ({QUICK[name]} with --quick)")
    parser.add_argument("--dropout", type=float, default=None, help="LoRA dropout (default the study's 0.1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="examples of an untimed first run of every side (default 2 batches; 0: none)")
    parser.add_argument("--repeat", type=int, default=1, help="run the three sides this many times, rotating "
                        "their order; each side's best loop rate is kept")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--record", type=Path, default=None,
                        help=f"append the row to this RESULTS.md (default {RESULTS}; none with --quick)")
    parser.add_argument("--no-record", action="store_true", help="do not append to any RESULTS.md")
    parser.add_argument("--out", type=Path, default=None, help="write every result (JSON) here")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.examples < 2 or args.batch_size < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--examples must be at least 2; --batch-size, --threads and --repeat at least 1")
    if args.warmup is None:
        args.warmup = 2 * args.batch_size
    if args.warmup and not 2 <= args.warmup <= args.examples:
        parser.error("--warmup must be 0 or between 2 and --examples")
    if args.record is None and not args.quick:
        args.record = RESULTS
    if args.no_record:
        args.record = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    lora = LoraSpec(epochs=1, batch_size=args.batch_size, max_length=args.max_length, val_fraction=0.0,
                    **({} if args.dropout is None else {"dropout": args.dropout}))
    data = "Austen"
    try:
        examples = austen_examples(args.examples, args.seed)
    except (DataError, ImportError) as exc:  # the corpus (or the rdata package reading it) is not installed
        if not args.quick:
            raise
        print(f"Austen corpus unavailable ({exc}): synthetic continuation tasks instead")
        examples, data = synthetic_examples(args.examples, args.seed), "synthetic"

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        model_dir = model_folder(args.model, work)
        encoded, micro, prompt_tokens = step_plan(model_dir, examples, lora, args.seed)
        accum = lora.grad_accum
        step_tokens = [sum(len(encoded[i].input_ids) for batch in micro[k:k + accum] for i in batch)
                       for k in range(0, len(micro), accum)]

        def run_side(side: str, subset: Sequence[TrainExample], out: Path) -> dict[str, Any]:
            torch.set_num_threads(args.threads)
            if side == "trainer":
                plan, batches, _ = step_plan(model_dir, subset, lora, args.seed)
                return run_trainer(model_dir, plan, [i for batch in batches for i in batch], lora, args.seed, out)
            return run_ours(model_dir, subset, lora, args.seed, out, full_logits=side == "ours_full_logits")

        if args.warmup:  # untimed: the first run in a process pays one-off costs (imports, thread pools, kernels)
            for side in SIDES:
                run_side(side, examples[:args.warmup], work / f"warmup-{side}")
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for repeat in range(args.repeat):
            for k in range(len(SIDES)):
                side = SIDES[(k + repeat) % len(SIDES)]
                run = run_side(side, examples, work / f"{side}-{repeat}")
                run["tok_s"] = loop_rate(run, step_tokens)
                run["threads"] = torch.get_num_threads()
                runs[side].append(run)
                print(f"  {LABELS[side]:<18} {run['tok_s']:8.1f} tok/s (steps 2..{len(run['step_ends'])}), "
                      f"{run['seconds']:6.1f} s end to end, last-step loss {run['losses'][-1]:.4f}", flush=True)
    load_after = os.getloadavg()[0]

    best = {side: max(runs[side], key=lambda r: r["tok_s"]) for side in SIDES}
    tokens = sum(step_tokens)
    problems = [f"{LABELS[side]}: {r['tokens']} tokens, {len(r['losses'])} steps"
                for side in SIDES for r in runs[side]
                if r["tokens"] != tokens or len(r["losses"]) != len(step_tokens)]
    if problems:
        print(f"sides disagree with the plan ({tokens} tokens, {len(step_tokens)} steps): {problems}")
    summary = {
        "date": dt.date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "versions": versions(), "settings": {k: v for k, v in vars(args).items() if k not in ("record", "out")}
        | {"data": data, "model": args.model}, "lora": lora.model_dump(mode="json"),
        "tokens": tokens, "prompt_share": prompt_tokens / tokens, "steps": len(step_tokens),
        "step_tokens": step_tokens, "load_avg": [load_before, load_after], "results": best, "runs": runs,
        "ratio_trainer": best["ours"]["tok_s"] / best["trainer"]["tok_s"],
        "ratio_full": best["ours"]["tok_s"] / best["ours_full_logits"]["tok_s"],
        "diff_full": max_rel_diff(best["ours_full_logits"]["losses"], best["ours"]["losses"]),
        "diff_trainer": max_rel_diff(best["trainer"]["losses"], best["ours"]["losses"]),
        "ok": not problems,
    }
    print(f"{tokens} tokens ({summary['prompt_share']:.0%} prompt) in {summary['steps']} steps, {data} examples; "
          f"ours / Trainer {summary['ratio_trainer']:.2f}x, ours / full logits {summary['ratio_full']:.2f}x; "
          f"per-step losses vs ours: full logits {summary['diff_full']:.1e}, Trainer {summary['diff_trainer']:.1e} "
          f"relative at most; load avg {load_before:.1f} -> {load_after:.1f}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1, default=str))
    if args.record:
        record(args.record, [table_row(summary)])
        print(f"recorded in {args.record}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
