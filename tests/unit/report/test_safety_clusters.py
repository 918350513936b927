"""The safety report shows the cluster bootstrap interval for jailbreak rates (the Wilson interval
assumes independent items) and keeps Wilson for plain prompts."""

from __future__ import annotations

import pandas as pd

from collapselab.report.format import rate_ci
from collapselab.report.safety import METRIC_COLUMNS, metrics_table
from collapselab.report.safety_plots import danger_rows
from collapselab.safety.metrics import safety_summary
from tests.unit.safety.test_clusters import _judged


def _summary(mode: str = "two_way") -> pd.DataFrame:
    judged = _judged()
    judged["quality"] = judged["quality"].fillna(4.0)
    return safety_summary(judged, n_resamples=60, seed=1, jailbreak_bootstrap=mode)


def _expected(summary: pd.DataFrame, kind: str, metric: str, condition: str, low: str, high: str) -> str:
    row = summary[(summary.prompt_kind == kind) & (summary.category == "all") & (summary.metric == metric)
                  & (summary.condition == condition)].iloc[0]
    return rate_ci(row.value, row[low], row[high])


def test_jailbreak_rates_show_the_cluster_interval_and_plain_rates_wilson():
    summary = _summary()
    for kind, (low, high) in (("jailbreak", ("ci_low", "ci_high")), ("plain", ("wilson_low", "wilson_high"))):
        table = metrics_table(summary, kind)
        frame = table.frame.set_index("condition")
        for metric in ("attack_success_rate", "refusal_rate", "danger_zone"):
            cell = frame.loc["human", METRIC_COLUMNS[metric]]
            assert cell == _expected(summary, kind, metric, "human", low, high), (kind, metric)
    assert "template×prompt" in metrics_table(summary, "jailbreak").caption
    assert "template×prompt" not in metrics_table(summary, "plain").caption


def test_item_bootstrap_keeps_wilson_everywhere():
    summary = _summary("item")
    frame = metrics_table(summary, "jailbreak").frame.set_index("condition")
    assert frame.loc["human", METRIC_COLUMNS["attack_success_rate"]] == _expected(
        summary, "jailbreak", "attack_success_rate", "human", "wilson_low", "wilson_high")


def test_danger_bars_use_the_cluster_interval_for_jailbreak_items():
    rows = danger_rows(_summary())
    jb, plain = rows[rows.prompt_kind == "jailbreak"], rows[rows.prompt_kind == "plain"]
    assert (jb.low == jb.ci_low).all() and (jb.high == jb.ci_high).all()
    assert (plain.low == plain.wilson_low).all() and (plain.high == plain.wilson_high).all()
    old = danger_rows(_summary().drop(columns="bootstrap"))  # a summary written before the column: Wilson
    assert (old.low == old.wilson_low).all()
