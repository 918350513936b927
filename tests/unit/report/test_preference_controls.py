"""Experiment 3's controls in the report: the controls and strata tables, the relation and
log-perplexity columns of the preference matrix, the warnings and the figure — on hand-made frames
and on a finished mock run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from collapselab.report.preference import (
    CONTROL_TABLES,
    build_preference_tables,
    control_warnings,
    controls_table,
    matrix_table,
    strata_table,
)
from collapselab.report.preference_plots import controls_plot


def controls_frame(**changes) -> pd.DataFrame:
    row = {"judge": "t-vanilla", "target": "t", "condition": "vanilla", "seed": 1, "generation": 0,
           "own_source": "a", "SPB": 0.2, "SPB_ci_low": 0.1, "SPB_ci_high": 0.3,
           "own_unadjusted": 0.15, "own_unadjusted_ci_low": 0.05, "own_unadjusted_ci_high": 0.25,
           "own_adjusted": 0.01, "own_adjusted_ci_low": -0.04, "own_adjusted_ci_high": 0.06, "own_adjusted_p": 0.7,
           "familiarity": -0.3, "familiarity_ci_low": -0.4, "familiarity_ci_high": -0.2,
           "own_pair_pref": 0.1, "own_pair_pref_ci_low": 0.05, "own_pair_pref_ci_high": 0.15,
           "stratified": 0.02, "stratified_ci_low": -0.03, "stratified_ci_high": 0.07,
           "recognition": 0.8, "recognition_ci_low": 0.7, "recognition_ci_high": 0.9, "note": ""}
    other = {**row, "judge": "t-single-a-seed1", "condition": "single:a", "own_adjusted": np.nan,
             "own_adjusted_ci_low": np.nan, "own_adjusted_ci_high": np.nan, "note": ""}
    frame = pd.DataFrame([row, other])
    for k, v in changes.items():
        frame[k] = v
    return frame


def test_controls_table_shows_spb_next_to_its_controls():
    t = controls_table(controls_frame(), ["vanilla", "single:a"])
    assert t.columns == ["condition", "own source", "SPB", "own effect (raw)", "own effect (familiarity-adjusted)",
                         "familiarity (per nat)", "own effect (stratified)", "recognition"]
    first = t.frame.iloc[0]
    assert first["condition"] == "vanilla" and first["own source"] == "a"
    assert first["SPB"] == "0.2000 [0.1000,\u00a00.3000]"
    assert first["own effect (familiarity-adjusted)"] == "0.0100 [\u22120.0400,\u00a00.0600]"
    assert first["recognition"] == "0.8000 [0.7000,\u00a00.9000]"
    assert t.frame.iloc[1]["own effect (familiarity-adjusted)"] == "—"
    assert "Wataoka" in t.caption and "Panickssery" in t.caption and "target t" in t.caption
    noted = controls_table(controls_frame(note=["", "one item: no cluster-robust interval"]))
    assert noted.columns[-1] == "note" and noted.frame.iloc[1]["note"].startswith("one item")
    assert controls_table(pd.DataFrame()).empty


def test_matrix_table_gains_the_relation_and_familiarity_of_each_row_source():
    matrix = pd.DataFrame([
        {"judge": "j", "target": "t", "condition": "vanilla", "row_source": r, "col_source": c, "p_row_wins": p}
        for r, c, p in (("a", "b", 0.7), ("b", "a", 0.3), ("a", "human", 0.9), ("human", "a", 0.1),
                        ("b", "human", 0.6), ("human", "b", 0.4))])
    relations = pd.DataFrame({"judge": "j", "source": ["a", "b", "human"],
                              "relation": ["same model", "unrelated", "human text"], "log_ppl": [1.2, 2.0, 2.5]})
    plain = matrix_table(matrix)
    assert "relation" not in plain.columns
    t = matrix_table(matrix, relations=relations)
    assert t.columns[:4] == ["judge", "text of", "relation", "log-ppl"]
    by_source = t.frame.set_index("text of")
    assert by_source.loc["a", "relation"] == "same model" and by_source.loc["human", "relation"] == "human text"
    assert by_source.loc["b", "log-ppl"] == "2.00" and by_source.loc["a", "vs b"] == "0.7000"
    assert "Li et al. 2025" in t.caption and "log-perplexity" in t.caption
    no_ppl = matrix_table(matrix, relations=relations.assign(log_ppl=np.nan))
    assert "relation" in no_ppl.columns and "log-ppl" not in no_ppl.columns


def test_strata_table():
    strata = pd.DataFrame({"judge": "j", "condition": "vanilla", "bin": [1, 0], "delta_low": [-0.1, -np.inf],
                           "delta_high": [np.inf, -0.1], "n_own": [3, 4], "own_pref": [0.6, 0.8],
                           "n_base": [5, 0], "base_pref": [0.55, np.nan], "difference": [0.05, np.nan]})
    t = strata_table(strata)
    assert t.frame["Δ log-ppl"].tolist() == ["[−∞, −0.1000)", "[−0.1000, ∞)"]
    assert t.frame["P(own wins)"].tolist() == ["0.800", "0.600"] and t.frame["difference"].tolist() == ["—", "0.0500"]
    assert strata_table(pd.DataFrame()).empty


def test_warnings_say_when_familiarity_may_explain_spb():
    frame = controls_frame()
    [warning] = control_warnings({"controls": frame}, ["vanilla"])
    assert "vanilla" in warning and "familiarity may explain" in warning
    assert control_warnings({"controls": controls_frame(own_adjusted_ci_low=0.01)}) == []
    low_mass = pd.DataFrame({"judge": ["j"], "condition": ["vanilla"], "mean_choice_mass": [0.2]})
    [warning] = control_warnings({"recognition_scores": low_mass})
    assert "Self-recognition" in warning and "0.2000" in warning


def test_controls_plot():
    fig = controls_plot(controls_frame(recognition=[0.8, np.nan]))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert controls_plot(pd.DataFrame()) is None


# -- on a finished run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    from collapselab.executors import run_stages
    from collapselab.pipeline.graph import build_graph
    from collapselab.report.inputs import collect
    from collapselab.store.run import RunStore
    from tests.unit.preference.test_controls_pipeline import mock_spec

    tmp = tmp_path_factory.mktemp("controls-report")
    spec = mock_spec(tmp)
    run_stages(spec, tmp / "out")
    inputs = collect(spec, tmp / "out")
    stage = next(s for s in build_graph(spec) if s.kind == "preference_controls")
    folder = RunStore(tmp / "out").final_dir(stage.ref)
    # what report.inputs hands the section once it reads the controls stage
    inputs.preference.controls = {name: pd.read_parquet(folder / f"{name}.parquet") for name in CONTROL_TABLES}
    return inputs


def test_the_section_shows_the_controls_of_a_finished_run(collected):
    from collapselab.report.markdown import table

    tables = build_preference_tables(collected.preference)
    assert len(tables.controls.frame) == 1 and tables.controls.frame.iloc[0]["own source"] == "a"
    assert tables.controls.frame.iloc[0]["recognition"] != "—"
    assert not tables.strata.empty
    assert set(tables.matrix.frame["relation"]) == {"same model", "unrelated", "human text"}
    assert "same model" in table(tables.matrix) and "own effect (familiarity-adjusted)" in table(tables.controls)


def test_without_controls_the_section_is_unchanged(collected):
    import copy

    pref = copy.deepcopy(collected.preference)
    pref.controls = {}
    tables = build_preference_tables(pref)
    assert tables.controls.empty and tables.strata.empty and "relation" not in tables.matrix.columns
    del pref.controls  # inputs written before the controls existed
    assert build_preference_tables(pref).controls.empty


def test_the_html_report_escapes_and_shows_the_relations(collected):
    from collapselab.report.html import render_html

    html = render_html(collected)
    assert "same model" in html and "human text" in html
