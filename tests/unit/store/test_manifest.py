"""Completed stages record their files' sizes and checksums; runs and ``verify`` check them."""

import hashlib
import json
import os
import subprocess
import sys
import warnings

import pytest

from collapselab.errors import DataError
from collapselab.store.atomic import write_text
from collapselab.store.run import MARKER, RunStore, StageRef
from tests.helpers import write_corpus


def done_stage(tmp_path, files=None):
    store = RunStore(tmp_path)
    ref = StageRef("mix", "human", "abc123")
    out = store.begin(ref)
    for name, text in (files or {"train.jsonl": '{"a": 1}\n', "sub/x.txt": "hello"}).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        write_text(out / name, text)
    store.commit(ref, {}, [], 0.1)
    return store, ref, store.final_dir(ref)


def test_marker_records_every_file_with_size_and_sha256(tmp_path):
    store, ref, folder = done_stage(tmp_path)
    files = json.loads((folder / MARKER).read_text())["files"]
    assert set(files) == {"train.jsonl", "sub/x.txt", "stage.json", "provenance.json"}
    for rel, entry in files.items():
        data = (folder / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert store.check(ref) == [] and store.check(ref, checksums=True) == []


def test_appended_line_is_caught_by_size(tmp_path):
    store, ref, folder = done_stage(tmp_path)
    with open(folder / "train.jsonl", "a") as fh:
        fh.write('{"broken\n')
    problems = store.check(ref)
    assert len(problems) == 1 and "train.jsonl" in problems[0]
    with pytest.raises(DataError, match=r"train\.jsonl.*\n.*delete the folder .*mix/human-abc123"):
        store.require_intact(ref)


def test_same_size_edit_added_and_missing_files_are_caught_by_checksums(tmp_path):
    store, ref, folder = done_stage(tmp_path)
    (folder / "train.jsonl").write_text('{"a": 2}\n')  # same size, other content
    assert store.check(ref) == []  # sizes alone cannot see it
    problems = store.check(ref, checksums=True)
    assert len(problems) == 1 and "content changed" in problems[0]
    (folder / "new.txt").write_text("x")
    (folder / "sub" / "x.txt").unlink()
    problems = store.check(ref, checksums=True)
    assert any("new.txt: added" in p for p in problems) and any("x.txt: missing" in p for p in problems)


def test_old_marker_without_manifest_is_unverified_not_an_error(tmp_path):
    store, ref, folder = done_stage(tmp_path)
    (folder / MARKER).write_text(json.dumps({"finished": "2026-11-01T00:00:00"}))
    assert store.manifest(ref) is None and store.check(ref) is None
    store.require_intact(ref)  # nothing to compare against: no error
    assert store.completed() == [ref]


def cli(*args):
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def mock_config(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"""name: m
corpus: {{kind: jsonl, path: {corpus}, columns: {{id: id}}}}
split: {{test_fraction: 0.25, train_size: 16, test_size: 6, seed: 1}}
decoding: {{max_new_tokens: 8, seed: 3}}
sources: [{{name: a, model: {{id: mock/random}}}}]
conditions: [vanilla]
targets: [mock/echo]
collapse: {{enabled: false}}
run: {{threads: 1}}
""")
    return cfg


def test_rerun_fails_on_a_changed_artifact_and_verify_names_it(tmp_path):
    cfg, run = mock_config(tmp_path), tmp_path / "run"
    res = cli("run", cfg, "-o", run)
    assert res.returncode == 0, res.stderr
    # without a terminal, progress is plain lines
    assert "[1/2] prepare/corpus: started" in res.stdout and "finished in" in res.stdout
    assert cli("verify", run).returncode == 0
    train = next((run / "stages" / "prepare").glob("*/train.jsonl"))
    with open(train, "a") as fh:
        fh.write('{"broken\n')
    res = cli("run", cfg, "-o", run)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(train) in res.stderr and "delete the folder" in res.stderr
    res = cli("verify", run)
    assert res.returncode == 1 and str(train) in res.stderr and "1 changed" in res.stdout


def test_run_into_a_file_is_a_clear_error(tmp_path):
    cfg = mock_config(tmp_path)
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    res = cli("run", cfg, "-o", target)
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr and "Traceback" not in res.stderr
    assert target.read_text() == "mine"


def test_library_warnings_go_to_the_log_not_the_output(tmp_path):
    from collapselab.cli.noise import warnings_to_log

    log = tmp_path / "logs" / "warnings.log"
    with warnings_to_log(log):
        warnings.warn("old API", FutureWarning, stacklevel=1)
    assert "FutureWarning: old API" in log.read_text()
    with warnings_to_log(tmp_path / "quiet.log"):
        pass
    assert not (tmp_path / "quiet.log").exists()  # no empty log file


def test_plain_progress_prints_at_most_one_line_per_interval(tmp_path):
    import io

    from rich.console import Console

    from collapselab.cli.progress import PlainStageProgress, stage_progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    assert isinstance(stage_progress(3, console), PlainStageProgress)
    now = [0.0]
    progress = PlainStageProgress(1, console, every=30, clock=lambda: now[0])

    class S:
        label = "generate/a-shard0"

    progress.start(S, 0, 1)
    progress.set_total(100)
    for _ in range(100):
        now[0] += 1
        progress.advance(1)
    progress.finish(S, skipped=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/1] generate/a-shard0: started"
    assert lines[1:4] == ["    generate/a-shard0: 30/100 (30%), 30 s", "    generate/a-shard0: 60/100 (60%), 60 s",
                          "    generate/a-shard0: 90/100 (90%), 90 s"]
    assert lines[4] == "[1/1] generate/a-shard0: finished in 100 s"
