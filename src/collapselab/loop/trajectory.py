"""The ``trajectory`` stage: how each chain's training data changes across the generations of the
collapse loop, measured on the data itself (no model is loaded), with the exact expectations of
:mod:`collapselab.loop.closed_form` next to the measurements where the chain is the toy ground truth.

One row per (target, condition, seed, generation) of every synthetic chain (single and multi
conditions), measured on that generation's training set (the mix stage's ``train.jsonl``). Tokens
are :func:`collapselab.metrics.text.simple_tokens` (lower-cased words and single punctuation
marks); for toy models' ``w<i>`` tokens they are the whitespace tokens the toy backend samples.

* ``examples``, ``tokens``, ``types`` (distinct tokens);
* ``gini_simpson`` — 1 − Σ_t q(t)² of the data's unigram distribution q (the probability that two
  tokens drawn at random differ; the heterozygosity the Wright–Fisher loop erodes);
* ``rare_tail_coverage`` — the share of the rare types of the human train answers (those seen once
  in prepare's ``train.jsonl``, :func:`collapselab.metrics.vocabulary.human_tail` with max_count 1)
  that occur in the data (Shumailov et al. 2024: tails vanish first);
* ``tv_from_generation0`` — total-variation distance ½ Σ_t |q_g(t) − q_0(t)| from the same chain's
  generation-0 data;
* ``human_share`` — the share of examples answered by the human reference (fresh human data);
* ``new_examples``, ``new_types`` — the examples this generation added (rows tagged with the
  generation; all of generation 0's) that are synthetic, and their distinct types;
* ``sq_error`` — ‖q_g − p‖² from the toy source's true distribution p (only for chains with the
  closed form below); for a toy target q_g *is* the model fitted in generation g (the trainer
  counts the training set);
* ``expected_types``, ``expected_new_types``, ``expected_sq_error``, ``expected_gini_simpson`` —
  the closed form, where the chain is exactly the model it assumes: a toy target fed by one toy
  source (no adapter), mode ``replace`` or ``accumulate``, no fresh human data, temperature 1,
  top-p 1, no beams and answers not cut by ``max_new_tokens`` in every generation, and no
  decoding variant or curation on the condition; ``n`` = the chain's generation-0 token count.
  NaN elsewhere.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from collapselab.config.spec import Condition, ExperimentSpec
from collapselab.pipeline.context import StageContext
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import Estimate, PlanContext
from collapselab.pipeline.stage import Stage
from collapselab.store.atomic import read_jsonl, write_json
from collapselab.store.frames import write_parquet

#: the columns each row holds (also the stage's ``measures`` setting)
MEASURES = ("examples", "tokens", "types", "gini_simpson", "rare_tail_coverage", "tv_from_generation0",
            "human_share", "new_examples", "new_types", "sq_error")
EXPECTED = ("expected_types", "expected_new_types", "expected_sq_error", "expected_gini_simpson")


@dataclass(frozen=True)
class Chain:
    """One row's cell: a chain (target, condition, seed) in a generation and its training set."""

    target_name: str
    condition: Condition
    seed: int
    generation: int
    mix: Stage


@dataclass(frozen=True)
class TrajectoryParams:
    """Every cell the stage measures, in graph order."""

    chains: tuple[Chain, ...]


def closed_form_model(spec: ExperimentSpec, target_name: str, cond: Condition) -> dict[str, Any] | None:
    """The toy source's parameters (``types``, ``zipf``, ``length``) and the mode when the chain is
    exactly the closed form's model (see the module docstring), else None."""
    from collapselab.models.toy import parse_toy_name

    g = spec.generations
    target = spec.targets[spec.target_names.index(target_name)]
    mode = spec.loop_mode(cond)
    if cond.kind != "single" or target.backend != "toy" or mode not in ("replace", "accumulate"):
        return None
    if g.human_fraction > 0 or getattr(g, "human_count", None) or getattr(cond, "decoding", None) \
            or getattr(cond, "curation", None):
        return None
    source = spec.source(cond.sources[0])
    if source.model.backend != "toy" or source.model.adapter is not None:
        return None
    params = parse_toy_name(source.model.name)
    for d in (spec.source_decoding(source.name), spec.decoding):
        if d.temperature != 1 or d.top_p != 1 or d.num_beams != 1 or d.max_new_tokens < params.length:
            return None
    # later generations' answers keep the fitted length, which is the source's when nothing is cut
    return {"types": params.types, "zipf": params.zipf, "length": params.length, "mode": mode}


def trajectory_stages(spec: ExperimentSpec, spine: Any) -> list[Stage]:
    """The ``trajectory/loop`` stage of a run with generations (none when ``generations.count`` is
    1): its inputs are prepare and every mix and generate stage of the spine (the generate stages
    make each generation's sampling an explicit upstream of the trajectory; the numbers are read
    from the mixes, which hold every example a generation trained on)."""
    if spec.generations.count <= 1:
        return []
    chains = [Chain(tname, cond, seed, generation, train.inputs[0])
              for (tname, label, seed, generation), train in spine.trains.items()
              for cond in [next(c for c in spec.conditions if c.label == label)]
              if cond.kind in ("single", "multi")]
    chains.sort(key=lambda c: (spine.target_names.index(c.target_name), spec.conditions.index(c.condition),
                               c.seed, c.generation))
    if not chains:
        return []
    closed = {f"{c.target_name}|{c.condition.label}": closed_form_model(spec, c.target_name, c.condition)
              for c in chains}
    mixes = list({c.mix.label: c.mix for c in chains}.values())
    generates = [s for s in spine.stages if s.kind == "generate"]
    settings = {
        "measures": list(MEASURES), "expected": list(EXPECTED), "tokenizer": "simple",
        "rare_tail": "types seen once in the human train answers",
        "chains": [[c.target_name, c.condition.label, c.seed, c.generation, c.mix.label] for c in chains],
        "closed_form": closed,
    }
    return [Stage("trajectory", "loop", settings=settings, inputs=(spine.prepare, *mixes, *generates),
                  params=TrajectoryParams(tuple(chains)))]


def _tokens(texts: list[str]) -> list[str]:
    from collapselab.metrics.text import simple_tokens

    return [t for text in texts for t in simple_tokens(text or "")]


def _distribution(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {t: c / total for t, c in counts.items()} if total else {}


def _tv(q: dict[str, float], r: dict[str, float]) -> float:
    if not q or not r:
        return math.nan
    # summed in sorted order: a set's order changes with the process's hash seed, and with it the
    # last bits of a float sum (a resumed run must write the same file)
    return 0.5 * math.fsum(abs(q.get(t, 0.0) - r.get(t, 0.0)) for t in sorted(q.keys() | r.keys()))


def run_trajectory(ctx: StageContext) -> None:
    """Measure every chain's training data per generation (module docstring) and write
    ``trajectory.parquet`` (one row per target × condition × seed × generation) and ``summary.json``."""
    from collapselab.loop.closed_form import (
        expected_distinct,
        expected_gini_simpson,
        expected_sq_error,
    )
    from collapselab.metrics.vocabulary import human_tail
    from collapselab.models.toy import zipf_probabilities

    chains: tuple[Chain, ...] = ctx.stage.params.chains
    closed: dict[str, Any] = ctx.stage.settings["closed_form"]
    human = read_jsonl(ctx.input_dir(ctx.stage.input("prepare")) / "train.jsonl")
    tail = human_tail(_tokens([r["response"] for r in human]), 1)
    ctx.set_total(len(chains))
    lengths = Counter((c.target_name, c.condition.label, c.seed) for c in chains)  # generations per chain
    expected: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}  # (chain model, n, generations) → curves
    data: dict[str, list[dict]] = {}  # a generation-0 mix serves every target: read once
    first: dict[tuple[str, str, int], tuple[dict[str, float], int]] = {}  # chain → (q_0, gen-0 tokens)
    rows = []
    for c in chains:
        if c.mix.label not in data:
            data[c.mix.label] = read_jsonl(ctx.input_dir(c.mix) / "train.jsonl")
        examples = data[c.mix.label]
        counts = Counter(_tokens([e["response"] for e in examples]))
        q = _distribution(counts)
        new = [e for e in examples if e.get("generation", 0) == c.generation and e.get("origin") != "human"]
        chain = (c.target_name, c.condition.label, c.seed)
        if c.generation == 0:
            first[chain] = (q, sum(counts.values()))
        q0, n0 = first.get(chain, ({}, 0))
        types = set(counts)
        row: dict[str, Any] = {
            "target": c.target_name, "condition": c.condition.label, "seed": c.seed, "generation": c.generation,
            "examples": len(examples), "tokens": sum(counts.values()), "types": len(types),
            "gini_simpson": 1.0 - math.fsum(v * v for v in q.values()) if q else math.nan,
            "rare_tail_coverage": len(tail & types) / len(tail) if tail else math.nan,
            "tv_from_generation0": _tv(q, q0),
            "human_share": sum(e.get("origin") == "human" for e in examples) / len(examples) if examples else math.nan,
            "new_examples": len(new), "new_types": len(set(_tokens([e["response"] for e in new]))),
            "sq_error": math.nan, **{k: math.nan for k in EXPECTED},
        }
        model = closed.get(f"{c.target_name}|{c.condition.label}")
        if model is not None and n0:
            p = zipf_probabilities(model["types"], model["zipf"])
            truth = {f"w{i}": float(v) for i, v in enumerate(p)}
            row["sq_error"] = math.fsum((q.get(t, 0.0) - truth.get(t, 0.0)) ** 2
                                        for t in sorted(q.keys() | truth.keys()))
            key = (f"{c.target_name}|{c.condition.label}", n0, lengths[chain])
            if key not in expected:
                mode, n_gen = model["mode"], lengths[chain]
                expected[key] = {
                    "expected_types": expected_distinct(p, n0, n_gen, mode, of="training"),
                    "expected_new_types": expected_distinct(p, n0, n_gen, mode, of="samples"),
                    "expected_sq_error": expected_sq_error(p, n0, n_gen, mode),
                    "expected_gini_simpson": expected_gini_simpson(p, n0, n_gen, mode),
                }
            row.update({k: float(v[c.generation]) for k, v in expected[key].items()})
        rows.append(row)
        ctx.advance(1)
    frame = pd.DataFrame(rows, columns=["target", "condition", "seed", "generation", *MEASURES, *EXPECTED])
    write_parquet(frame, ctx.out / "trajectory.parquet")
    write_json(ctx.out / "summary.json", {
        "rows": len(frame), "chains": len({(c.target_name, c.condition.label, c.seed) for c in chains}),
        "generations": int(frame["generation"].max()) + 1 if len(frame) else 0,
        "rare_tail_types": len(tail), "closed_form": {k: v for k, v in closed.items() if v is not None},
    })


def plan_trajectory(stage: Stage, ctx: PlanContext) -> Estimate:
    """The training examples the stage reads: the sum of its mixes' sizes when the corpus is known
    offline (a train prompt gives one example per generation it is in; accumulate mixes hold
    every earlier generation's too)."""
    train = ctx.corpus.train
    if train is None:
        return Estimate(n_items=None, notes=["unknown: the training-set size is not known offline "
                                             f"({ctx.corpus.note})"])
    mixes = [s for s in stage.inputs if s.kind == "mix"]
    modes = {s.params.condition.label: ctx.spec.loop_mode(s.params.condition) for s in mixes}
    accumulate = any(m != "replace" for m in modes.values())
    n = sum(train * ((s.params.generation + 1) if modes[s.params.condition.label] != "replace" else 1)
            for s in mixes)
    return Estimate(n_items=n, notes=[f"{len(mixes)} training sets measured, no model loaded",
                                      "an upper bound: a multi-source or subsampled mix holds fewer"
                                      if accumulate else "one example per train prompt and generation"],
                    bound=accumulate)


TRAJECTORY = register_kind(StageKind(
    "trajectory", 1, run_trajectory, plan_trajectory, unit="examples", params=TrajectoryParams,
    experiment="spine", outputs=("trajectory.parquet", "summary.json"), report=True,
    description="the training data's trajectory across generations (types, Gini–Simpson, rare tail, TV "
                "from generation 0), with the closed form for toy chains"))


def per_seed_table(frame: pd.DataFrame, column: str, target: str, condition: str) -> np.ndarray:
    """One chain's ``column`` as a seeds × generations array (for
    :func:`collapselab.loop.closed_form.within_tolerance`)."""
    part = frame[(frame["target"] == target) & (frame["condition"] == condition)]
    return part.pivot(index="seed", columns="generation", values=column).sort_index(axis=1).to_numpy(dtype=float)
