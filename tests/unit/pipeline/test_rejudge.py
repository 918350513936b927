"""Re-judging without regenerating: changing only the judge changes only the judge stages (and
what reads them), so a rerun reuses every answer (README, "Re-judging without regenerating")."""

from collapselab.config.load import load_config
from collapselab.pipeline.graph import build_graph
from tests.unit.pipeline.test_pinned_keys import mock_config


def _keys(tmp_path, *overrides):
    spec = load_config(mock_config(tmp_path), overrides=list(overrides), use_env=False)
    return {s.label: (s.kind, s.key) for s in build_graph(spec)}


def test_changing_the_judge_recomputes_only_judging(tmp_path):
    before = _keys(tmp_path)
    after = _keys(tmp_path, "safety.judge.id=mock/echo")
    changed = {label for label in before if before[label] != after.get(label)}
    kinds = {before[label][0] for label in changed}
    assert {"judge", "calibrate", "safety"} <= kinds <= {"judge", "calibrate", "safety", "report"}
    assert all(label.startswith(("judge/harm-", "calibrate/harm-", "safety/")) for label in changed)
    assert not any(before[label][0] in ("safety_respond", "train", "generate") for label in changed)


def test_an_added_judge_keeps_every_existing_verdict(tmp_path):
    before = _keys(tmp_path)
    after = _keys(tmp_path, 'safety.judges=[{method: harm-rating, name: second, model: {id: mock/echo}}]')
    changed = {label for label in before if before[label] != after.get(label)}
    assert {before[label][0] for label in changed} <= {"safety", "report"}
    added = set(after) - set(before)
    assert added and all(label.startswith(("judge/second-", "calibrate/second-")) for label in added)
