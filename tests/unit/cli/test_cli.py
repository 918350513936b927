import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})


def test_help_is_instant_and_imports_no_torch():
    code = ("import sys; from typer.testing import CliRunner; from collapselab.cli.main import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'run' in r.output and 'validate' in r.output; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_validate_demo_config():
    res = cli("validate", ROOT / "configs/demo.yaml")
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout and "generate" in res.stdout


def test_validate_reports_bad_config_with_field_and_exit_code(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("targets: [hf/smollm2-135m-instruct]\nlora:\n  rank: 3\n")
    res = cli("validate", cfg)
    assert res.returncode == 2
    assert f"{cfg}:3: lora.rank: unknown key" in res.stderr
    assert "Traceback" not in res.stderr


def test_validate_unknown_model_and_corpus(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("targets: [hf/smollm2-135m-instruct]\ncorpus: {kind: austin}\n")
    res = cli("validate", cfg)
    assert res.returncode == 2 and "did you mean 'austen'" in res.stderr
    cfg.write_text("targets: [hf/smollm-135m-instruct]\n")
    res = cli("validate", cfg)
    assert res.returncode == 2 and "targets.0.id" in res.stderr and "smollm2-135m-instruct" in res.stderr


def test_ls_lists_registered_names():
    res = cli("ls")
    assert res.returncode == 0
    for name in ("smollm2-135m-instruct", "gemma3-270m", "austen", "jsonl", "mock", "multi:A,B"):
        assert name in res.stdout


@pytest.mark.slow
def test_run_then_status(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "c.jsonl"),
                      conditions=["vanilla", "human"])
    res = cli("run", cfg, "-o", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    status = cli("status", tmp_path / "run")
    assert status.returncode == 0 and "done" in status.stdout and "missing" not in status.stdout
    bad = cli("status", tmp_path)
    assert bad.returncode == 2 and "not a run folder" in bad.stderr


@pytest.mark.slow
def test_nan_loss_fails_cleanly_and_keeps_upstream(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "c.jsonl"), conditions=["human"])
    res = cli("run", cfg, "-o", tmp_path / "run", "lora.learning_rate=1e30")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "nan" in res.stderr.lower() or "not finite" in res.stderr.lower()
    done = list((tmp_path / "run" / "stages").glob("*/*/_DONE"))
    assert {p.parent.parent.name for p in done} == {"prepare", "mix"}


def test_validate_checks_metric_names_and_settings(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("targets: [hf/smollm2-135m-instruct]\ncollapse: {metrics: [distinct, heap]}\n")
    res = cli("validate", cfg)
    assert res.returncode == 2 and "collapse.metrics.1.name" in res.stderr and "did you mean 'heaps'" in res.stderr
    cfg.write_text("targets: [hf/smollm2-135m-instruct]\ncollapse: {metrics: [{name: distinct, settings: {m: 2}}]}\n")
    res = cli("validate", cfg)
    assert res.returncode == 2 and "collapse.metrics.0.settings" in res.stderr


@pytest.mark.slow
def test_run_writes_the_report_and_report_rewrites_it(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "c.jsonl"), conditions=["vanilla", "human"])
    res = cli("run", cfg, "-o", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    html = tmp_path / "run" / "report" / "report.html"
    assert html.exists() and "report.html" in res.stdout
    html.unlink()
    res = cli("report", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    assert html.exists() and (tmp_path / "run" / "report" / "aggregates.parquet").exists()
