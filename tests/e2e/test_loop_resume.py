"""The collapse loop's new stages (issue 13) — curation, k answers per prompt, the loop's
trajectory and the sources' homogeneity, a closed multi-source loop with accumulate-subsample —
SIGKILLed in the middle of a curate and a sample stage, then resumed: the run ends with exactly the
outputs of an uninterrupted one."""

import subprocess
import sys

from tests.e2e.test_resume import artifact_digests, kill_when, start_run
from tests.helpers import tiny_config, write_corpus


def test_new_stages_resume_after_sigkill(tmp_path, tiny_model_dir):
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=48)
    cfg = tiny_config(
        tmp_path, tiny_model_dir, corpus,
        split={"test_fraction": 0.25, "train_size": 24, "test_size": 6, "seed": 1},
        decoding={"max_new_tokens": 12, "seed": 3},
        conditions=["vanilla", "single:a", "single:b", "multi:a,b", "single:a|curate=fluent"],
        # the scoring model is the tiny target: slow enough to be killed while it scores
        curation=[{"name": "fluent", "score": "perplexity", "keep_rate": 0.5}],
        generations={"count": 2, "mode": "accumulate-subsample", "multi_loop": "closed", "human_count": 2},
        collapse={"metrics": ["distinct", "length"], "bootstrap": 20, "jackknife_groups": 4,
                  "samples": {"k": 3, "prompts": 4}},
    )
    reference = tmp_path / "reference"
    done = subprocess.run([sys.executable, "-m", "collapselab", "run", str(cfg), "-o", str(reference)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert any((reference / "stages" / kind).iterdir() for kind in ("curate", "sample", "trajectory"))

    run_dir = tmp_path / "killed"
    stages = run_dir / "stages"
    for kind in ("curate", "sample"):
        kill_when(start_run(cfg, run_dir), lambda kind=kind: any(stages.glob(f"{kind}/.partial-*")))
        assert any(stages.glob(f"{kind}/.partial-*")), f"the kill did not land inside a {kind} stage"

    final = subprocess.run([sys.executable, "-m", "collapselab", "run", str(cfg), "-o", str(run_dir)],
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert artifact_digests(run_dir) == artifact_digests(reference)
    assert not list(stages.glob("*/.partial-*"))
