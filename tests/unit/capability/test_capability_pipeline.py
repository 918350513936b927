"""The whole tiny pipeline (every condition, Experiment 1 included) with ``capability.enabled``:
one capability stage per trained cell and one vanilla stage, and a report with the section."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from collapselab.config.load import load_config  # noqa: E402
from collapselab.executors import run_stages  # noqa: E402
from collapselab.pipeline.graph import build_graph  # noqa: E402
from tests.helpers import tiny_config, write_corpus  # noqa: E402

# slow: runs the whole tiny pipeline (training, answers, Experiment 1's metrics)
pytestmark = pytest.mark.slow

TASK = Path(__file__).resolve().parents[2] / "data" / "capability" / "tiny_mc.yaml"


def test_the_tiny_pipeline_with_capability(tmp_path, tiny_model_dir):
    from collapselab.report.inputs import collect
    from collapselab.report.markdown import render_markdown

    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      capability={"enabled": True, "tasks": [str(TASK)], "limit": 6})
    spec = load_config(cfg, use_env=False)
    report = run_stages(spec, tmp_path / "out")
    capability = [s for s in build_graph(spec) if s.kind == "capability"]
    # the vanilla target once, and each of the three trained conditions' adapters
    assert sorted(s.params.condition.label for s in capability) == ["human", "multi:a,b", "single:a", "vanilla"]
    assert {s.label for s in capability} <= set(report.ran)
    inputs = collect(spec, tmp_path / "out")
    diffs = inputs.capability.differences
    assert set(diffs["condition"]) == {"human", "single:a", "multi:a,b"} and (diffs["n_items"] == 6).all()
    assert "## Capability (lm-evaluation-harness)" in render_markdown(inputs)
