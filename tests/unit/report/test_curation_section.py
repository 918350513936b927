"""The curation report section on hand-made stage outputs: the kept table from the curate stages'
summaries, and curated vs uncurated metrics paired on (target, seed, generation)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from collapselab.config.spec import Condition
from collapselab.report.curation import build
from collapselab.report.sections import SectionContext

CURATED = Condition(kind="single", sources=("a",), curation="short")
PLAIN = Condition(kind="single", sources=("a",))
OTHER = Condition(kind="single", sources=("b",), curation="short")  # no uncurated twin in the run


class Store:
    """A run store stand-in: stage name → folder; ``done`` names the finished ones."""

    def __init__(self, root: Path, done: set[str]) -> None:
        self.root, self.done = root, done

    def final_dir(self, ref):
        return self.root / ref

    def is_done(self, ref) -> bool:
        return ref in self.done


def summary(condition: str, **kw) -> dict:
    return {"condition": condition, "curation": "short", "score": "length", "rule": "keep_rate", "kept_end": "low",
            "scoring_model": None, "generation": 0, "data_seed": None, "n": 10, "eligible": 9, "kept": 5,
            "dropped": 5, "dropped_empty": 1, "copies": 5, "keep_rate": 0.5, "cut": 12.0,
            "scores_kept": {"median": 8.0}, "scores_dropped": {"median": 20.5}, **kw}


def aggregate(condition: str, metric: str, value: float, *, seed=42, generation=0, hib=True) -> dict:
    return {"set_name": f"{condition}-{seed}-{generation}", "set_kind": "condition", "condition": condition,
            "target": "tiny", "seed": seed, "generation": generation, "metric": metric, "higher_is_better": hib,
            "statistic": "mean", "primary": True, "value": value, "ci_low": value - 1, "ci_high": value + 1}


def context(tmp_path: Path, conditions, summaries: dict[str, dict], done: set[str], aggregates: pd.DataFrame):
    stages = []
    for name, s in summaries.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
        stages.append(SimpleNamespace(kind="curate", ref=name))
    stages.append(SimpleNamespace(kind="mix", ref="mix"))
    spec = SimpleNamespace(conditions=conditions)
    return SectionContext(spec, stages, Store(tmp_path, done), SimpleNamespace(aggregates=aggregates))


def test_kept_table_and_the_paired_comparison(tmp_path):
    rows = [aggregate(CURATED.label, "distinct_2", 0.6), aggregate(PLAIN.label, "distinct_2", 0.5),
            aggregate(CURATED.label, "human_perplexity", 3.0, hib=False),
            aggregate(PLAIN.label, "human_perplexity", 2.5, hib=False),
            aggregate(CURATED.label, "distinct_2", 0.1, seed=7), aggregate(PLAIN.label, "distinct_2", 0.3, seed=7),
            aggregate(PLAIN.label, "self_bleu", 0.3),  # no curated counterpart: left out
            {**aggregate(CURATED.label, "distinct_2", 99.0), "primary": False, "statistic": "sd"}]
    ctx = context(tmp_path, [PLAIN, CURATED, OTHER],
                  {"c1": summary(CURATED.label), "c2": summary(OTHER.label, kept=4, copies=4), "c3": summary("x")},
                  done={"c1", "c2"}, aggregates=pd.DataFrame(rows))
    section = build(ctx)
    assert section is not None and section.key == "curation"
    kept, comparison = section.tables
    # the unfinished stage c3 is not read; constant columns (generation, data seed, copies) are left out
    assert kept.frame["condition"].tolist() == [CURATED.label, OTHER.label]
    assert {"generation", "data seed", "copies"}.isdisjoint(kept.columns)
    first = kept.frame.iloc[0]
    assert (first["keep rate"], first["cut"], first["median kept"], first["median dropped"]) == \
        ("0.500", "12.00", "8.00", "20.50")
    assert first["of which empty"] == "1"
    # paired on seed (which varies, so it is shown); the sd row and the unpaired metric are not
    frame = comparison.frame
    assert frame["seed"].tolist() == ["42", "42", "7"]
    assert frame["metric"].tolist() == ["distinct_2 ↑", "human_perplexity ↓", "distinct_2 ↑"]
    assert frame["difference"].tolist() == ["0.1000", "0.5000", "−0.2000"]
    assert frame["curated"].iloc[0].startswith("0.6000 [")
    # emphasised where curation is better by the metric's direction: only the first row
    assert comparison.highlight == {(0, "curated")}
    assert PLAIN.label in comparison.caption and CURATED.label in comparison.caption
    assert "single:b|curate=short has no uncurated twin" in section.intro


def test_no_curation_no_section(tmp_path):
    ctx = context(tmp_path, [PLAIN], {}, done=set(), aggregates=pd.DataFrame())
    assert build(ctx) is None


def test_missing_metrics_and_stages_are_warnings_not_failures(tmp_path):
    ctx = context(tmp_path, [PLAIN, CURATED], {}, done=set(), aggregates=pd.DataFrame())
    section = build(ctx)
    assert section is not None and section.tables == []
    assert any("no curate stage has finished" in w for w in section.warnings)
    assert any("no Experiment 1 metrics" in w for w in section.warnings)


def test_the_section_is_registered():
    from collapselab.report.sections import SECTIONS

    assert SECTIONS.get("curation").build is build


@pytest.mark.parametrize("generation", [None, 0])
def test_a_table_without_generation_pairs_as_generation_zero(tmp_path, generation):
    rows = [aggregate(CURATED.label, "m", 1.0), aggregate(PLAIN.label, "m", 2.0)]
    frame = pd.DataFrame(rows)
    if generation is None:
        frame = frame.drop(columns=["generation"])
    ctx = context(tmp_path, [PLAIN, CURATED], {"c": summary(CURATED.label)}, done={"c"}, aggregates=frame)
    comparison = build(ctx).tables[1]
    assert comparison.frame["difference"].tolist() == ["−1.00"]
    assert comparison.highlight == set()  # lower on a higher-is-better metric: not emphasised
