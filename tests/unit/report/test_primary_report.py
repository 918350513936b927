"""The report's primary endpoints: one corrected family across experiments, the claim's unit in
plain words, the paired differences with their intervals (audit c4, c5)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from collapselab.config.spec import DEFAULT_PRIMARY
from collapselab.report.format import fmt_num
from collapselab.report.html import render_html
from collapselab.report.markdown import render_markdown
from collapselab.report.stat_tests import CLAIMS, pairwise_table, primary_table
from collapselab.stats.endpoints import mark_endpoints
from collapselab.stats.summary import compare_conditions
from tests.unit.report.test_report import make_inputs


def marked_inputs():
    inputs = make_inputs()
    tests = mark_endpoints({"collapse": inputs.tests}, DEFAULT_PRIMARY)["collapse"]
    return dataclasses.replace(inputs, tests=tests, primary={"collapse": DEFAULT_PRIMARY["collapse"]})


def test_primary_table_lists_every_primary_row_with_holm_across_them():
    inputs = marked_inputs()
    table = primary_table({"collapse": inputs.tests}, inputs.primary, "holm")
    rows = inputs.tests[inputs.tests.endpoint == "primary"]
    assert len(table.frame) == len(rows) > 0  # significant or not
    np.testing.assert_allclose(rows["p_primary"], multipletests(rows["p"], method="holm")[1])
    assert set(rows["metric"].str.split("[").str[0]) == {"output_perplexity", "lexical_diversity"}
    assert "Holm" in table.caption and CLAIMS["items"] in table.caption
    # declared primary endpoints without per-item tests are named, not silently missing
    assert ("No test for: collapse: human_perplexity, collapse: semantic_diversity, collapse: heaps"
            in table.caption)
    first = rows.iloc[0]
    assert table.frame["a − b [CI]"].iloc[0] == (f"{fmt_num(first['diff'])} [{fmt_num(first['diff_low'])}, "
                                                  f"{fmt_num(first['diff_high'])}]")


def test_the_report_shows_the_primary_section_and_marks_rows():
    inputs = marked_inputs()
    md = render_markdown(inputs)
    assert "## Primary endpoints" in md and "exploratory" in md
    assert md.index("## Primary endpoints") < md.index("## Summary")
    html = render_html(inputs)
    assert 'id="primary"' in html and 'href="#primary"' in html
    bare = render_markdown(make_inputs())  # tests never marked (no stats section in the config)
    assert "## Primary endpoints" not in bare


def test_several_seeds_make_it_a_claim_about_recipes():
    rng = np.random.default_rng(0)
    rows = [{"metric": "output_perplexity", "target": "t", "generation": 0, "condition": c, "seed": s,
             "item_id": f"q{i}", "value": rng.normal(k * 0.3, 1)}
            for k, c in enumerate(["vanilla", "human", "single"]) for s in (1, 2, 3) for i in range(20)]
    tests = compare_conditions(pd.DataFrame(rows))
    marked = mark_endpoints({"collapse": tests}, {"collapse": ("output_perplexity",)})
    table = primary_table(marked, {"collapse": ("output_perplexity",)}, "bonferroni")
    assert set(marked["collapse"].loc[marked["collapse"].endpoint == "primary", "seed"]) == {"mixed-model"}
    assert CLAIMS["runs"] in table.caption and "Bonferroni" in table.caption
    assert set(table.frame["unit"]) == {"runs"}
    pairs = pairwise_table(marked["collapse"], {}, significant_only=False)
    assert CLAIMS["runs"] in pairs.caption and "endpoint" in pairs.frame.columns
