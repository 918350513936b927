"""Builders shared by the pipeline tests: a small local corpus and experiment configs."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

WORDS = ("river garden letter morning sister dance fortune carriage visit evening promise window "
         "journey weather kindness rain estate cousin music winter").split()


def write_corpus(path: Path, n: int = 36, categories: tuple[str, ...] = ("alpha", "beta", "gamma")) -> Path:
    """A JSONL corpus of ``n`` short instruction/response records in a few categories."""
    rows = []
    for i in range(n):
        w = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(6)]
        rows.append({
            "id": f"r{i:03d}",
            "instruction": f"Write about the {w[0]} and the {w[1]}.",
            "context": "" if i % 3 else f"Background: the {w[2]}.",
            "response": f"The {w[3]} met the {w[4]} near the {w[5]}. It was a fine day.",
            "category": categories[i % len(categories)],
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path: Path, model_dir: Path, corpus: Path, **changes) -> Path:
    """An experiment on the local corpus with mock sources and the tiny hf target."""
    data = {
        "name": "tiny",
        "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [
            {"name": "a", "model": {"id": "mock/random"}},
            {"name": "b", "model": {"id": "mock/echo"}},
        ],
        "conditions": ["vanilla", "human", "single:a", "multi:a,b"],
        "targets": [{"id": f"hf/{model_dir}", "batch_size": 4, "dtype": "float32"}],
        "lora": {"epochs": 1, "batch_size": 4, "max_length": 96, "val_fraction": 0.2, "eval_every": 2,
                 "dtype": "float32", "learning_rate": 1e-3},
        "run": {"threads": 1},
    }
    for dotted, value in changes.items():
        node = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> Iterator:
    """bench/<name>.py as a module ``bench_<name>`` (it imports bench/_machine.py, as when run as a
    script), for a module-scoped fixture to yield; the module, the path entry and the environment
    defaults it sets on import are undone afterwards."""
    environ = dict(os.environ)
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(f"bench_{name}", None)
        sys.path.remove(str(BENCH))
        for key in set(os.environ) - set(environ):
            del os.environ[key]

