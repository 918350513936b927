"""The report section on human-text perplexity tails (report/perplexity_tails.py), on hand-made tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from collapselab.report.format import MISSING, fmt_ci, fmt_num, rate_ci
from collapselab.report.perplexity_tails import build, reference_rows, survival, tail_figure, tail_table
from collapselab.report.sections import SECTIONS, SectionContext

CONDITIONS = ["human", "gpt"]


def per_item_frame(metric: str = "human_perplexity", n: int = 40) -> pd.DataFrame:
    """Two conditions × generations 0–2 (seed 1, target m) and the human reference set; the tail of
    condition gpt grows with the generation."""
    rng = np.random.default_rng(0)
    frames = []
    for condition in CONDITIONS:
        for g in range(3):
            heavy = 0.3 * g if condition == "gpt" else 0.0
            values = np.exp(rng.normal(1.0, 0.3 + heavy, n))
            frames.append(pd.DataFrame({"set_name": f"{condition}-g{g}", "set_kind": "condition",
                                        "condition": condition, "target": "m", "seed": 1, "source": None,
                                        "generation": g, "metric": metric, "item_id": [f"h{i}" for i in range(n)],
                                        "value": values}))
    frames.append(pd.DataFrame({"set_name": "human:test", "set_kind": "human", "condition": None, "target": "m",
                                "seed": None, "source": None, "generation": 0, "metric": metric,
                                "item_id": [f"h{i}" for i in range(n)], "value": np.exp(rng.normal(1.0, 0.3, n))}))
    noise = frames[0].assign(metric="length.words", value=100.0)  # another metric's rows are ignored
    return pd.concat([*frames, noise], ignore_index=True)


def context(per_item: pd.DataFrame, aggregates: pd.DataFrame | None = None) -> SectionContext:
    inputs = SimpleNamespace(per_item=per_item, aggregates=aggregates if aggregates is not None else pd.DataFrame(),
                             conditions=CONDITIONS)
    return SectionContext(spec=None, stages=[], store=None, inputs=inputs)


def plain_quantile(values, p: float) -> float:
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def test_registered():
    assert "perplexity_tails" in SECTIONS


@pytest.mark.parametrize("per_item", [pd.DataFrame(), per_item_frame().query("metric == 'length.words'"),
                                      per_item_frame().query("set_kind == 'human'")])
def test_nothing_to_show_is_none(per_item):
    assert build(context(per_item)) is None


def test_table_rows_and_quantiles_from_the_per_item_values():
    frame = per_item_frame()
    section = build(context(frame))
    table = section.tables[0].frame
    # condition in config order, generation inside it; target and seed do not vary: not shown
    assert list(table.columns) == ["condition", "generation", "references", "q50", "q90", "q99"]
    assert list(zip(table.condition, table.generation, strict=True)) == [
        ("human", "0"), ("human", "1"), ("human", "2"), ("gpt", "0"), ("gpt", "1"), ("gpt", "2")]
    for row in table.itertuples(index=False):
        values = frame[(frame.set_name == f"{row.condition}-g{row.generation}")
                       & (frame.metric == "human_perplexity")].value.tolist()
        assert row.references == "40"
        for name, p in (("q50", 0.5), ("q90", 0.9), ("q99", 0.99)):
            assert getattr(row, name) == fmt_num(plain_quantile(values, p))
    assert "intervals" in section.tables[0].caption  # says how to get them


def test_table_takes_the_tail_metric_s_aggregates_with_intervals():
    frame = per_item_frame()
    stats = {"q50": (2.7, 2.5, 2.9), "q90": (4.1, 3.6, 4.8), "q99": (6.0, 5.0, 7.5),
             "share_above_base": (0.3, 0.2, 0.4), "n": (40, np.nan, np.nan)}
    aggregates = pd.DataFrame([{"set_name": "gpt-g2", "metric": "human_perplexity_tail", "statistic": k,
                                "value": v, "ci_low": lo, "ci_high": hi} for k, (v, lo, hi) in stats.items()])
    table = build(context(frame, aggregates)).tables[0].frame.set_index(["condition", "generation"])
    assert table.loc[("gpt", "2"), "q90"] == fmt_ci(4.1, 3.6, 4.8)
    assert table.loc[("gpt", "2"), "above base q90"] == rate_ci(0.3, 0.2, 0.4)
    assert table.loc[("gpt", "1"), "above base q90"] == MISSING  # no aggregates for that set: per-item quantiles
    assert "[" not in table.loc[("gpt", "1"), "q90"]


def test_the_tail_metric_s_per_item_rows_stand_in_for_human_perplexity():
    frame = per_item_frame("human_perplexity_tail[threshold=8]")
    other = frame.assign(metric="human_perplexity_tail")  # a second variant: same values, not counted twice
    rows = reference_rows(pd.concat([frame, other]))
    assert len(rows) == 7 * 40 and rows.metric.nunique() == 1
    assert build(context(frame)).tables[0].frame.references.eq("40").all()


def test_survival_is_the_share_strictly_above_each_value():
    values = np.array([3.0, 1.0, 2.0, 5.0])
    x, y = survival(values)
    expected = [sum(v > xi for v in values) / len(values) for xi in x]
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, expected)


def test_figure_one_panel_per_condition_one_line_per_generation_and_the_base_model():
    rows = reference_rows(per_item_frame())
    fig = tail_figure(rows, CONDITIONS)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == CONDITIONS
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["gen 0", "gen 1", "gen 2", "base model"]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the plotted line is the complementary ECDF of that set's values
    gpt2 = rows[rows.set_name == "gpt-g2"].value.to_numpy()
    x, y = axes[1].get_lines()[2].get_data()
    np.testing.assert_allclose(x, np.sort(gpt2)[:-1])
    assert y[0] == pytest.approx(39 / 40)
    section = build(context(per_item_frame()))
    assert section.figures[0].draw() is not None


def test_several_targets_get_a_panel_each():
    frame = per_item_frame()
    second = frame.assign(target="big", set_name=frame.set_name + "-big")
    rows = reference_rows(pd.concat([frame, second], ignore_index=True))
    fig = tail_figure(rows, CONDITIONS)
    assert [ax.get_title() for ax in fig.axes] == ["m · human", "m · gpt", "big · human", "big · gpt"]
    table = tail_table(rows, None, CONDITIONS).frame
    assert list(table.columns[:3]) == ["condition", "target", "generation"] and len(table) == 12
