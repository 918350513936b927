"""Time per stage kind (``collapselab status --times``, collapselab.pipeline.profile) on a small
finished run: every planned stage is counted, seconds are the provenance records' own, shares
add up to one, and an unfinished run shows its missing stages as not done."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from collapselab.cli.main import app
from collapselab.executors import run_stages
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.profile import profile, stage_seconds, wall_clock
from collapselab.store.run import RunStore
from tests.unit.pipeline.test_loop_graph import load


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    spec = load(tmp)
    run_stages(spec, tmp / "out")
    return spec, tmp / "out"


def test_profile_counts_every_stage_and_sums_the_provenance_seconds(finished):
    spec, run_dir = finished
    stages = stage_seconds(spec, run_dir)
    graph = build_graph(spec)
    assert len(stages) == len(graph) and stages["done"].all()
    store = RunStore(run_dir)
    by_hand = {}
    for s in graph:
        seconds = json.loads((store.final_dir(s.ref) / "provenance.json").read_text())["seconds"]
        by_hand[s.kind] = by_hand.get(s.kind, 0.0) + seconds
    table = profile(stages).set_index("kind")
    for kind, seconds in by_hand.items():
        assert table.loc[kind, "seconds"] == pytest.approx(seconds)
        assert table.loc[kind, "planned"] == table.loc[kind, "done"] == sum(1 for s in graph if s.kind == kind)
    assert table.drop(index="all")["share"].sum() == pytest.approx(1.0)
    assert table.loc["all", "planned"] == len(graph)
    start, end = wall_clock(stages)
    assert start is not None and start <= end


def test_an_unfinished_run_and_the_cli(finished, tmp_path):
    spec, run_dir = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    store = RunStore(copy)
    train = next(s for s in build_graph(spec) if s.kind == "train")
    shutil.rmtree(store.final_dir(train.ref))
    table = profile(stage_seconds(spec, copy)).set_index("kind")
    assert table.loc["train", "done"] == table.loc["train", "planned"] - 1
    result = CliRunner().invoke(app, ["status", str(copy), "--times"])
    assert result.exit_code == 0, result.output
    assert "time per stage kind" in result.output and "train" in result.output
