"""The early-stopping validation split (audit c7): in accumulate mode one prompt has an example per
generation (ids ``ID@gG``) and all of them must fall on one side; everywhere else the split must
stay exactly what it was (so train stages keep their keys and outputs)."""

import hashlib
import json
import math
import random

import pytest

from collapselab.models.base import ChatPrompt
from collapselab.pipeline.experiments.spine.run import prompt_of, train_examples
from collapselab.train.lora import TrainExample, split_validation


def old_split(ids: list[str], fraction: float, seed: int) -> set[str]:
    """The split before the fix, written out: the ceil(fraction · n) ids (at most n - 1) whose
    sha256(seed, id) ranks lowest."""
    n = len(ids)
    n_val = min(n - 1, math.ceil(fraction * n)) if fraction > 0 and n >= 2 else 0
    return set(sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())[:n_val])


def examples(ids: list[str], group=None) -> list[TrainExample]:
    return [TrainExample(ChatPrompt(i, f"prompt {i}", None), f"answer {i}", i,
                         group=None if group is None else group(i)) for i in ids]


@pytest.mark.parametrize(("n", "fraction", "seed"), [(2, 0.05, 42), (20, 0.05, 42), (97, 0.2, 7), (500, 0.05, 1),
                                                     (33, 0.5, 0), (12, 0.0, 42)])
def test_one_example_per_prompt_keeps_the_old_split(n, fraction, seed):
    rng = random.Random(n)
    ids = [f"dolly-{rng.randrange(10**6)}-{i}" for i in range(n)]
    expected = old_split(ids, fraction, seed)
    for group in (None, lambda i: i):  # no group, or every example its own
        train, val = split_validation(examples(ids, group), fraction, seed)
        assert {e.id for e in val} == expected
        assert [e.id for e in train] == [i for i in ids if i not in expected]  # input order kept


def accumulated(n_prompts: int, generations: int) -> list[dict]:
    """An accumulate-mode mix: generation 0's example ``ID`` and one ``ID@gG`` per later generation."""
    return [{"id": f"p{k:03d}" + (f"@g{g}" if g else ""), "prompt": f"prompt {k}", "response": f"answer {k} {g}"}
            for g in range(generations) for k in range(n_prompts)]


def test_accumulated_generations_of_a_prompt_stay_on_one_side():
    mix = accumulated(40, 3)
    grouped = train_examples(mix, "system", by_prompt=True)
    train, val = split_validation(grouped, 0.05, seed=42)
    assert not {prompt_of(e.id) for e in train} & {prompt_of(e.id) for e in val}
    assert len(val) == 3 * math.ceil(0.05 * 120 / 3)  # whole prompts: 6 examples = 2 prompts × 3
    assert len(train) + len(val) == 120
    # the split by example id (before the fix) puts some prompt on both sides
    plain = train_examples(mix, "system", by_prompt=False)
    train, val = split_validation(plain, 0.2, seed=42)
    assert {prompt_of(e.id) for e in train} & {prompt_of(e.id) for e in val}


@pytest.mark.parametrize("seed", range(20))
def test_no_prompt_straddles_for_any_seed(seed):
    grouped = train_examples(accumulated(25, 4), None, by_prompt=True)
    train, val = split_validation(grouped, 0.1, seed)
    assert val and train
    assert not {prompt_of(e.id) for e in train} & {prompt_of(e.id) for e in val}
    assert math.ceil(0.1 * 100) <= len(val) < math.ceil(0.1 * 100) + 4  # at most one group over the share


def test_prompt_of_strips_only_the_generation_tag():
    assert prompt_of("dolly-12@g3") == "dolly-12" and prompt_of("dolly-12") == "dolly-12"
    assert prompt_of("a@good@g10") == "a@good"


def test_only_accumulated_later_generations_split_by_prompt(tmp_path):
    from collapselab.config.load import load_config
    from collapselab.pipeline.graph import build_graph
    from tests.helpers import write_corpus

    corpus = write_corpus(tmp_path / "c.jsonl", n=40)
    for mode in ("accumulate", "replace"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(json.dumps({
            "corpus": {"kind": "jsonl", "path": str(corpus), "columns": {"id": "id"}},
            "sources": [{"name": "a", "model": {"id": "mock/echo"}}], "conditions": ["human", "single:a"],
            "generations": {"count": 3, "mode": mode}, "targets": ["hf/smollm2-135m-instruct"],
            "collapse": {"enabled": False}}))
        trains = [s for s in build_graph(load_config(path, [])) if s.kind == "train"]
        by_prompt = {s.name for s in trains if s.settings.get("val_split") == "prompt"}
        later = {s.name for s in trains if s.params.generation > 0}
        assert later and by_prompt == (later if mode == "accumulate" else set())
