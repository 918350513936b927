"""The end-to-end check of bench/gpu.py, run as a child process (its own CUDA context,
registries and timeout): the unit tests' small experiment (tests/helpers.py) with the tiny
random-init hf target, run by the local executor; writes what ran, and the peak CUDA memory of
each stage, to ``WORK/e2e.json``.

    python bench/_gpu_e2e.py WORK [--dry-run]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


def e2e_child(work: Path, dry_run: bool) -> None:
    """Child process of :func:`run_e2e`: build the tiny target and a tiny sentence embedder, run
    the small experiment with the local executor, write what ran and where to ``work/e2e.json``."""
    import torch

    from collapselab.config.load import load_config
    from collapselab.executors import run_stages
    from collapselab.executors.base import StageProgress
    from collapselab.models.tiny import build_tiny_model
    from tests.helpers import tiny_config, write_corpus

    cuda = torch.cuda.is_available() and not dry_run
    model_dir = build_tiny_model(work / "tiny-model")
    embedder = _tiny_embedder(model_dir, work / "tiny-embedder")
    corpus = write_corpus(work / "corpus.jsonl")
    dtype = "bfloat16" if cuda else "float32"
    config = tiny_config(
        work, model_dir, corpus,
        conditions=["vanilla", "human", "single:a"],
        targets=[{"id": f"hf/{model_dir}", "batch_size": 4, "dtype": dtype}],
        lora={"epochs": 1, "batch_size": 4, "max_length": 96, "val_fraction": 0.2, "eval_every": 2,
              "dtype": dtype, "learning_rate": 1e-3},
        collapse={"metrics": ["distinct", "length"], "bootstrap": 20, "jackknife_groups": 4,
                  "embedding_model": str(embedder)},
    )
    spec = load_config(config, [], use_env=False)

    def allocations() -> int:
        """CUDA allocations made so far by this process (a cumulative count)."""
        return int(torch.cuda.memory_stats().get("allocation.all.allocated", 0)) if cuda else 0

    class Watch(StageProgress):
        """Per stage: its CUDA allocations (a stage that ran anything on the GPU made some) and its
        peak CUDA memory (reset at its start; models kept by the executor's pool count too)."""

        def __init__(self) -> None:
            self.stages: list[dict[str, Any]] = []
            self.started, self.allocated = 0.0, 0

        def start(self, stage: Any, index: int, total: int) -> None:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.started, self.allocated = time.perf_counter(), allocations()
            print(f"  stage {index + 1}/{total} {stage.label}", flush=True)

        def finish(self, stage: Any, skipped: bool) -> None:
            if not skipped:
                self.stages.append({
                    "label": stage.label, "kind": stage.kind, "seconds": round(time.perf_counter() - self.started, 3),
                    "cuda_allocations": allocations() - self.allocated,
                    "cuda_peak_gib": _gib(torch.cuda.max_memory_allocated()) if cuda else 0.0,
                })

    watch = Watch()
    started = time.perf_counter()
    report = run_stages(spec, work / "run", progress=watch)
    run_s = time.perf_counter() - started
    result = {
        "device": "cuda" if cuda else "cpu", "target_dtype": dtype, "ran": report.ran,
        "run_s": round(run_s, 2), "stages": watch.stages,
        "cuda_peak_gib": _gib(torch.cuda.max_memory_allocated()) if cuda else 0.0,
        "cuda_stage_kinds": sorted({s["kind"] for s in watch.stages if s["cuda_allocations"] > 0}),
        "train_summaries": sorted(str(p.relative_to(work / "run"))
                                  for p in (work / "run").rglob("train_summary.json")),
    }
    (work / "e2e.json").write_text(json.dumps(result, indent=2))


def _tiny_embedder(model_dir: Path, out: Path) -> Path:
    """A sentence-transformers folder around the tiny random-init model (mean pooling): the
    packaged MiniLM is a PyPI package the GPU machine does not have."""
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(model_dir))
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(out))
    return out


if __name__ == "__main__":
    e2e_child(Path(sys.argv[1]), "--dry-run" in sys.argv[2:])
