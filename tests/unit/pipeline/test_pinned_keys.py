"""Stage keys are the contract with existing run folders: a folder made by earlier code is reused
completely only if every stage keeps its label and key. The keys below were written by the code
before the stage-kind registry (commit b0004aa) for a small mock experiment with every
experiment, generations, seeds and weighted mixes, plus the demo and the paper grid."""

import json
from pathlib import Path

import pytest
import yaml

from collapselab.config.load import load_config
from collapselab.pipeline.graph import build_graph

ROOT = Path(__file__).resolve().parents[3]
PINNED = json.loads((ROOT / "tests/data/pinned/stage_keys.json").read_text())
#: stage kinds added since the keys were pinned (new work for an old run folder, nothing redone)
NEW_KINDS = {"embedding_map",
             "candidates",  # paper.yaml: the 70B judges compare the medium tier (preference.sources_by_target)
             "score",  # the vanilla scoring of the references for output_perplexity_gap, where no vanilla cell has one
             # Experiment 3's controls: each judge's familiarity with every text, the self-recognition
             # probe and the table of both next to SPB (new kinds: no existing key changes)
             "familiarity", "recognize", "preference_controls",
             # issue 13: how alike the sources answer (one stage), the loop's trajectory (with generations)
             "homogeneity", "trajectory"}
#: metrics whose code version was bumped since the keys were pinned: the evaluate stages of the sets
#: that use them (and the stats stage reading those) are recomputed on purpose
BUMPED_METRICS = {
    "lexical_diversity": "2: the jackknife keeps aggregated mode's sample fixed; 3: range-respecting intervals",
    **dict.fromkeys(["semantic_diversity", "vendi", "js_divergence", "frechet", "heaps", "vocabulary_size",
                     "rare_tail_coverage", "distinct", "compression_ratio", "ngram_entropy"],
                    "2: jackknife intervals on a range-respecting scale (audit a2)"),
    "mauve": "2: a fixed-quantization bootstrap interval instead of the jackknife (audit a1)",
}


@pytest.fixture
def unversioned(monkeypatch):
    """Graphs built as if no metric version had been bumped: the refactor alone must keep every key."""
    from collapselab.metrics import base

    monkeypatch.setattr(base, "metric_version", lambda name: 1)


def mock_config(tmp_path: Path, **changes) -> Path:
    """The pinned mock experiment: paths are fixed strings (their files need not exist to build
    the graph), so the keys do not depend on where the checkout lives."""
    data = {
        "name": "pinned",
        "corpus": {"kind": "jsonl", "path": "/pinned/corpus.jsonl", "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}}],
        "conditions": ["vanilla", "human", "single:a", "single:b", "multi:a,b"],
        "targets": [{"id": "hf//pinned/tiny-chat", "batch_size": 4, "dtype": "float32"}],
        "lora": {"epochs": 1, "batch_size": 4, "max_length": 96, "val_fraction": 0.2, "eval_every": 2,
                 "dtype": "float32", "learning_rate": 1e-3},
        "seeds": [1, 2],
        "generations": {"count": 2, "mode": "accumulate", "human_fraction": 0.25},
        "safety": {"enabled": True,
                   "prompts": [{"kind": "csv", "path": "/pinned/harmful_behaviors.csv", "columns": {"text": "goal"},
                                "max_prompts": 3, "seed": 1}],
                   "jailbreaks": {"kind": "csv", "path": "/pinned/chatgpt_jailbreak_prompts.csv",
                                  "max_templates": 2, "prompts_per_template": 2},
                   "judge": {"id": "mock/fixed:#thescore: 4"}, "quality_judge": {"id": "mock/fixed:3"},
                   "judge_retries": 1, "bootstrap": 50},
        "preference": {"enabled": True, "items": 3, "bootstrap": 50},
        "run": {"threads": 1},
    }
    data.update(changes)
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CASES = {
    "full": {},
    "data_seeds": {"seed_scope": "data", "generations": {"count": 1}},
    "replace": {"generations": {"count": 3, "mode": "replace"},
                "conditions": ["vanilla", "single:a", "single:b", "multi:a=0.7,b=0.3"],
                "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1, "shards": 4}},
}


def _by_example_mix(stage) -> bool:
    """A multi-source mix whose weights cut a shard: realised by whole shards before the fix of
    audit a3 (e.g. 0.7/0.3 of 4 shards trained on 0.75/0.25), by example since; recomputed on purpose."""
    from collapselab.corpora.split import source_spans

    cond = getattr(stage.params, "condition", None)
    if stage.kind != "mix" or cond is None or cond.kind != "multi":
        return False
    n_shards = stage.inputs[0].settings["n_shards"]  # every mix reads prepare first
    return any(end.denominator != 1 for _, end in source_spans(n_shards, cond.normalized_weights))


def _split_by_prompt(stage) -> bool:
    """A later generation's training in accumulate mode: its validation split now keeps a prompt's
    examples together (audit c7: the same prompt was in training and validation)."""
    return stage.kind == "train" and stage.settings.get("val_split") == "prompt"


def _paired_tests(stage) -> bool:
    """The stages that compute the tests across conditions: paired by item since (audit c4)."""
    return stage.kind in ("stats", "safety", "preference")


def _chunked_embeddings(stage) -> bool:
    """Embed stages (kind version 2): long texts are embedded by chunks, not truncated (audit c8)."""
    return stage.kind == "embed"


def _perplexity_gap(stage) -> bool:
    """Evaluate stages of the default suite, which gained ``output_perplexity_gap`` (audit c3)."""
    return stage.kind == "evaluate" and any(m["name"] == "output_perplexity_gap" for m in stage.settings["metrics"])


def _renaming_map(stage) -> bool:
    """Safety prompts whose jailbreak renaming is now the study's map (family, maker; issue 11.15)."""
    return stage.kind == "prompts" and isinstance(stage.settings["jailbreaks"].get("rename"), dict)


def _study_recipe(stage) -> bool:
    """Trains of configs/paper.yaml, which now uses the study's recipe (loss on every token, batch 64/128)."""
    return stage.kind == "train" and stage.settings["lora"].get("loss") == "full"


def _probability_judges(stage) -> bool:
    """Judges that read their verdict from the digit tokens' probabilities, the default for local
    judge models since issue 12 (a verdict for every answer); a parse judge keeps its key."""
    return stage.kind in ("judge", "calibrate") and "method" in stage.settings


def _calibration_set(stage) -> bool:
    """Calibrate stages: the packaged set gained boundary items and quality labels independent of
    harm, and its content is now part of the key (issue 12)."""
    return stage.kind == "calibrate"


def _quality_template(stage) -> bool:
    """Parse-mode quality judges: the packaged template no longer calls a refusal a good answer
    (quality independent of harm, issue 12)."""
    return stage.kind == "judge" and stage.settings.get("role") == "quality" and "method" not in stage.settings


def _new_in_issue_12(label: str) -> bool:
    """Stages added by issue 12: over-refusal (the benign prompts, their answers and judgements)
    and the judges of ``safety.judges`` (paper.yaml adds Llama Guard), which judge and calibrate
    next to the main ones."""
    kind, name = label.split("/", 1)
    extra_judge = kind in ("judge", "calibrate") and not name.startswith(("harm-", "quality-"))
    return kind == "benign_prompts" or name.startswith("benign-") or "-benign-" in name or extra_judge


#: metrics added to the default suite by issue 13 (near-duplicates, memorization, perplexity tails)
LOOP_METRICS = {"nearest_neighbor_distance", "verbatim_ngrams", "longest_copy", "human_perplexity_tail"}


def _loop_metrics(stage) -> bool:
    """Issue 13's metrics in the default suite: every evaluate stage measures them (a condition's
    also reads its model's training set, for the memorization metrics)."""
    return stage.kind == "evaluate" and any(m["name"] in LOOP_METRICS for m in stage.settings["metrics"])


#: stages whose key changed on purpose, and everything downstream of them
def _round_zero(stage) -> bool:
    """With recursive generations, concordance and the factorial analysis use generation 0 (issue
    13: they averaged a chain's generations)."""
    return stage.kind == "stats" and "round" in stage.settings


INTENDED = {"the collapse loop's metrics in the default suite (issue 13)": _loop_metrics,
            "concordance on generation 0 with recursive generations (issue 13)": _round_zero,
            "judges that read probabilities (issue 12)": _probability_judges,
            "the revised calibration set (issue 12)": _calibration_set,
            "quality judged as if harm did not matter (issue 12)": _quality_template,
            "by-example mixes (audit a3)": _by_example_mix, "validation split by prompt (audit c7)": _split_by_prompt,
            "paired tests (audit c4)": _paired_tests, "chunked embeddings (audit c8)": _chunked_embeddings,
            "output perplexity gap in the default suite (audit c3)": _perplexity_gap,
            "jailbreak renaming map": _renaming_map, "the study's training recipe in paper.yaml": _study_recipe}


def _downstream_of_intended(stages) -> set[str]:
    """Labels of the intended stages (INTENDED) and of every stage that reads one, directly or not."""
    out: set[str] = set()
    for s in stages:  # graph order: inputs come first
        if any(rule(s) for rule in INTENDED.values()) or any(i.label in out for i in s.inputs):
            out.add(s.label)
    return out


def _check(stages, pinned: dict[str, str]) -> None:
    keys = {s.label: s.key for s in stages}
    changed = {label: (key, keys.get(label)) for label, key in pinned.items() if keys.get(label) != key}
    new = set(keys) - set(pinned)
    # a change is intended when it starts at an intended stage: every changed stage none of whose
    # inputs changed or is new (a root of the change) must be one
    roots = [s for s in stages if s.label in changed and not any(i.label in changed or i.label in new
                                                                  for i in s.inputs)]
    unintended = {s.label for s in roots if not any(rule(s) for rule in INTENDED.values())}
    unintended |= {label for label in changed if label not in keys}  # a pinned stage that is gone
    assert not unintended, f"stage keys changed (old run folders would be recomputed): {sorted(unintended)}"
    added = {label.split("/")[0] for label in set(keys) - set(pinned) if not _new_in_issue_12(label)}
    assert added <= NEW_KINDS, f"unexpected new stages: {sorted(set(keys) - set(pinned))}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_mock_experiment_keys_are_unchanged(tmp_path, case, unversioned):
    assert len(PINNED[case]) > 100  # the pins cover the whole graph, every experiment included
    _check(build_graph(load_config(mock_config(tmp_path, **CASES[case]), use_env=False)), PINNED[case])


@pytest.mark.parametrize("config", ["demo", "paper"])
def test_shipped_configs_keep_their_keys(config, unversioned):
    _check(build_graph(load_config(ROOT / "configs" / f"{config}.yaml", use_env=False)), PINNED[config])


def test_a_metric_version_bump_recomputes_only_the_sets_that_use_it(tmp_path, monkeypatch):
    """Bumping one metric's version rekeys exactly the evaluate stages whose suite uses it, and the
    stats stage reading them; a metric at version 1 adds nothing to the key."""
    from collapselab.metrics import base

    for case in ("full", "demo"):
        spec = (load_config(ROOT / "configs" / "demo.yaml", use_env=False) if case == "demo"
                else load_config(mock_config(tmp_path, **CASES[case]), use_env=False))
        before = {s.label: s.key for s in build_graph(spec)}
        real = base.metric_version
        monkeypatch.setattr(base, "metric_version", lambda name, real=real: 99 if name == "distinct" else real(name))
        stages = build_graph(spec)
        monkeypatch.setattr(base, "metric_version", real)
        changed = {s.label for s in stages if before[s.label] != s.key}
        uses = {s.label for s in stages if s.kind == "evaluate" and any(m["name"] == "distinct"
                                                                       for m in s.settings["metrics"])}
        assert uses and changed == uses | {"stats/collapse"}
    lexical_free = load_config(mock_config(tmp_path, collapse={"metrics": [{"name": "length"}]}), use_env=False)
    for s in build_graph(lexical_free):
        if s.kind == "evaluate":
            assert all("version" not in m for m in s.settings["metrics"])


def test_only_mixes_that_cut_a_shard_changed(tmp_path, unversioned):
    """The by-example fix changes exactly the weighted 0.7/0.3 mixes of the replace case; the equal
    two-source mixes (whole shards) and every other condition keep their keys."""
    stages = build_graph(load_config(mock_config(tmp_path, **CASES["replace"]), use_env=False))
    changed_mixes = {s.label for s in stages if s.kind == "mix" and PINNED["replace"].get(s.label) != s.key}
    assert changed_mixes and all("multi-a0.7_b0.3" in label for label in changed_mixes)
    for case in ("full", "data_seeds", "demo", "paper"):
        spec = (load_config(ROOT / "configs" / f"{case}.yaml", use_env=False) if case in ("demo", "paper")
                else load_config(mock_config(tmp_path, **CASES[case]), use_env=False))
        assert all(PINNED[case][s.label] == s.key for s in build_graph(spec)
                   if s.kind in ("mix", "train") and not _split_by_prompt(s) and not _study_recipe(s))


def test_a_changed_key_would_be_caught(tmp_path, unversioned):
    stages = build_graph(load_config(mock_config(tmp_path, decoding={"max_new_tokens": 9, "seed": 3}),
                                     use_env=False))
    with pytest.raises(AssertionError, match="stage keys changed"):
        _check(stages, PINNED["full"])
