"""``collapselab run CONFIG -m …`` end to end through the CLI (mock sources, the toy target:
seconds), and what ``status``, ``verify`` and ``report`` do on a sweep's run folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collapselab.cli import common
from collapselab.cli.main import app
from tests.unit.pipeline.test_multirun import AXES, sweep_config


@pytest.fixture(scope="module")
def wide():
    """A wide console, so no path or name in the output is wrapped."""
    mp = pytest.MonkeyPatch()
    mp.setattr(common.console, "width", 300)
    mp.setattr(common.err_console, "width", 300)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def swept(tmp_path_factory, wide):
    tmp = tmp_path_factory.mktemp("cli-sweep")
    config, run_dir = sweep_config(tmp), tmp / "run"
    result = CliRunner().invoke(app, ["run", str(config), "-m", *AXES, "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    return config, run_dir, result.output


def names(run_dir):
    return [p["name"] for p in json.loads((run_dir / "sweep" / "sweep.json").read_text())["points"]]


def test_the_sweep_reports_which_point_of_how_many(swept):
    _, run_dir, output = swept
    assert "sweep of 4 points over lora.r, collapse.bootstrap" in output
    for i, name in enumerate(names(run_dir), start=1):
        assert f"point {i}/4 {name} (" in output
    assert f"comparison: {run_dir / 'sweep' / 'comparison.html'}" in output
    assert (run_dir / "sweep" / "comparison.html").is_file()


def test_rerunning_the_same_command_skips_every_point(swept):
    config, run_dir, _ = swept
    result = CliRunner().invoke(app, ["run", str(config), "--multirun", *AXES, "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.count("done already") == 4 and "ran 0 stages (4 points were already done)" in result.output


def test_status_on_a_sweep_lists_its_points_and_each_stage_once(swept):
    _, run_dir, _ = swept
    result = CliRunner().invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    for name in names(run_dir):
        assert name in result.output
    assert result.output.count("finished") == 4 and "not finished" not in result.output
    assert "prepare/corpus" in result.output and "1,2,3,4" in result.output
    assert "missing" not in result.output.split("distinct stages:")[1]


def test_verify_on_a_sweep_checks_every_points_stages(swept):
    _, run_dir, _ = swept
    result = CliRunner().invoke(app, ["verify", str(run_dir)])
    stages = len(list((run_dir / "stages").glob("*/*/_DONE")))
    assert result.exit_code == 0 and f"{stages} completed stages: {stages} intact" in result.output


def test_report_on_a_sweep_rewrites_every_point_and_the_comparison(swept):
    _, run_dir, _ = swept
    first = run_dir / "sweep" / names(run_dir)[0] / "report" / "report.html"
    first.unlink()
    (run_dir / "sweep" / "comparison.md").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert first.is_file() and (run_dir / "sweep" / "comparison.md").is_file()
    assert result.output.count("report: ") == 4 and not (run_dir / "report").exists()
    figures = CliRunner().invoke(app, ["report", str(run_dir), "--figures", str(run_dir / "figs")])
    assert figures.exit_code == 2 and "holds a sweep" in figures.output


def test_a_bad_point_fails_before_any_stage_runs(tmp_path, wide):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(sweep_config(tmp_path)), "-m", "lora.r=8,abc",
                                      "conditions=[vanilla,single:a]", "-o", str(run_dir)])
    assert result.exit_code == 2
    assert "sweep point 2/2 lora.r-abc (lora.r=abc)" in result.output and "lora.r" in result.output
    assert "Traceback" not in result.output and not run_dir.exists()


def test_without_an_axis_multirun_says_so(tmp_path, wide):
    result = CliRunner().invoke(app, ["run", str(sweep_config(tmp_path)), "-m", "lora.r=8"])
    assert result.exit_code == 2 and "no override has several comma-separated values" in result.output
