"""Benchmark: ``HFModel.generate`` (batched, left-padded, per-prompt seeded sampling) against two
baselines on the packaged SmolLM2-135M-Instruct, same loaded model, dtype and decoding settings
(temperature, top-p, max new tokens), in the same run:

- **naive**: the loop it replaces, transformers' ``model.generate(do_sample=True)`` called once per
  prompt, seeded per prompt;
- **batched**: transformers' own batched sampling, ``model.generate(do_sample=True)`` on the very
  batches ``HFModel.generate`` builds (same batch size, same prompts in the same order, the same
  left-padded ``input_ids`` and ``attention_mask``, filler rows included). It takes one global
  seed per batch (``torch.manual_seed``): transformers draws the noise of all rows from one stream,
  so a prompt's text depends on its batch-mates and its place in the batch. Seeding each prompt's
  own stream, so that its text does not, is what ``HFModel.generate`` adds; this baseline prices it.

    python bench/generate.py                       # 64 prompts, 64 new tokens, batch 32
    python bench/generate.py --prompts 16 --no-record
    python bench/generate.py --baselines batched   # skip the slow one-prompt-at-a-time loop

Prints the throughputs (generated tokens per second: up to and including the end token, padding
excluded, the same rule on every side) and the ratios ours / baseline, checks that a few prompts
sampled alone give the same text as inside the batch, and appends a dated row to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network timeout
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from _machine import cpu_model  # bench/ is on sys.path when a script runs

from collapselab.config.spec import STUDY_SYSTEM_PROMPT, DecodingSpec, ModelSpec  # noqa: E402
from collapselab.models.base import ChatPrompt, Generation, load_model, prompt_seed  # noqa: E402
from collapselab.models.formatting import render_prompt_ids  # noqa: E402
from collapselab.models.hf import _MIN_ROWS, HFModel, _left_pad  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## generate"
BASELINES = ("naive", "batched")
# the table the rows go to; a section whose last table has another header (rows recorded before
# the batched baseline existed) gets a new table under this header
HEADER = ("| date | machine | versions | settings | ours tok/s | naive tok/s | ours / naive "
          "| transformers batched tok/s | ours / batched | notes |")

_TASKS = [
    "Write a haiku about {}.",
    "Explain {} to a ten-year-old in two sentences.",
    "Give three surprising facts about {}.",
    "Write the opening line of a mystery novel set around {}.",
    "What are the pros and cons of {}? Answer briefly.",
    "Describe {} using only words of one syllable.",
    "Write a short, polite email asking a colleague about {}.",
    "Summarize the history of {} in one paragraph.",
    "List five words that remind you of {}, then explain your choice of the first one.",
    "Compose a limerick about {}.",
    "If {} were a person, what would their job be? Explain why in a few sentences.",
    "Write a product description for something related to {}.",
    "Ask me three questions that would help you teach me about {}.",
    "Tell a two-sentence story in which {} plays the main part.",
    "Compare {} with the ocean.",
    "What would a medieval scholar have thought of {}?",
]
_SUBJECTS = ["autumn leaves", "the printing press", "a city bus at midnight", "sourdough bread"]


def bench_prompts(n: int) -> list[ChatPrompt]:
    """``n`` varied instructions of different lengths (16 tasks x 4 subjects, repeated if needed)."""
    texts = [task.format(subject) for subject in _SUBJECTS for task in _TASKS]
    return [ChatPrompt(f"bench-{i}", texts[i % len(texts)], STUDY_SYSTEM_PROMPT) for i in range(n)]


def count_new(tokens: list[int], stops: set[int]) -> int:
    """Generated tokens up to and including the first end token (all of them if none): what
    ``Generation.new_tokens`` counts, so padding after the end is never counted."""
    return next((j + 1 for j, t in enumerate(tokens) if t in stops), len(tokens))


def _sampling_kwargs(model: HFModel, decoding: DecodingSpec) -> dict:
    """transformers' own sampling with the study's decoding (the same for both baselines)."""
    return dict(
        do_sample=True,
        # top_k=0: transformers otherwise adds its default top-k of 50 to sampling
        temperature=decoding.temperature, top_p=decoding.top_p, top_k=0,
        max_new_tokens=decoding.max_new_tokens, eos_token_id=model.stop_ids, pad_token_id=model.pad_id,
    )


def naive_generate(model: HFModel, prompts: list[ChatPrompt], decoding: DecodingSpec) -> int:
    """The naive baseline: one ``model.generate`` call per prompt with transformers' own sampling.
    Returns the number of generated tokens (up to and including the end token)."""
    stops = set(model.stop_ids)
    total = 0
    for prompt in prompts:
        ids = torch.tensor([render_prompt_ids(model.tokenizer, prompt, model.is_chat)]).to(model.device)
        torch.manual_seed(prompt_seed(decoding.seed, prompt.id))
        with torch.inference_mode():
            out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       **_sampling_kwargs(model, decoding))
        total += count_new(out[0, ids.shape[1]:].tolist(), stops)
    return total


def batched_generate(model: HFModel, prompts: list[ChatPrompt], decoding: DecodingSpec, batch_size: int) -> int:
    """The batched baseline: transformers' ``model.generate(do_sample=True)`` on the batches
    ``HFModel.generate`` makes of ``prompts`` (longest first, ``batch_size`` rows, left-padded by
    the same ``_left_pad``, small batches filled up to ``_MIN_ROWS`` with copies of their first
    row), with one global seed per batch, from its first prompt's id (transformers cannot seed a
    row on its own: all rows draw from one stream). Returns the number of generated tokens of the
    real rows (up to and including the end token)."""
    stops = set(model.stop_ids)
    rows = [render_prompt_ids(model.tokenizer, p, model.is_chat) for p in prompts]
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))  # as HFModel.generate
    total = 0
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        filled = batch + batch[:1] * max(0, _MIN_ROWS - len(batch))
        ids, mask = (t.to(model.device) for t in _left_pad(filled, model.pad_id))
        torch.manual_seed(prompt_seed(decoding.seed, prompts[order[start]].id))  # one seed for the batch
        with torch.inference_mode():
            out = model.model.generate(input_ids=ids, attention_mask=mask, **_sampling_kwargs(model, decoding))
        total += sum(count_new(tokens, stops) for tokens in out[:len(batch), ids.shape[1]:].tolist())
    return total


def _parse_baselines(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(BASELINES)}")
    return names


def record(row: list[str]) -> None:
    """Insert ``row`` at the end of the generate section's last table in RESULTS.md, or, when that
    table has another header than :data:`HEADER` (an older layout), in a new table after it."""
    line = "| " + " | ".join(row) + " |"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION not in text:
        raise SystemExit(f"{RESULTS} has no '{SECTION}' section: restore its header")
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(SECTION))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    table_rows = [i for i in range(start, end) if lines[i].startswith("|")]
    if not table_rows:
        raise SystemExit(f"{RESULTS}: the '{SECTION}' section has no table: restore its header")
    last_row = table_rows[-1]
    header = last_row
    while header - 1 > start and lines[header - 1].startswith("|"):
        header -= 1
    new = [line]
    if lines[header].strip() != HEADER:
        new = ["", HEADER, "|" + "---|" * (HEADER.count("|") - 1), line]
    lines[last_row + 1:last_row + 1] = new
    RESULTS.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hf/smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--baselines", type=_parse_baselines, default=BASELINES,
                        help=f"comma-separated baselines to measure (default: {','.join(BASELINES)})")
    parser.add_argument("--invariance-prompts", type=int, default=4,
                        help="prompts re-sampled alone (0: skip)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    model = load_model(ModelSpec(id=args.model, dtype=args.dtype, batch_size=args.batch_size))
    assert isinstance(model, HFModel)
    decoding = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=42)
    prompts = bench_prompts(args.prompts)
    baselines = {
        "naive": lambda chunk, dec: naive_generate(model, chunk, dec),
        "batched": lambda chunk, dec: batched_generate(model, chunk, dec, args.batch_size),
    }
    baselines = {name: run for name, run in baselines.items() if name in args.baselines}

    # warm every path up (first calls pay one-off allocation and dispatch costs)
    warm = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=4)
    model.generate(prompts[:2], warm)
    for run in baselines.values():
        run(prompts[:2], warm)

    # Rounds of one batch each, ours then each baseline: the machines are shared, and alternating
    # keeps every side under the same background load (running one after the other did not).
    gens: list[Generation] = []
    seconds = dict.fromkeys(["ours", *baselines], 0.0)
    tokens = dict.fromkeys(baselines, 0)
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start:start + args.batch_size]
        started = time.perf_counter()
        gens += model.generate(chunk, decoding)
        seconds["ours"] += time.perf_counter() - started
        for name, run in baselines.items():
            started = time.perf_counter()
            tokens[name] += run(chunk, decoding)
            seconds[name] += time.perf_counter() - started
        print(f"  {start + len(chunk)}/{len(prompts)} prompts: "
              + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()))
    tokens["ours"] = sum(g.new_tokens for g in gens)
    rate = {name: tokens[name] / seconds[name] for name in seconds}
    ratio = {name: rate["ours"] / rate[name] for name in baselines}
    stops = sum(g.finish_reason == "stop" for g in gens)
    print(f"HFModel.generate (batch {args.batch_size}): {tokens['ours']} tokens in {seconds['ours']:.1f} s "
          f"= {rate['ours']:.1f} tok/s ({stops} stopped, {len(gens) - stops} hit the length limit)")
    described = {"naive": "naive model.generate (one prompt at a time)",
                 "batched": f"transformers batched model.generate (batch {args.batch_size}, one seed per batch)"}
    for name in baselines:
        print(f"{described[name]}: {tokens[name]} tokens in {seconds[name]:.1f} s = {rate[name]:.1f} tok/s; "
              f"ours / {name}: {ratio[name]:.2f}x")

    same = "-"
    if args.invariance_prompts:
        picks = prompts[:: max(1, len(prompts) // args.invariance_prompts)][: args.invariance_prompts]
        alone = [model.generate([p], decoding)[0] for p in picks]
        same = f"{sum(a == gens[prompts.index(p)] for a, p in zip(alone, picks, strict=True))}/{len(picks)}"
        print(f"batch invariance: {same} prompts sampled alone gave the same text as in the batch")

    load_after = os.getloadavg()[0]
    if not args.no_record:
        def cells(name: str) -> list[str]:
            return [f"{rate[name]:.1f}", f"{ratio[name]:.2f}x"] if name in baselines else ["-", "-"]

        record([
            dt.date.today().isoformat(),
            f"{os.cpu_count()} cores, {cpu_model()}",
            f"torch {torch.__version__}, transformers {transformers.__version__}",
            f"{args.model} {args.dtype}, {args.prompts} prompts, {args.max_new_tokens} new, "
            f"batch {args.batch_size}, T {decoding.temperature} top-p {decoding.top_p}",
            f"{rate['ours']:.1f}",
            *cells("naive"),
            *cells("batched"),
            f"alone = batched: {same}; load avg {load_before:.1f} -> {load_after:.1f}"
            + (f"; {args.threads} torch threads" if args.threads != os.cpu_count() else ""),
        ])
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
