"""Benchmark: ``HFModel.generate`` (batched, left-padded, per-prompt seeded sampling) against the
naive loop it replaces — transformers' ``model.generate`` called once per prompt — on the packaged
SmolLM2-135M-Instruct, same weights, dtype and decoding settings, in the same run.

    python bench/generate.py                       # 64 prompts, 64 new tokens, batch 32
    python bench/generate.py --prompts 16 --no-record

Prints both throughputs (generated tokens per second, end tokens included, padding excluded) and
their ratio, checks that a few prompts sampled alone give the same text as inside the batch, and
appends a dated row to bench/RESULTS.md.
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
from collapselab.models.hf import HFModel  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## generate"

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


def naive_generate(model: HFModel, prompts: list[ChatPrompt], decoding: DecodingSpec) -> int:
    """The baseline: one ``model.generate`` call per prompt with transformers' own sampling.
    Returns the number of generated tokens (up to and including the end token)."""
    stops = set(model.stop_ids)
    total = 0
    for prompt in prompts:
        ids = torch.tensor([render_prompt_ids(model.tokenizer, prompt, model.is_chat)])
        torch.manual_seed(prompt_seed(decoding.seed, prompt.id))
        with torch.inference_mode():
            out = model.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                # top_k=0: transformers otherwise adds its default top-k of 50 to sampling
                temperature=decoding.temperature, top_p=decoding.top_p, top_k=0,
                max_new_tokens=decoding.max_new_tokens, eos_token_id=model.stop_ids,
                pad_token_id=model.pad_id,
            )
        new = out[0, ids.shape[1]:].tolist()
        total += next((j + 1 for j, t in enumerate(new) if t in stops), len(new))
    return total




def record(row: list[str]) -> None:
    """Insert ``row`` at the end of the generate section's table in RESULTS.md."""
    line = "| " + " | ".join(row) + " |"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION not in text:
        raise SystemExit(f"{RESULTS} has no '{SECTION}' section: restore its header")
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(SECTION))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    last_row = max(i for i in range(start, end) if lines[i].startswith("|"))
    lines.insert(last_row + 1, line)
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hf/smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--invariance-prompts", type=int, default=4,
                        help="prompts re-sampled alone (0: skip)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    load_before = os.getloadavg()[0]
    model = load_model(ModelSpec(id=args.model, dtype=args.dtype, batch_size=args.batch_size))
    assert isinstance(model, HFModel)
    decoding = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=42)
    prompts = bench_prompts(args.prompts)

    # warm both paths up (first calls pay one-off allocation and dispatch costs)
    warm = DecodingSpec(temperature=0.7, top_p=0.9, max_new_tokens=4)
    model.generate(prompts[:2], warm)
    naive_generate(model, prompts[:1], warm)

    # Rounds of one batch each, batched then naive: the machines are shared, and alternating keeps
    # both sides under the same background load (running one after the other did not).
    gens: list[Generation] = []
    batched_s = naive_s = 0.0
    naive_tokens = 0
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start:start + args.batch_size]
        started = time.perf_counter()
        gens += model.generate(chunk, decoding)
        batched_s += time.perf_counter() - started
        started = time.perf_counter()
        naive_tokens += naive_generate(model, chunk, decoding)
        naive_s += time.perf_counter() - started
        print(f"  {start + len(chunk)}/{len(prompts)} prompts: batched {batched_s:.1f} s, "
              f"naive {naive_s:.1f} s")
    batched_tokens = sum(g.new_tokens for g in gens)
    batched_rate = batched_tokens / batched_s
    naive_rate = naive_tokens / naive_s
    ratio = batched_rate / naive_rate
    stops = sum(g.finish_reason == "stop" for g in gens)
    print(f"HFModel.generate (batch {args.batch_size}): {batched_tokens} tokens in {batched_s:.1f} s "
          f"= {batched_rate:.1f} tok/s ({stops} stopped, {len(gens) - stops} hit the length limit)")
    print(f"naive model.generate (one prompt at a time): {naive_tokens} tokens in {naive_s:.1f} s "
          f"= {naive_rate:.1f} tok/s")
    print(f"speed-up: {ratio:.2f}x")

    same = "-"
    if args.invariance_prompts:
        picks = prompts[:: max(1, len(prompts) // args.invariance_prompts)][: args.invariance_prompts]
        alone = [model.generate([p], decoding)[0] for p in picks]
        same = f"{sum(a == gens[prompts.index(p)] for a, p in zip(alone, picks, strict=True))}/{len(picks)}"
        print(f"batch invariance: {same} prompts sampled alone gave the same text as in the batch")

    load_after = os.getloadavg()[0]
    if not args.no_record:
        record([
            dt.date.today().isoformat(),
            f"{os.cpu_count()} cores, {cpu_model()}",
            f"torch {torch.__version__}, transformers {transformers.__version__}",
            f"{args.model} {args.dtype}, {args.prompts} prompts, {args.max_new_tokens} new, "
            f"batch {args.batch_size}, T {decoding.temperature} top-p {decoding.top_p}",
            f"{batched_rate:.1f}",
            f"{naive_rate:.1f}",
            f"{ratio:.2f}x",
            f"alone = batched: {same}; load avg {load_before:.1f} -> {load_after:.1f}",
        ])
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
