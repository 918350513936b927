"""The report across recursive generations: the per-experiment frames, their figures and tables, the
"Across generations" section of the HTML and Markdown reports and the saved ``generations_…`` files.

The inputs are built by hand: Experiment 1 has 3 generations × 3 retrained conditions (two seeds)
plus vanilla (generation 0 only) and the human references; Experiments 2 and 3 have small summary
and bias frames with a ``generation`` column. Every check compares with a plain loop over those
inputs.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest

from collapselab.errors import DataError
from collapselab.report import generations as gen
from collapselab.report.format import MISSING, fmt_ci, metric_header, rate_ci
from collapselab.report.inputs import PreferenceInputs, ReportInputs, SafetyInputs
from tests.unit.report.test_report import Page, make_inputs

TARGET = "tiny"
RETRAINED = ["single:a", "single:b", "multi:a,b"]
CONDITIONS = ["vanilla", *RETRAINED]
GENERATIONS = (0, 1, 2)
SEEDS = (1, 2)
# metric: higher_is_better, primary statistic, base value
METRICS = {"distinct[n=2]": (True, "value", 0.6), "output_perplexity": (False, "mean", 2.0),
           "length": (None, "mean", 150.0)}
HUMAN = {"distinct[n=2]": 0.74, "output_perplexity": 4.3, "length": 110.0}
SAFETY_RATES = ["attack_success_rate", "danger_zone", "refusal_rate", "unparsed_harm_rate"]


def _runs(seeds=SEEDS):
    """(condition, generation, seed) of every model: vanilla is never retrained (generation 0)."""
    return [(c, g, s) for c in CONDITIONS for g in (GENERATIONS if c in RETRAINED else (0,)) for s in seeds]


def _value(base: float, condition: str, generation: int, seed: int) -> float:
    i = CONDITIONS.index(condition)
    return base * (1 + 0.1 * i - 0.05 * generation * (i + 1) + 0.01 * seed)


def _aggregates() -> pd.DataFrame:
    rows = []
    sets = [({"set_name": f"{TARGET}/{c}/seed{s}/gen{g}", "set_kind": "condition", "condition": c,
              "target": TARGET, "seed": s, "source": None, "generation": g}, (c, g, s))
            for c, g, s in _runs()]
    unlabelled = {"condition": None, "target": None, "seed": None, "generation": None}
    sets.append(({"set_name": "source/a", "set_kind": "source", **unlabelled, "source": "a"}, None))
    sets.append(({"set_name": "human", "set_kind": "human", **unlabelled, "source": None}, None))
    for labels, run in sets:
        for metric, (better, primary, base) in METRICS.items():
            value = _value(base, *run) if run else (HUMAN[metric] if labels["set_kind"] == "human" else base)
            for statistic, v in ((primary, value), ("other", value * 3)):
                rows.append({**labels, "metric": metric, "family": "f", "higher_is_better": better,
                             "statistic": statistic, "primary": statistic == primary, "value": v,
                             "ci_low": v * 0.98, "ci_high": v * 1.03, "n": 20, "n_undefined": 0})
    return pd.DataFrame(rows)


def _summary(with_generation: bool = True) -> pd.DataFrame:
    rows = []
    for c, g, s in _runs(seeds=(42,)):
        for kind in ("plain", "jailbreak", "all"):
            for category in ("all", "weapons"):
                for metric in ["mean_harm", "mean_quality", *SAFETY_RATES]:
                    mean = metric.startswith("mean")
                    v = _value(2.0 if mean else 0.3, c, g, 0) + (0.5 if kind == "jailbreak" else 0.0)
                    # one rate without a Wilson interval: the bootstrap interval is drawn instead
                    no_wilson = mean or (metric == "refusal_rate" and c == "single:b")
                    rows.append({"target": TARGET, "condition": c, "seed": s, "generation": g,
                                 "prompt_kind": kind, "category": category, "metric": metric, "value": v,
                                 "ci_low": v - 0.05, "ci_high": v + 0.04,
                                 "wilson_low": np.nan if no_wilson else v - 0.07,
                                 "wilson_high": np.nan if no_wilson else v + 0.06, "n": 10, "n_undefined": 0,
                                 "successes": None if mean else round(v * 10), "definition": "d"})
    frame = pd.DataFrame(rows)
    return frame if with_generation else frame[frame["generation"] == 0].drop(columns="generation")


def _bias() -> pd.DataFrame:
    rows = []
    for c, g, s in _runs(seeds=(42,)):
        spb = np.nan if c == "vanilla" else _value(0.2, c, g, 0)
        psb = _value(0.4, c, g, 0)
        rows.append({"judge": f"judge-{c}-gen{g}", "target": TARGET, "condition": c, "seed": s,
                     "generation": g, "own_source": None if c == "vanilla" else "a",
                     "SPB": spb, "SPB_ci_low": spb - 0.1, "SPB_ci_high": spb + 0.1,
                     "PSB": psb, "PSB_ci_low": psb - 0.05, "PSB_ci_high": psb + 0.05,
                     "S_own": 0.6, "S_other_synthetic": 0.5, "S_synthetic": 0.55, "S_human": 0.3,
                     "n_items": 12, "n_comparisons": 100, "n_undefined": 0,
                     "note": "no own source for this judge: SPB undefined" if c == "vanilla" else ""})
    return pd.DataFrame(rows)


def make_generation_inputs() -> ReportInputs:
    empty = pd.DataFrame()
    safety = SafetyInputs(judged=empty, summary=_summary(), joint=empty, templates=empty, tests=empty,
                          conditions=CONDITIONS)
    preference = PreferenceInputs(source_scores=empty, bias=_bias(), position=empty, matrix=empty,
                                  rating_scores=empty, tests=empty, conditions=CONDITIONS)
    return ReportInputs(
        title="generations-demo", config_yaml="name: generations-demo\n", aggregates=_aggregates(),
        per_item=empty, tests=empty, concordance={}, kendalls_w=[], factorial=empty, seed_spread=empty,
        stats_notes=[], details={}, embedding_map=empty, responses=empty, training=[], safety=safety,
        preference=preference, conditions=CONDITIONS,
    )


def one_generation(inputs: ReportInputs) -> ReportInputs:
    """The same run cut to its first generation."""
    agg = inputs.aggregates
    safety = dataclasses.replace(inputs.safety, summary=_summary(with_generation=False))
    bias = inputs.preference.bias
    first = bias[bias["generation"] == 0].drop(columns="generation")
    preference = dataclasses.replace(inputs.preference, bias=first)
    return dataclasses.replace(inputs, aggregates=agg[agg["generation"].isna() | (agg["generation"] == 0)],
                               safety=safety, preference=preference)


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    return make_generation_inputs()


@pytest.fixture(scope="module")
def frames(inputs) -> dict[str, pd.DataFrame]:
    return gen.generation_frames(inputs)


def _close(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or math.isclose(float(a), float(b), rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------


def test_collapse_frame_holds_each_primary_value_with_its_interval(inputs, frames):
    frame = frames["collapse"]
    expected = {}
    for r in inputs.aggregates.to_dict("records"):  # a plain loop over the aggregates
        if r["set_kind"] == "condition" and r["primary"]:
            expected[(r["metric"], r["condition"], r["seed"], r["generation"])] = (r["value"], r["ci_low"],
                                                                                   r["ci_high"])
    got = {(r["metric"], r["condition"], r["seed"], r["generation"]): (r["value"], r["ci_low"], r["ci_high"])
           for r in frame.to_dict("records")}
    assert len(frame) == len(expected) == len(METRICS) * (len(RETRAINED) * 3 + 1) * len(SEEDS)
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert all(_close(a, b) for a, b in zip(got[key], values, strict=True)), key
    # the formula behind the inputs, once more: multi:a,b, generation 2, seed 1, distinct
    assert got[("distinct[n=2]", "multi:a,b", 1, 2)][0] == pytest.approx(0.6 * (1 + 0.3 - 0.4 + 0.01))
    assert set(frame["interval"]) == {"bootstrap"}
    assert frame["generation"].dtype == np.int64
    assert sorted(frame.loc[frame["condition"] == "vanilla", "generation"].unique()) == [0]
    assert list(frame.columns[:4]) == ["generation", "target", "condition", "seed"]
    # sorted: metric, then the config's condition order, seed and generation
    first = frame[frame["metric"] == "distinct[n=2]"]
    assert list(dict.fromkeys(first["condition"])) == CONDITIONS


def test_safety_frame_uses_wilson_for_rates_and_bootstrap_for_means(frames):
    frame = frames["safety"]
    summary = _summary()
    expected = {}
    for r in summary.to_dict("records"):
        if r["category"] != "all" or r["prompt_kind"] == "all" or r["metric"] not in gen.SAFETY_METRICS:
            continue
        wilson = not r["metric"].startswith("mean") and not pd.isna(r["wilson_low"])
        low, high = (r["wilson_low"], r["wilson_high"]) if wilson else (r["ci_low"], r["ci_high"])
        expected[(r["prompt_kind"], r["metric"], r["condition"], r["generation"])] = (
            r["value"], low, high, "wilson" if wilson else "bootstrap")
    got = {(r["prompt_kind"], r["metric"], r["condition"], r["generation"]):
           (r["value"], r["ci_low"], r["ci_high"], r["interval"]) for r in frame.to_dict("records")}
    assert got.keys() == expected.keys()
    for key, (value, low, high, interval) in expected.items():
        assert got[key][3] == interval, key
        assert all(_close(a, b) for a, b in zip(got[key][:3], (value, low, high), strict=True)), key
    assert set(frame["metric"]) == set(gen.SAFETY_METRICS)  # unparsed_harm_rate left out
    assert got[("plain", "refusal_rate", "single:b", 1)][3] == "bootstrap"  # no Wilson interval there
    assert got[("plain", "refusal_rate", "single:a", 1)][3] == "wilson"


def test_preference_frame_has_spb_and_psb_per_judge(frames):
    frame = frames["preference"]
    bias = _bias()
    assert len(frame) == 2 * len(bias)
    for r in bias.to_dict("records"):
        for metric in ("SPB", "PSB"):
            hit = frame[(frame["judge"] == r["judge"]) & (frame["metric"] == metric)]
            assert len(hit) == 1
            row = hit.iloc[0]
            assert row["generation"] == r["generation"] and row["condition"] == r["condition"]
            assert _close(row["value"], r[metric])
            assert _close(row["ci_low"], r[f"{metric}_ci_low"])
            assert _close(row["ci_high"], r[f"{metric}_ci_high"])
    assert frame.loc[(frame["condition"] == "vanilla") & (frame["metric"] == "SPB"), "value"].isna().all()


def test_generation_numbers_default_to_zero_and_reject_nonsense():
    assert gen.generation_numbers(pd.DataFrame({"x": [1, 2]}), "t").tolist() == [0, 0]
    missing = pd.DataFrame({"generation": [None, 2.0, np.nan]})
    assert gen.generation_numbers(missing, "t").tolist() == [0, 2, 0]
    with pytest.raises(DataError, match=r"safety summary: row 1, field 'generation': 'second'"):
        gen.generation_numbers(pd.DataFrame({"generation": [0, "second"]}), "safety summary")
    with pytest.raises(DataError, match="row 0"):
        gen.generation_numbers(pd.DataFrame({"generation": [1.5]}), "aggregates")


def test_old_runs_without_a_generation_column_are_generation_zero(inputs):
    old = one_generation(inputs)
    frames = gen.generation_frames(old)
    assert set(frames) == {"collapse", "safety", "preference"}
    assert all(set(f["generation"]) == {0} for f in frames.values())
    assert gen.multi_generation_frames(old) == {}
    assert gen.generation_sections(old) == []
    # the study's fixture (generation None everywhere) has nothing across generations either
    assert gen.generation_sections(make_inputs()) == []


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def _panel(fig, title_start: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title_start))


def test_collapse_figure_draws_seed_means_intervals_and_references(inputs, frames):
    fig = gen.collapse_generations_plot(frames["collapse"], inputs.aggregates, CONDITIONS)
    assert fig is not None
    assert len([ax for ax in fig.axes if ax.get_title()]) == len(METRICS)
    ax = _panel(fig, "distinct")
    assert "↑" in ax.get_title()
    line = next(x for x in ax.get_lines() if x.get_gid() == f"multi:a,b|{TARGET}")
    for generation, y in zip(GENERATIONS, line.get_ydata(), strict=True):
        seeds = [_value(0.6, "multi:a,b", generation, s) for s in SEEDS]
        assert y == pytest.approx(sum(seeds) / len(seeds))
    assert np.round(line.get_xdata()).tolist() == list(GENERATIONS)
    # the faint single-seed points: one per seed and generation for this condition
    offset = line.get_xdata()[0] - GENERATIONS[0]
    points = [x for x in ax.get_lines() if x.get_marker() == "o" and x.get_alpha() == 0.3
              and len(x.get_xdata()) == 1
              and x.get_xdata()[0] - round(x.get_xdata()[0]) == pytest.approx(offset)]
    assert sorted(float(p.get_ydata()[0]) for p in points) == pytest.approx(
        sorted(_value(0.6, "multi:a,b", g, s) for g in GENERATIONS for s in SEEDS))
    # vanilla (generation 0 only) is carried across as a dotted level line
    vanilla = np.mean([_value(0.6, "vanilla", 0, s) for s in SEEDS])
    assert any(x.get_linestyle() == ":" and np.allclose(x.get_ydata(), vanilla) for x in ax.get_lines())
    # the human references: a dashed line at their value
    assert any(x.get_linestyle() == "--" and np.allclose(x.get_ydata(), HUMAN["distinct[n=2]"])
               for x in ax.get_lines())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]


def test_safety_and_preference_figures(frames):
    fig = gen.safety_generations_plot(frames["safety"], CONDITIONS)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(gen.SAFETY_METRICS) * 2
    assert titles[0] == "mean harm ↓ · plain" and titles[len(gen.SAFETY_METRICS)] == "mean harm ↓ · jailbreak"
    ax = _panel(fig, "danger zone ↓ · jailbreak")
    line = next(x for x in ax.get_lines() if x.get_gid() == f"single:a|{TARGET}")
    assert list(line.get_ydata()) == pytest.approx([_value(0.3, "single:a", g, 0) + 0.5 for g in GENERATIONS])
    fig = gen.preference_generations_plot(frames["preference"], CONDITIONS)
    ax = _panel(fig, "pro-synthetic bias")
    assert any(x.get_linestyle() == "--" and np.allclose(x.get_ydata(), 0.0) for x in ax.get_lines())
    line = next(x for x in ax.get_lines() if x.get_gid() == f"single:b|{TARGET}")
    assert list(line.get_ydata()) == pytest.approx([_value(0.4, "single:b", g, 0) for g in GENERATIONS])


def test_figures_are_none_with_one_generation(inputs):
    frames = gen.generation_frames(one_generation(inputs))
    assert gen.collapse_generations_plot(frames["collapse"], inputs.aggregates) is None
    assert gen.safety_generations_plot(frames["safety"]) is None
    assert gen.preference_generations_plot(frames["preference"]) is None
    assert gen.generation_lines(pd.DataFrame(columns=["generation"])) is None


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def test_collapse_table_is_metric_by_condition_by_generation(inputs, frames):
    table = gen.collapse_generation_table(frames["collapse"], CONDITIONS)
    assert table.columns == ["metric", "condition", "seed", "gen 0", "gen 1", "gen 2"]
    assert len(table.frame) == len(METRICS) * len(CONDITIONS) * len(SEEDS)
    header = metric_header("output_perplexity", False)
    row = table.frame[(table.frame["metric"] == header) & (table.frame["condition"] == "single:b")
                      & (table.frame["seed"] == "2")].iloc[0]
    agg = inputs.aggregates
    for g in GENERATIONS:
        r = agg[(agg["metric"] == "output_perplexity") & (agg["condition"] == "single:b") & (agg["seed"] == 2)
                & (agg["generation"] == g) & agg["primary"]].iloc[0]
        assert row[f"gen {g}"] == fmt_ci(r["value"], r["ci_low"], r["ci_high"])
    vanilla = table.frame[table.frame["condition"] == "vanilla"].iloc[0]
    assert vanilla["gen 0"] != MISSING and vanilla["gen 1"] == vanilla["gen 2"] == MISSING
    assert list(dict.fromkeys(table.frame["condition"])) == CONDITIONS
    assert {"gen 0", "gen 1", "gen 2"} == table.numeric


def test_safety_table_formats_rates_and_means(frames):
    table = gen.safety_generation_table(frames["safety"], CONDITIONS)
    # one seed and one target: no seed or target column
    assert table.columns == ["prompts", "metric", "condition", "gen 0", "gen 1", "gen 2"]
    summary = _summary()

    def cell(kind, metric, condition, g):
        return summary[(summary["prompt_kind"] == kind) & (summary["metric"] == metric)
                       & (summary["category"] == "all") & (summary["condition"] == condition)
                       & (summary["generation"] == g)].iloc[0]

    row = table.frame[(table.frame["prompts"] == "jailbreak") & (table.frame["metric"] == "danger zone ↓")
                      & (table.frame["condition"] == "multi:a,b")].iloc[0]
    r = cell("jailbreak", "danger_zone", "multi:a,b", 1)
    assert row["gen 1"] == rate_ci(r["value"], r["wilson_low"], r["wilson_high"])
    row = table.frame[(table.frame["prompts"] == "plain") & (table.frame["metric"] == "mean harm ↓")
                      & (table.frame["condition"] == "single:a")].iloc[0]
    r = cell("plain", "mean_harm", "single:a", 2)
    assert row["gen 2"] == fmt_ci(r["value"], r["ci_low"], r["ci_high"])
    assert len(table.frame) == 2 * len(gen.SAFETY_METRICS) * len(CONDITIONS)


# ---------------------------------------------------------------------------------------------
# renderers and the written folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def html(inputs) -> str:
    from collapselab.report.html import render_html

    return render_html(inputs)


def _between(html: str, start: str, end: str) -> str:
    return html[html.index(start):html.index(end, html.index(start))]


def test_html_has_the_section_with_three_embedded_figures(html):
    page = Page(html)
    ids = {a.get("id") for _, a in page.tags}
    assert {"generations", "generations-collapse", "generations-safety", "generations-preference"} <= ids
    links = {a.get("href") for t, a in page.tags if t == "a"}
    assert {"#generations-collapse", "#generations-safety", "#generations-preference"} <= links
    section = Page(_between(html, '<section id="generations"', '<section id="training">'))
    images = [a["src"] for t, a in section.tags if t == "img"]
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert {a.get("id") for t, a in section.tags if t == "figure"} == {
        "plot-generations-collapse", "plot-generations-safety", "plot-generations-preference"}
    assert "Across generations" in page.all_text and "gen 2" in section.all_text
    assert "could not be drawn" not in html


def test_html_without_the_section_for_one_generation(inputs):
    from collapselab.report.html import render_html

    html = render_html(one_generation(inputs))
    assert 'id="generations' not in html and "#generations" not in html
    assert "Across generations" not in html


def test_markdown_tables_per_experiment(inputs, frames):
    from collapselab.report.markdown import escape, render_markdown

    md = render_markdown(inputs)
    part = md[md.index("## Across generations"):md.index("## Training\n")]
    assert [line for line in part.splitlines() if line.startswith("### ")] == [
        f"### {gen.EXPERIMENT_TITLES[k]}" for k in ("collapse", "safety", "preference")]
    headers = [line for line in part.splitlines() if line.startswith(("| metric", "| prompts"))]
    assert all(h.endswith("| gen 0 | gen 1 | gen 2 |") for h in headers) and len(headers) == 3
    for block in part.split("### ")[1:]:  # every table stays rectangular
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in rows}) == 1
    bias = _bias()  # the input row itself, not the frame built from it
    r = bias[(bias["condition"] == "single:a") & (bias["generation"] == 2)].iloc[0]
    line = next(x for x in part.splitlines() if x.startswith("| SPB | single:a |"))
    assert line.split(" | ")[-1].rstrip(" |") == escape(fmt_ci(r["SPB"], r["SPB_ci_low"], r["SPB_ci_high"]))
    assert r["SPB"] == pytest.approx(0.2 * (1 + 0.1 - 0.05 * 2 * 2))
    assert "## Across generations" not in render_markdown(one_generation(inputs))


def test_written_generation_tables(inputs, frames, tmp_path):
    from collapselab.report.write import write_report

    paths = write_report(inputs, tmp_path / "report")
    for key, frame in frames.items():
        for suffix in ("csv", "parquet"):
            assert f"generations_{key}.{suffix}" in paths
        back = pd.read_csv(paths[f"generations_{key}.csv"])
        assert len(back) == len(frame)
        assert np.allclose(back["value"].to_numpy(float), frame["value"].to_numpy(float), equal_nan=True)
        assert back["generation"].tolist() == frame["generation"].tolist()
        parquet = pd.read_parquet(paths[f"generations_{key}.parquet"])
        assert parquet["condition"].tolist() == frame["condition"].tolist()
    single = write_report(one_generation(inputs), tmp_path / "single")
    assert not [name for name in single if name.startswith("generations_")]
