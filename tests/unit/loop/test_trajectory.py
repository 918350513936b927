"""The ``trajectory`` stage's numbers against a plain recomputation from the mixes, on two small toy
runs (replace: with the closed form; accumulate with fresh human data: without), and its report
section."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.loop.closed_form import expected_distinct, expected_sq_error
from collapselab.loop.trajectory import trajectory_stages
from collapselab.models.toy import zipf_probabilities
from collapselab.pipeline.experiments.spine import build_spine
from collapselab.pipeline.kinds import stage_kind
from collapselab.pipeline.sizing import PlanContext, corpus_facts
from collapselab.report.loop_trajectory import build as build_section
from collapselab.report.sections import SectionContext
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore

SEEDS, GENERATIONS, TYPES, LENGTH = (1, 2), 3, 10, 3


def _corpus(path: Path, n: int = 14) -> Path:
    """Lower-case answers without punctuation (so whitespace tokens are the stage's tokens), each
    with one word of its own: the human rare tail."""
    rows = [{"id": f"r{i:02d}", "instruction": f"Say something about {i}.", "context": "",
             "response": f"the river and the garden word{i}", "category": "ab"[i % 2]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tmp: Path, **generations):
    config = {
        "name": "trajectory", "corpus": {"kind": "jsonl", "path": str(_corpus(tmp / "corpus.jsonl")),
                                         "columns": {"id": "id"}},
        "split": {"test_fraction": 0.1, "test_size": 1, "seed": 1},
        "decoding": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 3, "system_prompt": None},
        "sources": [{"name": "src", "model": {"id": f"toy/unigram:types={TYPES},zipf=1.0,length={LENGTH}"}}],
        "conditions": ["single:src"], "targets": [{"id": "toy/unigram"}],
        "seeds": list(SEEDS), "seed_scope": "data",
        "generations": {"count": GENERATIONS, **generations},
        "collapse": {"enabled": False}, "run": {"threads": 1},
    }
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    spec = load_config(tmp / "run.yaml", use_env=False)
    spine = build_spine(spec)
    [trajectory] = trajectory_stages(spec, spine)
    stages = [s for s in spine.stages if s.kind != "respond"] + [trajectory]
    run_stages(spec, tmp / "out", stages=stages)
    store = RunStore(tmp / "out")
    frame = pd.read_parquet(store.final_dir(trajectory.ref) / "trajectory.parquet")
    return spec, spine, store, stages, trajectory, frame


@pytest.fixture(scope="module")
def replace_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("traj-replace"), mode="replace")


@pytest.fixture(scope="module")
def accumulate_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("traj-acc"), mode="accumulate", human_fraction=0.5)


def _recompute(spec, spine, store, closed: bool) -> pd.DataFrame:
    """The trajectory's measures, plainly, from the mixes' train.jsonl and prepare's human answers
    (the squared error from the toy source's p only for a chain with a closed form)."""
    human = Counter(t for r in read_jsonl(store.final_dir(spine.prepare.ref) / "train.jsonl")
                    for t in r["response"].split())
    tail = {t for t, c in human.items() if c == 1}
    p = dict(zip([f"w{i}" for i in range(TYPES)], zipf_probabilities(TYPES, 1.0), strict=True))
    rows, first = [], {}
    for (_, _, seed, g), train in spine.trains.items():
        examples = read_jsonl(store.final_dir(train.inputs[0].ref) / "train.jsonl")
        counts = Counter(t for e in examples for t in e["response"].split())
        total = sum(counts.values())
        q = {t: c / total for t, c in counts.items()}
        first.setdefault(seed, q)
        new = [e for e in examples if e.get("generation", 0) == g and e["origin"] != "human"]
        rows.append({"seed": seed, "generation": g, "examples": len(examples), "tokens": total, "types": len(q),
                     "gini_simpson": 1 - sum(v * v for v in q.values()),
                     "rare_tail_coverage": len(tail & set(q)) / len(tail),
                     "tv_from_generation0": 0.5 * sum(abs(q.get(t, 0) - first[seed].get(t, 0))
                                                      for t in set(q) | set(first[seed])),
                     "human_share": sum(e["origin"] == "human" for e in examples) / len(examples),
                     "new_examples": len(new), "new_types": len({t for e in new for t in e["response"].split()}),
                     "sq_error": sum((q.get(t, 0) - p.get(t, 0)) ** 2 for t in set(q) | set(p))
                     if closed else math.nan})
    return pd.DataFrame(rows).sort_values(["seed", "generation"]).reset_index(drop=True)


def test_replace_rows_match_a_plain_recomputation_and_the_closed_form(replace_run) -> None:
    spec, spine, store, _, stage, frame = replace_run
    assert len(frame) == len(SEEDS) * GENERATIONS
    plain = _recompute(spec, spine, store, closed=True)
    got = frame.sort_values(["seed", "generation"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[plain.columns], plain, check_dtype=False)
    assert (got["human_share"] == 0).all() and (got["rare_tail_coverage"] == 0).all()  # w-tokens only
    # the closed form, with n = the generation-0 token count (prompts × length)
    n = int(got.loc[got["generation"] == 0, "tokens"].iloc[0])
    assert n == spec_prompts(store, spine) * LENGTH
    p = zipf_probabilities(TYPES, 1.0)
    for _, part in got.groupby("seed"):
        np.testing.assert_allclose(part["expected_types"], expected_distinct(p, n, GENERATIONS, "replace"))
        np.testing.assert_allclose(part["expected_sq_error"], expected_sq_error(p, n, GENERATIONS, "replace"))
    # the stage reads prepare and every mix and generate stage of the spine
    kinds = Counter(s.kind for s in stage.inputs)
    assert kinds == {"prepare": 1, "mix": len(SEEDS) * GENERATIONS, "generate": len(SEEDS) * GENERATIONS}
    # plan sizes it offline: every training set's examples (here exact: replace, one per prompt)
    estimate = stage_kind("trajectory").plan(stage, PlanContext(spec, corpus_facts(spec), spine.stages))
    assert estimate.n_items == frame["examples"].sum() and not estimate.bound


def spec_prompts(store, spine) -> int:
    return len(read_jsonl(store.final_dir(spine.prepare.ref) / "train.jsonl"))


def test_accumulate_with_human_data_has_no_closed_form(accumulate_run) -> None:
    spec, spine, store, _, _, frame = accumulate_run
    plain = _recompute(spec, spine, store, closed=False)
    got = frame.sort_values(["seed", "generation"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[plain.columns], plain, check_dtype=False)
    later = got[got["generation"] > 0]
    assert (later["human_share"] > 0).all() and (later["rare_tail_coverage"] > 0).all()
    assert (got.groupby("seed")["examples"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert got["expected_types"].isna().all() and got["sq_error"].isna().all()


def test_no_trajectory_without_generations(replace_run) -> None:
    spec = replace_run[0].model_copy(update={"generations": replace_run[0].generations.model_copy(
        update={"count": 1})})
    assert trajectory_stages(spec, build_spine(spec)) == []


def test_report_section_shows_means_over_seeds(replace_run) -> None:
    spec, _, store, stages, _, frame = replace_run
    section = build_section(SectionContext(spec, stages, store, inputs=None))
    assert section is not None and section.key == "trajectory"
    [table] = section.tables
    assert list(table.frame["generation"]) == [str(g) for g in range(GENERATIONS)]
    means = frame.groupby("generation")["types"].mean()
    assert [float(v) for v in table.frame["types"]] == pytest.approx(list(means), abs=0.01)
    assert "types (closed form)" in table.columns
    fig = section.figures[0].draw()
    assert len(fig.axes) == 2 and any(line.get_linestyle() == "--" for line in fig.axes[0].lines)
    # a run without a finished trajectory stage has no section
    assert build_section(SectionContext(spec, [s for s in stages if s.kind != "trajectory"], store, None)) is None
    assert math.isfinite(float(table.frame["TV from gen 0"].iloc[-1]))
