"""Sweeps (``collapselab run CONFIG -m …``): splitting override values into axes, naming and
validating the points before anything runs, and a 2 × 2 sweep on mock sources and the toy target
(seconds): every stage the points share runs once, the comparison has every point × condition,
and an interrupted sweep resumes without redoing anything."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from collapselab.config.load import load_config, spec_to_yaml
from collapselab.errors import ConfigError
from collapselab.executors import base, local
from collapselab.pipeline.multirun import (
    expand,
    is_point_done,
    parse_axes,
    point_names,
    run_sweep,
    split_values,
)
from collapselab.report.comparison import Comparison, MetricColumn, render_html, render_markdown
from tests.helpers import write_corpus

AXES = ["lora.r=8,16", "collapse.bootstrap=20,30"]


def sweep_config(tmp_path: Path) -> Path:
    """Mock sources, the toy target (refitted by counting) and three cheap metrics: a whole run in
    seconds. ``lora.r`` changes the train stage's key (and everything after it), ``collapse.bootstrap``
    only the evaluations, so the four points share most of their stages."""
    data = {
        "name": "sw",
        "corpus": {"kind": "jsonl", "path": str(write_corpus(tmp_path / "corpus.jsonl")), "columns": {"id": "id"}},
        "split": {"test_fraction": 0.25, "train_size": 16, "test_size": 6, "seed": 1},
        "decoding": {"max_new_tokens": 8, "seed": 3},
        "sources": [{"name": "a", "model": {"id": "mock/random"}}, {"name": "b", "model": {"id": "mock/echo"}}],
        "conditions": ["vanilla", "single:a"],
        "targets": [{"id": "toy/unigram"}],
        "collapse": {"metrics": ["distinct", "length", "output_perplexity"], "training_data": False},
        "run": {"threads": 1},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- splitting values ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "values"), [
    ("8", ["8"]),
    ("8,16", ["8", "16"]),
    (" 8 , 16 ,32", ["8", "16", "32"]),
    ("[vanilla,human]", ["[vanilla,human]"]),
    ("[vanilla,human],[vanilla,single:a]", ["[vanilla,human]", "[vanilla,single:a]"]),
    ("{temperature: 0.7, top_p: 0.9},{temperature: 1.0}", ["{temperature: 0.7, top_p: 0.9}", "{temperature: 1.0}"]),
    ("'Be brief, please'", ["'Be brief, please'"]),
    ("'a, b','c'", ["'a, b'", "'c'"]),
    ('"say \\"x, y\\"",plain', ['"say \\"x, y\\""', "plain"]),
    ("'it''s, here',x", ["'it''s, here'", "x"]),
    ("[a, 'b,]c'],d", ["[a, 'b,]c']", "d"]),
    ("don't,do", ["don't", "do"]),  # a quote inside a word quotes nothing (YAML's rule)
    ("multi:a\\,b,single:a", ["multi:a,b", "single:a"]),
    ("", [""]),
])
def test_split_values(text, values):
    assert split_values(text) == values


@pytest.mark.parametrize(("text", "message"), [
    ("8,,16", "an empty value"),
    ("8,", "an empty value"),
    ("[a,b", "unclosed '['"),
    ("a]", "unbalanced ']'"),
    ("[a}", "unbalanced '}'"),
    ("'a,b", "unclosed ' quote"),
])
def test_split_values_refuses_what_it_cannot_split_unambiguously(text, message):
    with pytest.raises(ConfigError) as err:
        split_values(text, f"override 'k={text}'")
    assert str(err.value).startswith(f"override 'k={text}': ") and message in str(err.value)


def test_a_single_value_is_a_fixed_override_and_several_are_an_axis():
    fixed, axes = parse_axes(["split.train_size=40", "lora.r=8,16", "conditions=[vanilla,human]",
                              "decoding.temperature=0.7,1.0"])
    assert fixed == ("split.train_size=40", "conditions=[vanilla,human]")
    assert [(a.key, a.values) for a in axes] == [("lora.r", ("8", "16")), ("decoding.temperature", ("0.7", "1.0"))]


def test_an_escaped_comma_reaches_the_config_as_a_comma(tmp_path):
    assert parse_axes(["conditions.1=multi:a\\,b"]) == (("conditions.1=multi:a,b",), ())
    sweep = expand(sweep_config(tmp_path), ["conditions.1=multi:a\\,b", "lora.r=8,16"], use_env=False)
    assert [c.label for c in sweep.points[0].spec.conditions] == ["vanilla", "multi:a,b"]
    quoted = expand(sweep_config(tmp_path), ["conditions.1='multi:a,b',single:b", "lora.r=8"], use_env=False)
    assert [p.spec.conditions[1].label for p in quoted.points] == ["multi:a,b", "single:b"]


def test_a_value_split_at_a_comma_meant_to_stay_says_how_to_quote(tmp_path):
    with pytest.raises(ConfigError) as err:
        expand(sweep_config(tmp_path), ["conditions.1=multi:a,b"], use_env=False)
    assert "sweep point 1/2 conditions.1-multi-a (conditions.1=multi:a)" in str(err.value)
    assert "needs at least two sources" in str(err.value) and "quote it" in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["lora.r=8", "lora.r=16,32"], "lora.r is given twice"),
    (["lora.r=8,16,8"], "the value '8' is given twice"),
    (["lora.r"], "expected key.sub=value"),
    (["lora..r=8,16"], "expected key.sub=value"),
])
def test_parse_axes_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_axes(overrides)


def test_point_names_are_file_safe_unique_and_short():
    names = point_names([{"lora.r": "8", "decoding.temperature": "0.7"},
                         {"conditions": "[vanilla,single:a]", "decoding.system_prompt": "'a/b c'"},
                         {"x": "a b"}, {"x": "a_b"}, {"x": "y" * 300}])
    assert names[:4] == ["lora.r-8_decoding.temperature-0.7",
                         "conditions-vanilla_single-a_decoding.system_prompt-a--b_c", "x-a_b", "x-a_b-2"]
    assert len(names[4]) <= 100 and names[4].startswith("x-yyy")
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") for n in names)


# -- validating every point first ------------------------------------------------------------------
def test_expand_builds_the_product_in_order_and_shares_stages(tmp_path):
    sweep = expand(sweep_config(tmp_path), ["split.train_size=16", *AXES], use_env=False)
    assert [p.settings for p in sweep.points] == [
        {"lora.r": "8", "collapse.bootstrap": "20"}, {"lora.r": "8", "collapse.bootstrap": "30"},
        {"lora.r": "16", "collapse.bootstrap": "20"}, {"lora.r": "16", "collapse.bootstrap": "30"}]
    first = sweep.points[0]
    assert first.spec.lora.r == 8 and first.spec.collapse.bootstrap == 20
    assert first.spec.name == "sw-lora.r-8_collapse.bootstrap-20" and sweep.name == "sw"
    assert first.overrides == ("split.train_size=16", "lora.r=8", "collapse.bootstrap=20")
    assert first.shared == 0 and all(p.shared > 0 for p in sweep.points[1:])
    assert sweep.stage_count < sum(len(p.stages) for p in sweep.points)


def test_a_bad_value_fails_the_whole_sweep_naming_the_point_and_field(tmp_path):
    with pytest.raises(ConfigError) as err:
        expand(sweep_config(tmp_path), ["lora.r=8,abc"], use_env=False)
    text = str(err.value)
    assert "sweep point 2/2 lora.r-abc (lora.r=abc)" in text and "lora.r" in text and "integer" in text
    assert "quote it" in text  # the value might have been split at a comma meant to stay


def test_an_unknown_field_fails_before_running(tmp_path):
    with pytest.raises(ConfigError) as err:
        expand(sweep_config(tmp_path), ["lora.rank=8,16"], use_env=False)
    assert str(err.value).startswith("sweep point 1/2 lora.rank-8 (lora.rank=8): invalid config")
    assert "lora.rank: unknown key" in str(err.value) and "quote" not in str(err.value)


def test_a_sweep_needs_an_axis(tmp_path):
    with pytest.raises(ConfigError, match="no override has several comma-separated values"):
        expand(sweep_config(tmp_path), ["lora.r=8"], use_env=False)


# -- running a sweep -------------------------------------------------------------------------------
class Executions:
    """Counts every stage the local executor really runs (by folder), optionally interrupting
    before the ``stop_at``-th one as a kill would."""

    def __init__(self, monkeypatch, stop_at: int | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.stop_at = stop_at
        real = base.execute_stage  # the executor's own, not another counter's

        def counted(stage, *args, **kwargs):
            if self.stop_at is not None and sum(self.counts.values()) + 1 == self.stop_at:
                raise KeyboardInterrupt
            self.counts[f"{stage.kind}/{stage.ref.dirname}"] += 1
            return real(stage, *args, **kwargs)

        monkeypatch.setattr(local, "execute_stage", counted)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    try:
        runs = Executions(mp)
        sweep = expand(sweep_config(tmp), AXES, use_env=False)
        results = run_sweep(sweep, tmp / "run")
    finally:
        mp.undo()
    return sweep, tmp / "run", results, runs.counts


def test_stages_the_points_share_run_once(swept):
    sweep, _, results, counts = swept
    assert set(counts.values()) == {1}
    assert len(counts) == sweep.stage_count == sum(len(r.ran) for r in results)
    every = {f"{s.kind}/{s.ref.dirname}" for p in sweep.points for s in p.stages}
    assert set(counts) == every
    # the corpus is prepared once, by the first point; the second point only re-evaluates
    assert results[0].ran[0] == "prepare/corpus" and all("prepare/corpus" in r.already_done for r in results[1:])
    assert {label.split("/")[0] for label in results[1].ran} <= {"evaluate", "stats"}
    for point, result in zip(sweep.points, results, strict=True):
        assert len(result.ran) + len(result.already_done) == len(point.stages)
        assert len(result.already_done) == point.shared  # a fresh folder: reused = shared with earlier points


def test_every_point_has_its_config_report_and_record(swept):
    sweep, run_dir, _, _ = swept
    manifest = json.loads((run_dir / "sweep" / "sweep.json").read_text())
    assert [p["name"] for p in manifest["points"]] == [p.name for p in sweep.points]
    for point in sweep.points:
        folder = run_dir / "sweep" / point.name
        assert load_config(folder / "experiment.yaml", use_env=False) == point.spec
        assert (folder / "report" / "report.html").is_file() and (folder / "report" / "results.json").is_file()
        record = json.loads((folder / "point.json").read_text())
        assert record["settings"] == point.settings and record["stages"] == len(point.stages)
        assert is_point_done(point, run_dir)
    # the run folder's own experiment.yaml is the last point that ran (what status --times, lineage read)
    assert (run_dir / "experiment.yaml").read_text() == spec_to_yaml(sweep.points[-1].spec)
    assert not (run_dir / "report").exists()


def test_the_comparison_has_every_point_and_condition(swept):
    sweep, run_dir, _, _ = swept
    with open(run_dir / "sweep" / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["point"], r["condition"]) for r in rows] == [
        (p.name, c) for p in sweep.points for c in ("vanilla", "single:a")]
    assert {(r["lora.r"], r["collapse.bootstrap"]) for r in rows} == {("8", "20"), ("8", "30"), ("16", "20"),
                                                                      ("16", "30")}
    # Experiment 1's primary endpoint (of the three metrics run, output perplexity is one), with its error
    assert "output_perplexity" in rows[0] and "output_perplexity_stderr" in rows[0] and "length" not in rows[0]
    vanilla = [r for r in rows if r["condition"] == "vanilla"]
    assert all(float(r["output_perplexity"]) > 0 and float(r["output_perplexity_stderr"]) > 0 for r in vanilla)
    shared = {r["point"]: (int(r["stages"]), int(r["shared"]), int(r["ran"]), int(r["reused"])) for r in rows}
    for point in sweep.points:
        stages, n_shared, ran, reused = shared[point.name]
        assert stages == len(point.stages) and n_shared == point.shared and ran + reused == stages
    md = (run_dir / "sweep" / "comparison.md").read_text()
    html = (run_dir / "sweep" / "comparison.html").read_text()
    for point in sweep.points:
        assert point.name in md and f'href="{point.name}/report/report.html"' in html


def test_an_interrupted_sweep_resumes_without_redoing_anything(tmp_path, monkeypatch):
    sweep = expand(sweep_config(tmp_path), AXES, use_env=False)
    first_point = len(sweep.points[0].stages)
    killed = Executions(monkeypatch, stop_at=first_point + 2)  # in the second point, after one stage
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path / "run")
    assert is_point_done(sweep.points[0], tmp_path / "run") and not is_point_done(sweep.points[1], tmp_path / "run")
    assert not (tmp_path / "run" / "sweep" / "comparison.csv").exists()
    resumed = Executions(monkeypatch)
    results = run_sweep(expand(sweep_config(tmp_path), AXES, use_env=False), tmp_path / "run")
    assert results[0].skipped and not results[0].ran
    assert not set(killed.counts) & set(resumed.counts)  # nothing ran twice
    assert len(killed.counts) + len(resumed.counts) == sweep.stage_count
    assert all(is_point_done(p, tmp_path / "run") for p in sweep.points)
    # a third run has nothing to do: every point is skipped
    again = Executions(monkeypatch)
    assert all(r.skipped for r in run_sweep(sweep, tmp_path / "run")) and not again.counts


def test_the_comparison_escapes_what_users_wrote():
    c = Comparison(title="<t>", config="c.yaml", fixed=[], axes=["decoding.system_prompt"],
                   points=[{"index": 1, "name": "p1", "settings": {"decoding.system_prompt": "<script>x</script>"},
                            "stages": 3, "shared": 0, "ran": 3, "reused": 0, "finished": True,
                            "report": "p1/report/report.html"}],
                   metrics=[MetricColumn("m", "m", "collapse", True)],
                   rows=[{"point": "p1", "settings": {"decoding.system_prompt": "<script>x</script>"},
                          "target": "t", "condition": "single:<b>a</b>|x", "generation": 0,
                          "values": {"m": (0.5, None)}}])
    html = render_html(c)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>" not in html
    md = render_markdown(c)
    assert "\\<script\\>" in md and "single:\\<b\\>a\\</b\\>\\|x" in md and "| 0.5000 |" in md
