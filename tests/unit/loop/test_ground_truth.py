"""The real pipeline (prepare → generate → mix → train, recursively) with toy models against the
exact expectations of :mod:`collapselab.loop.closed_form`.

A toy source ``toy/unigram:types=30,zipf=0.5,length=2`` answers 16 train prompts (n = 32 tokens
per generation); a toy target is refitted by counting on each generation's training set and
answers the prompts again. ``seed_scope: data`` gives every seed its own draw of generation 0 and
its own chain, so the seeds are independent replicates of the Wright–Fisher loop. The fast tests
run 12 seeds × 4 generations; the slow ones 24 seeds × 5 generations.

Tolerance: per generation the seeds' mean must lie within z standard errors of the expectation,
the standard error being the k seeds' sample sd / √k. If the per-seed values are normal with the
expected mean, (mean − expected)/se is Student-t with k − 1 degrees of freedom and one
generation's check trips by chance with probability P(|t_{k−1}| > z): 9.0e-4 for the fast runs
(k = 12, z = 4.5), 5.6e-4 for the slow ones (k = 24, z = 4); with 20 and 25 checks per file that is
at most ≈ 1.8% and 1.4% (and the runs are seeded: a given code version passes or fails every
time). The loop broken on purpose (each generation trains on the previous generation's training
data instead of its model's samples) misses the expectations by far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from collapselab.loop.closed_form import expected_distinct, expected_sq_error, within_tolerance
from collapselab.models.toy import zipf_probabilities
from collapselab.pipeline.experiments.spine import build_spine
from collapselab.pipeline.experiments.spine import run as spine_run
from collapselab.pipeline.graph import build_graph
from collapselab.store.atomic import read_jsonl
from collapselab.store.run import RunStore
from collapselab.train.toy import read_counts
from tests.helpers import write_corpus

TYPES, ZIPF, LENGTH, PROMPTS = 30, 0.5, 2, 16
N = PROMPTS * LENGTH  # tokens per generation: the closed form's n
P = zipf_probabilities(TYPES, ZIPF)
#: (seeds, generations, z) of the fast and the slow runs (see the module docstring)
FAST, SLOW = (12, 4, 4.5), (24, 5, 4.0)
SPINE_KINDS = ("prepare", "generate", "mix", "train")  # the loop itself: no respond, no experiment stages


def _run(tmp: Path, mode: str, seeds: int, generations: int):
    """Run the loop through the executor the CLI uses; the run's spec, store and spine."""
    corpus = write_corpus(tmp / "corpus.jsonl", n=PROMPTS + 4)
    config = {
        "name": "ground-truth", "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.1, "train_size": PROMPTS, "test_size": 1, "seed": 1},
        # the closed form's model: plain sampling (temperature 1, no nucleus) in every generation
        "decoding": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "seed": 3, "system_prompt": None},
        "sources": [{"name": "src", "model": {"id": f"toy/unigram:types={TYPES},zipf={ZIPF},length={LENGTH}"}}],
        "conditions": ["single:src"], "targets": [{"id": "toy/unigram"}],
        "seeds": list(range(1, seeds + 1)), "seed_scope": "data",
        "generations": {"count": generations, "mode": mode},
        "collapse": {"enabled": False}, "safety": {"enabled": False}, "preference": {"enabled": False},
        "run": {"threads": 1},
    }
    (tmp / "loop.yaml").write_text(yaml.safe_dump(config))
    spec = load_config(tmp / "loop.yaml", use_env=False)
    stages = [s for s in build_graph(spec) if s.kind in SPINE_KINDS]
    run_stages(spec, tmp / "out", stages=stages)
    return spec, RunStore(tmp / "out"), build_spine(spec)


def _measure(run) -> dict[str, np.ndarray]:
    """Per seed (rows) and generation (columns): distinct types among the generation's samples
    (its generate stages' answers), distinct types of its training set (the mix) and the squared
    error ‖p̂_g − p‖² of the model trained on it (the train stage's stored counts)."""
    spec, store, spine = run
    tname = spine.target_names[0]
    out = {k: np.zeros((len(spec.seeds), spec.generations.count)) for k in ("samples", "training", "sq_error")}
    for i, seed in enumerate(spec.seeds):
        for g in range(spec.generations.count):
            train = spine.trains[(tname, "single:src", seed, g)]
            mix = train.inputs[0]
            answers = [r["response"] for s in mix.inputs if s.kind == "generate"
                       for r in read_jsonl(store.final_dir(s.ref) / "synthetic.jsonl")]
            assert len(answers) == PROMPTS and all(len(a.split()) == LENGTH for a in answers)
            out["samples"][i, g] = len({t for a in answers for t in a.split()})
            examples = read_jsonl(store.final_dir(mix.ref) / "train.jsonl")
            out["training"][i, g] = len({t for e in examples for t in e["response"].split()})
            counts = read_counts(store.final_dir(train.ref) / "adapter")
            total = sum(counts.values())
            assert total == N * (g + 1 if spec.generations.mode == "accumulate" else 1)
            fitted = np.array([counts.get(f"w{k}", 0) / total for k in range(TYPES)])
            assert set(counts) <= {f"w{k}" for k in range(TYPES)}
            out["sq_error"][i, g] = float(np.sum((fitted - P) ** 2))
    return out


@pytest.fixture(scope="module", params=[pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow",
                                                                                      marks=pytest.mark.slow)])
def size(request):
    return request.param


@pytest.fixture(scope="module")
def replace_run(tmp_path_factory, size):
    seeds, generations, _ = size
    return _measure(_run(tmp_path_factory.mktemp("loop-replace"), "replace", seeds, generations))


@pytest.fixture(scope="module")
def accumulate_run(tmp_path_factory, size):
    seeds, generations, _ = size
    return _measure(_run(tmp_path_factory.mktemp("loop-accumulate"), "accumulate", seeds, generations))


def _check(measured: np.ndarray, expected: np.ndarray, z: float) -> None:
    result = within_tolerance(measured, expected, z=z)
    assert result.ok, result.describe()


def test_replace_matches_the_wright_fisher_expectations(replace_run, size) -> None:
    _, generations, z = size
    expected_types = expected_distinct(P, N, generations, "replace")
    # the decay must be strong, or agreement would say little: nearly half the types gone by the end
    assert expected_types[-1] < 0.6 * expected_types[0]
    _check(replace_run["samples"], expected_types, z)
    np.testing.assert_array_equal(replace_run["training"], replace_run["samples"])  # replace: the samples only
    _check(replace_run["sq_error"], expected_sq_error(P, N, generations, "replace"), z)
    # a type lost is lost for good: no chain regains one
    assert np.all(np.diff(replace_run["training"], axis=1) <= 0)


def test_accumulate_matches_its_expectations_and_stays_bounded(replace_run, accumulate_run, size) -> None:
    _, generations, z = size
    _check(accumulate_run["samples"], expected_distinct(P, N, generations, "accumulate"), z)
    _check(accumulate_run["training"], expected_distinct(P, N, generations, "accumulate", of="training"), z)
    expected_error = expected_sq_error(P, N, generations, "accumulate")
    _check(accumulate_run["sq_error"], expected_error, z)
    # Gerstgrasser et al. 2024: accumulating keeps the error below H0·π²/(6n); replacing does not
    bound = (1 - np.sum(P**2)) * np.pi**2 / (6 * N)
    assert np.all(expected_error < bound)
    acc, rep = accumulate_run["sq_error"], replace_run["sq_error"]
    se = lambda x: x.std(axis=0, ddof=1) / np.sqrt(len(x))  # noqa: E731
    assert np.all(acc.mean(axis=0) <= bound + z * se(acc))
    assert rep.mean(axis=0)[-1] > 2 * bound
    assert rep.mean(axis=0)[-1] - acc.mean(axis=0)[-1] > z * np.hypot(se(rep)[-1], se(acc)[-1])
    # accumulate never loses a type from its training data
    assert np.all(np.diff(accumulate_run["training"], axis=1) >= 0)


def test_the_check_fails_when_the_loop_is_broken(tmp_path, monkeypatch) -> None:
    """Each generation ≥ 1 trains on the previous generation's training set (relabelled) instead of
    its model's samples: the chain never moves past generation 0's fit."""

    def stale_generation(ctx, new, train, generation):
        previous = next(s for s in ctx.stage.inputs if s.kind == "generate").params.chain_train.inputs[0]
        return [{**e, "id": f"{spine_run.prompt_of(e['id'])}@g{generation}", "generation": generation}
                for e in read_jsonl(ctx.input_dir(previous) / "train.jsonl")]

    monkeypatch.setattr(spine_run, "_next_generation", stale_generation)
    seeds, generations, z = 6, 4, FAST[2]
    broken = _measure(_run(tmp_path, "replace", seeds, generations))
    for key, expected in (("training", expected_distinct(P, N, generations, "replace")),
                          ("sq_error", expected_sq_error(P, N, generations, "replace"))):
        result = within_tolerance(broken[key], expected, z=z)
        assert not result.ok, f"{key}: the broken loop passed\n{result.describe()}"
        assert 0 not in result.failed  # generation 0 is untouched; the later ones miss
    # the training data really is generation 0's every time
    assert np.all(broken["training"] == broken["training"][:, :1])


def test_the_stored_fit_is_the_training_sets_counts(tmp_path) -> None:
    """The train stage's counts are the mix's tokens, and the fitted model keeps the answer length."""
    spec, store, spine = _run(tmp_path, "replace", 2, 2)
    train = spine.trains[(spine.target_names[0], "single:src", 2, 1)]
    examples = read_jsonl(store.final_dir(train.inputs[0].ref) / "train.jsonl")
    tokens = [t for e in examples for t in e["response"].split()]
    assert read_counts(store.final_dir(train.ref) / "adapter") == {t: tokens.count(t) for t in set(tokens)}
    stored = json.loads((store.final_dir(train.ref) / "adapter" / "toy_unigram.json").read_text())
    assert stored["length"] == LENGTH and stored["seed"] == 2
