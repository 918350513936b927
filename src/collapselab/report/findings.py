"""The report's findings section (issue 14): for a run whose config declares ``hypotheses``, each
hypothesis in plain words with its verdict, and every endpoint's paired effect, interval,
corrected p-value, verdict and minimum detectable effect (:mod:`collapselab.stats.findings`).

Verdicts against a hypothesis are shown exactly like those for it: the same table, the same
columns, the verdict in words, with no colour for "good" outcomes. A safety endpoint carries its
harm judge's measured agreement with the labelled calibration set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from collapselab.report.format import Table, fmt_ci, fmt_int, fmt_num, fmt_p, fmt_text

DIRECTION_WORDS = {"greater": "a > b", "less": "a < b"}


@dataclass
class FindingsTables:
    """The findings section: an intro, the verdict per hypothesis and the endpoint table."""

    intro: str
    hypotheses: Table
    endpoints: Table


def findings_frames(spec: Any, parts: dict[str, Any], safety: Any, preference: Any,
                    target_names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The endpoint rows and the per-hypothesis verdicts of a run (empty frames without hypotheses)."""
    from collapselab.stats.findings import EndpointTables, compute_findings, hypothesis_verdicts

    if not spec.hypotheses.tests:
        return pd.DataFrame(), pd.DataFrame()
    own: dict[str, str | None] = {}
    if preference is not None:
        from collapselab.pipeline.experiments.preference import own_sources

        own = own_sources(spec, target_names)
    tables = EndpointTables(
        per_item=parts.get("per_item", pd.DataFrame()),
        safety_judged=safety.judged if safety is not None else pd.DataFrame(),
        preference_per_item=preference.per_item if preference is not None else pd.DataFrame(),
        own=own,
    )
    findings = compute_findings(spec.hypotheses, tables, target_names)
    if safety is not None and not findings.empty:
        findings = _judge_notes(findings, safety.calibration)
    return findings, hypothesis_verdicts(findings)


def _judge_notes(findings: pd.DataFrame, calibration: list[dict[str, Any]]) -> pd.DataFrame:
    """A safety endpoint's note: its judge's measured agreement with the labelled items."""
    by_role = {str(e.get("role")): e for e in calibration if e.get("role") in ("harm", "quality")}
    notes = []
    for experiment, endpoint, note in zip(findings["experiment"], findings["endpoint"], findings["note"],
                                          strict=True):
        entry = by_role.get(str(endpoint)) if experiment == "safety" else None
        if entry is not None:
            judged = (f"judge {entry.get('judge')}: κ = {_two(entry.get('kappa'))}, accuracy "
                      f"{_two(entry.get('accuracy'))} on {fmt_int(entry.get('n'))} labelled items"
                      + ("" if entry.get("trust") else " — too weak to trust"))
            note = f"{note}; {judged}" if note else judged
        notes.append(note)
    return findings.assign(note=notes)


def _two(value: Any) -> str:
    """Two decimals (κ and accuracy), or the missing mark."""
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return fmt_num(value)


def _seed_text(raw: Any) -> str:
    try:
        seeds = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return ""
    return ", ".join(f"{k}: {fmt_num(v)}" for k, v in seeds.items())


def findings_tables(findings: pd.DataFrame, verdicts: pd.DataFrame, settings: Any) -> FindingsTables | None:
    """The findings section's tables (None when the run declares no hypotheses); ``settings``: the
    config's :class:`~collapselab.config.hypotheses.HypothesesSpec` (alpha, power, correction)."""
    if findings is None or findings.empty:
        return None
    h = settings
    multi_target = findings["target"].nunique() > 1
    intro = (f"{len(verdicts)} preregistered hypotheses, {len(findings)} endpoints. Each endpoint's effect is "
             f"a − b per item (each arm averaged over its seeds), tested with the two-sided Wilcoxon "
             f"signed-rank test; p-values corrected together ({h.correction}); α = {h.alpha:g}. Supported: "
             f"significant with the expected sign; contradicted: significant with the opposite sign; "
             f"inconclusive: not significant — the MDE is the effect this run could have detected with "
             f"{h.power:.0%} power. Results against a hypothesis are shown like those for it.")
    hyp = pd.DataFrame({
        "hypothesis": verdicts["hypothesis"],
        **({"target": verdicts["target"]} if multi_target else {}),
        "claim": verdicts["claim"].map(fmt_text),
        "verdict": verdicts["verdict"],
        "endpoints": verdicts["endpoints"].map(fmt_text),
    })
    rows = pd.DataFrame({
        "hypothesis": findings["hypothesis"],
        **({"target": findings["target"]} if multi_target else {}),
        "endpoint": findings["endpoint"].map(fmt_text),
        "contrast": findings["contrast"].map(fmt_text),
        "expected": findings["direction"].map(DIRECTION_WORDS),
        "effect [95% CI]": [fmt_ci(e, lo, hi) for e, lo, hi in
                            zip(findings["effect"], findings["ci_low"], findings["ci_high"], strict=True)],
        "n": findings["n_items"].map(fmt_int),
        "p": findings["p"].map(fmt_p),
        f"p ({h.correction})": findings["p_adj"].map(fmt_p),
        "verdict": findings["verdict"],
        "MDE": findings["mde"].map(fmt_num),
        "per seed": findings["seed_effects"].map(_seed_text),
        "seeds agree": findings["seeds_agree"],
        "study": findings["study"].map(fmt_text),
        "note": findings["note"].map(fmt_text),
    })
    return FindingsTables(
        intro=intro,
        hypotheses=Table(hyp, caption="Verdict per hypothesis: supported when every endpoint is, contradicted "
                                      "when any is (mixed when others are supported), partly supported when "
                                      "some are, else inconclusive.", wide={"claim", "endpoints"}),
        endpoints=Table(rows, caption="Every endpoint of every hypothesis: the paired effect a − b with its "
                                      "bootstrap interval over items, the raw and corrected p, the verdict and "
                                      "the minimum detectable effect; each seed's own mean effect beside it.",
                        numeric={"n", "p", f"p ({h.correction})", "MDE"}, wide={"per seed", "study", "note"}),
    )


def findings_figure(findings: pd.DataFrame) -> Any:
    """Every endpoint's effect and interval in units of its minimum detectable effect (so all
    endpoints share one axis): |effect| ≥ 1 MDE is what the run could detect with the stated
    power; the expected side is marked per row. None without findings."""
    if findings is None or findings.empty:
        return None
    import matplotlib.pyplot as plt
    import numpy as np

    f = findings.iloc[::-1].reset_index(drop=True)
    scale = f["mde"].where(f["mde"] > 0)
    effect, low, high = (f[c] / scale for c in ("effect", "ci_low", "ci_high"))
    # the expected side is to the right for every row: "less" endpoints are mirrored
    flip = np.where(f["direction"] == "less", -1.0, 1.0)
    effect, low, high = effect * flip, np.where(flip < 0, -high, low), np.where(flip < 0, -low, high)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(f) + 1.4))
    markers = {"supported": "o", "contradicted": "X", "inconclusive": "s"}
    y = np.arange(len(f))
    for v, marker in markers.items():
        rows = (f["verdict"] == v).to_numpy()
        if rows.any():
            ax.errorbar(effect[rows], y[rows], xerr=[effect[rows] - low[rows], high[rows] - effect[rows]],
                        fmt=marker, color="black", ecolor="0.45", capsize=2, label=v, markersize=6)
    ax.axvline(0, color="0.3", linewidth=0.8)
    for x in (-1, 1):
        ax.axvline(x, color="0.6", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, [f"{h} · {str(e)[:38]}" for h, e in zip(f["hypothesis"], f["endpoint"], strict=True)],
                  fontsize=8)
    ax.set_xlabel("effect in the expected direction, in units of its MDE (dashed: ±1 MDE)")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
