"""The "How different are the sources?" section, built from a finished homogeneity stage of a tiny
run (mock sources; see tests/unit/loop/test_homogeneity.py), read back against the stage's files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from collapselab.report import homogeneity as section
from collapselab.report.figures import figure_to_data_uri
from collapselab.report.format import fmt_ci, fmt_num
from collapselab.report.markdown import table as markdown_table
from collapselab.report.sections import SECTIONS, SectionContext
from tests.unit.loop.test_homogeneity import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    spec, stages, store, stage = make_run(tmp_path_factory.mktemp("homogeneity-report"))
    folder = store.final_dir(stage.ref)
    files = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("pairs", "tiers", "conditions")}
    return SectionContext(spec, stages, store, None), files, json.loads((folder / "summary.json").read_text())


def test_registered():
    assert SECTIONS.get("homogeneity").title == "How different are the sources?"


def test_pair_table_shows_the_stage_numbers(run):
    ctx, files, _ = run
    built = section.build(ctx)
    assert built.key == "homogeneity" and len(built.tables) == 3 and not built.warnings
    pairs = built.tables[0].frame
    assert pairs.columns.tolist() == ["source A", "source B", "shared prompts", "paired similarity",
                                      "unpaired baseline", "paired excess", "shared 2-gram rate", "cluster overlap"]
    # the synthetic pairs first, then each source against the human references
    assert list(zip(pairs["source A"], pairs["source B"], strict=True)) == [
        ("a", "b"), ("a", "c"), ("b", "c"), ("human (reference)", "a"), ("human (reference)", "b"),
        ("human (reference)", "c")]
    stored = files["pairs"].set_index(["source_a", "source_b"])
    for _, row in pairs.iterrows():
        key = (row["source A"].replace(" (reference)", ""), row["source B"])
        want = stored.loc[key]
        assert row["paired similarity"] == fmt_ci(want["similarity"], want["similarity_low"], want["similarity_high"])
        assert row["unpaired baseline"] == fmt_num(want["baseline"])
        assert row["cluster overlap"] == fmt_ci(want["cluster_overlap"], want["cluster_overlap_low"],
                                                want["cluster_overlap_high"])
        assert row["shared prompts"] == str(int(want["n_shared"]))
    # the two echo sources are identical on the prompts they share
    bc = pairs[(pairs["source A"] == "b") & (pairs["source B"] == "c")].iloc[0]
    assert bc["paired similarity"].startswith("1.00") and bc["shared 2-gram rate"].startswith("1.00")
    assert "95%" in built.tables[0].caption


def test_tier_and_condition_tables(run):
    ctx, files, _ = run
    _, tiers, conditions = section.build(ctx).tables
    assert tiers.frame["tier"].tolist() == ["echo", "rand", "all sources"]
    assert tiers.frame.set_index("tier").loc["rand", "paired similarity"] == "—"  # one source: no pair
    stored = files["conditions"].set_index("condition")
    shown = conditions.frame.set_index("condition")
    assert shown.index.tolist() == ["multi:a,b", "multi:b,c"]
    for label in shown.index:
        assert shown.loc[label, "paired similarity"] == fmt_num(stored.loc[label, "similarity"])
        assert shown.loc[label, "mix-weighted similarity"] == fmt_num(stored.loc[label, "similarity_weighted"])
    assert shown.loc["multi:b,c", "paired similarity"] == "1.00"
    text = markdown_table(conditions)
    assert "| multi:b,c |" in text and "one source in disguise" in text


def test_homogeneity_by_condition(run):
    ctx, files, _ = run
    got = section.homogeneity_by_condition(ctx)
    stored = files["conditions"]
    assert got == dict(zip(stored["condition"], stored["similarity"].astype(float), strict=True))
    assert got["multi:b,c"] == pytest.approx(1.0) and got["multi:a,b"] < 1.0


def test_heatmap_draws_the_pair_matrix(run):
    ctx, files, _ = run
    figure = section.build(ctx).figures[0]
    fig = figure.draw()
    values = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    names = ["a", "b", "c", "human"]
    want = np.full((4, 4), np.nan)
    for _, r in files["pairs"].iterrows():
        i, j = names.index(r["source_a"]), names.index(r["source_b"])
        want[i, j] = want[j, i] = r["similarity"]
    np.testing.assert_allclose(values, want)  # NaN on the diagonal: a source is not compared with itself
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c", "human (reference)"]
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_no_stage_no_section(run):
    ctx, _, _ = run
    bare = SectionContext(ctx.spec, [s for s in ctx.stages if s.kind != "homogeneity"], ctx.store, None)
    assert section.build(bare) is None and section.homogeneity_by_condition(bare) == {}
    assert section.similarity_heatmap(pd.DataFrame()) is None


def test_warnings_for_too_few_shared_prompts_and_clusters(run, tmp_path, monkeypatch):
    ctx, files, summary = run
    folder = tmp_path / "stage"
    folder.mkdir()
    pairs = files["pairs"].copy()
    pairs.loc[1, "n_shared"] = 1
    for name, frame in (("pairs", pairs), ("tiers", files["tiers"]), ("conditions", files["conditions"])):
        frame.to_parquet(folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps({**summary, "clusters": 2, "clusters_requested": 8}))
    monkeypatch.setattr(section, "_folder", lambda _ctx: folder)
    warnings = section.build(ctx).warnings
    assert any("2 clusters instead of 8" in w for w in warnings)
    assert any("a and c share 1 prompt(s)" in w for w in warnings)
