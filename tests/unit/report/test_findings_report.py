"""The findings section on a real finished run (issue 14): a tiny experiment with preregistered
hypotheses in all three experiments runs end to end; then the verdicts are re-derived from the
report's own saved tables (per_item, safety_judged, preference_per_item) with independent code —
pandas pivots, scipy's Wilcoxon, statsmodels' Holm — so the section cannot drift from the numbers
the report shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from collapselab.config.load import load_config
from collapselab.executors import run_stages
from tests.helpers import tiny_config, write_corpus
from tests.unit.report.test_experiments_report import DATA

pytestmark = pytest.mark.slow

JUDGES = Path(__file__).parents[3] / "configs" / "judges"

LEX = "lexical_diversity[mode=individual,max_order=3]"
HYPOTHESES = {
    "correction": "holm", "bootstrap": 200,
    "tests": [
        {"id": "H1", "claim": "Single-source data lowers diversity.", "experiment": "collapse",
         "a": "single:a", "b": "human",
         "endpoints": [{"metric": "distinct[n=1]", "direction": "less"},
                       {"metric": "human_perplexity", "direction": "greater"}]},
        {"id": "H2", "claim": "The mix keeps more diversity.", "experiment": "collapse",
         "a": "multi:a,b", "b": "single:a", "endpoints": [{"metric": "distinct[n=1]", "direction": "greater"}]},
        {"id": "H5", "claim": "Fine-tuning lowers self-preference.", "experiment": "preference",
         "a": "single:a", "b": "vanilla", "endpoints": [{"metric": "PSB", "direction": "less"}]},
        {"id": "H6", "claim": "Human data raises harmfulness.", "experiment": "safety", "prompt_kind": "plain",
         "a": "human", "b": "vanilla", "endpoints": [{"metric": "harm", "direction": "greater"}]},
    ],
}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_model_dir):
    from collapselab.report.inputs import collect
    from collapselab.report.write import write_report

    tmp = tmp_path_factory.mktemp("findings")
    cfg = tiny_config(
        tmp, tiny_model_dir, write_corpus(tmp / "corpus.jsonl", n=60),
        split={"test_fraction": 0.3, "train_size": 16, "test_size": 14, "seed": 1},
        seeds=[1, 2],
        safety={"enabled": True,
                "prompts": [{"kind": "csv", "path": str(DATA / "harmful_behaviors.csv"),
                             "columns": {"text": "goal"}, "max_prompts": 6, "seed": 1}],
                "jailbreaks": {"kind": "csv", "path": str(DATA / "chatgpt_jailbreak_prompts.csv"),
                               "max_templates": 1, "prompts_per_template": 1, "max_chars": 300},
                "harm_template": str(JUDGES / "harm-brief-rating.txt"),
                "quality_template": str(JUDGES / "quality-brief-rating.txt"),
                # the tiny judge's context (512) cannot hold the calibration items: no calibration here
                # (the judge note is tested in tests/unit/stats/test_findings.py)
                "overrefusal": {"enabled": False}, "calibrate": False, "bootstrap": 50},
        preference={"enabled": True, "items": 5, "bootstrap": 50, "recognition": False, "ratings": False},
        collapse={"bootstrap": 50, "jackknife_groups": 0},
        hypotheses=HYPOTHESES,
    )
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp / "out")
    out = tmp / "report"
    write_report(collect(spec, tmp / "out"), out)
    return out


def _rederive(report_dir):
    """Every endpoint's effect and p from the saved tables, independently of collapselab.stats."""
    per_item = pd.read_parquet(report_dir / "per_item.parquet")
    judged = pd.read_parquet(report_dir / "safety_judged.parquet")
    pref = pd.read_parquet(report_dir / "preference_per_item.parquet")
    cond = per_item[(per_item["set_kind"] == "condition")]

    def collapse(metric, a, b):
        t = cond[cond["metric"] == metric].groupby(["condition", "item_id"])["value"].mean().unstack(0)
        return (t[a] - t[b]).dropna().to_numpy()

    def harm(a, b):
        plain = judged[judged["prompt_kind"] == "plain"]
        t = plain.groupby(["condition", "item_id"])["harm"].mean().unstack(0)
        return (t[a] - t[b]).dropna().to_numpy()

    def psb(a, b):
        s = pref[pref["metric"] == "S"].pivot_table(index=["condition", "seed", "item_id"], columns="source",
                                                    values="value")
        synthetic = [c for c in s.columns if c != "human"]
        v = (s[synthetic].mean(axis=1) - s["human"]).groupby(level=["condition", "item_id"]).mean().unstack(0)
        return (v[a] - v[b]).dropna().to_numpy()

    return {
        ("H1", "distinct[n=1]"): collapse("distinct[n=1]", "single:a", "human"),
        ("H1", "human_perplexity"): collapse("human_perplexity", "single:a", "human"),
        ("H2", "distinct[n=1]"): collapse("distinct[n=1]", "multi:a,b", "single:a"),
        ("H5", "PSB"): psb("single:a", "vanilla"),
        ("H6", "harm"): harm("human", "vanilla"),
    }


def test_the_findings_section_is_what_the_reports_tables_give(report_dir):
    findings = pd.read_parquet(report_dir / "findings.parquet").set_index(["hypothesis", "endpoint"])
    expected = _rederive(report_dir)
    assert set(findings.index) == set(expected)
    raw = {}
    for key, d in expected.items():
        row = findings.loc[key]
        assert row["n_items"] == len(d) > 0
        assert row["effect"] == pytest.approx(d.mean(), rel=1e-9, abs=1e-12)
        p = sps.wilcoxon(d).pvalue if np.any(d != 0) else np.nan
        assert row["p"] == pytest.approx(p, rel=1e-9, nan_ok=True)
        raw[key] = p
    keys = [k for k, p in raw.items() if np.isfinite(p)]
    holm = multipletests([raw[k] for k in keys], method="holm")[1]
    for key, p_adj in zip(keys, holm, strict=True):
        assert findings.loc[key, "p_adj"] == pytest.approx(p_adj, rel=1e-9)
        direction = findings.loc[key, "direction"]
        effect = findings.loc[key, "effect"]
        if p_adj >= 0.05:
            want = "inconclusive"
        else:
            want = "supported" if (effect > 0) == (direction == "greater") else "contradicted"
        assert findings.loc[key, "verdict"] == want


def test_both_renderings_show_every_hypothesis_with_its_verdict(report_dir):
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    hypotheses = pd.read_parquet(report_dir / "hypotheses.parquet")
    assert "## Findings: the preregistered hypotheses" in md and 'id="findings"' in html
    assert 'id="plot-findings"' in html
    for hid, verdict in zip(hypotheses["hypothesis"], hypotheses["verdict"], strict=True):
        line = next(x for x in md.splitlines() if x.startswith(f"| {hid} |"))
        assert verdict in line
    assert md.index("## Findings") < md.index("## Summary")  # before any other result


def test_report_figures_export_as_png_files(report_dir, tmp_path):
    from collapselab.report.write import export_figures

    html = (report_dir / "report.html").read_text()
    # a figure without data (no <img>) must not take the next figure's image
    html = html.replace('<figure id="plot-findings">', '<figure id="empty-one"><p class="empty">x</p></figure>'
                                                       '<figure id="plot-findings">', 1)
    written = export_figures(html, tmp_path)
    assert "plot-findings" in written and "empty-one" not in written
    assert written["plot-findings"].read_bytes().startswith(b"\x89PNG")
