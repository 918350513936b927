"""A run SIGKILLed in the middle of a stage resumes and ends with exactly the outputs of an
uninterrupted run with the same seed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import tiny_config, write_corpus


def start_run(cfg: Path, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "collapselab", "run", str(cfg), "-o", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("kill point never reached")


def artifact_digests(run_dir: Path) -> dict[str, str]:
    """Hashes of every artifact, leaving out what legitimately differs (timings, provenance)."""
    skip = {"provenance.json", "_DONE", "summary.json", "train_summary.json", "stage.json"}
    out = {}
    for p in sorted((run_dir / "stages").rglob("*")):
        if not p.is_file() or p.name in skip:
            continue
        data = p.read_bytes()
        if p.name == "details.json":  # metric details carry their timings
            details = json.loads(data)
            for entry in details.values():
                if isinstance(entry, dict):
                    entry.pop("seconds", None)
            data = json.dumps(details, sort_keys=True).encode()
        out[str(p.relative_to(run_dir))] = hashlib.sha256(data).hexdigest()
    return out


def test_sigkill_mid_stage_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=48)
    cfg = tiny_config(
        tmp_path, tiny_model_dir, corpus,
        split={"test_fraction": 0.25, "train_size": 24, "test_size": 6, "seed": 1},
        decoding={"max_new_tokens": 24, "seed": 3},
        # a real (tiny, bf16) model as a source, so generation takes long enough to be killed in
        sources=[{"name": "a", "model": {"id": f"hf/{tiny_model_dir}", "batch_size": 2}},
                 {"name": "b", "model": {"id": "mock/echo"}}],
        conditions=["vanilla", "single:a", "multi:a,b"],
    )
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "collapselab", "run", str(cfg), "-o", str(reference)],
                   check=True, capture_output=True, timeout=600)

    run_dir = tmp_path / "killed"
    stages = run_dir / "stages"

    def mid_generation():
        logs = list(stages.glob("generate/.partial-*/partial.jsonl"))
        return any(p.stat().st_size > 0 for p in logs)

    kill_when(start_run(cfg, run_dir), mid_generation)
    partial = [p for p in stages.glob("generate/.partial-*") if (p / "partial.jsonl").exists()]
    assert partial, "the kill did not land inside a generate stage"
    assert not (stages / "generate" / partial[0].name.removeprefix(".partial-") / "_DONE").exists()

    def mid_training():
        return any(stages.glob("train/.partial-*"))

    kill_when(start_run(cfg, run_dir), mid_training)
    assert any(stages.glob("train/.partial-*"))

    final = subprocess.run([sys.executable, "-m", "collapselab", "run", str(cfg), "-o", str(run_dir)],
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert artifact_digests(run_dir) == artifact_digests(reference)
    assert not list(stages.glob("*/.partial-*"))
