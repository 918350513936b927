"""Experiment 2's figures: the 5×5 quality × harmfulness distribution per run and prompt kind (the
study's heat map) and the danger-zone shares with their intervals. Same conventions as
:mod:`collapselab.report.collapse_plots`: a function from a table to a Figure, ``None`` when there is
nothing to draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from collapselab.report.figures import new_figure, plain, styled
from collapselab.report.format import is_missing
from collapselab.report.labels import run_columns, run_label, sort_runs
from collapselab.report.safety import PROMPT_KINDS, present_keys, run_mask

SCORES = np.arange(1, 6)
KIND_COLORS = {"plain": "#0072B2", "jailbreak": "#D55E00", "all": "#7F7F7F"}
#: heat-map panels per row before the runs wrap onto a new block of rows
PANELS_PER_ROW = 4


def joint_matrix(joint: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """The counts of one run and prompt kind as a 5×5 array indexed [quality − 1, harm − 1]
    (quality up the rows, harm along the columns), with n_parsed and n_unparsed."""
    counts = np.zeros((5, 5), dtype=int)
    for r in joint.itertuples(index=False):
        counts[int(r.quality) - 1, int(r.harm) - 1] += int(r.count)
    n_parsed = int(joint["n_parsed"].iloc[0]) if len(joint) else 0
    n_unparsed = int(joint["n_unparsed"].iloc[0]) if len(joint) else 0
    return counts, n_parsed, n_unparsed


def _panel(ax, counts: np.ndarray, n_parsed: int, thresholds: Mapping[str, int], image_args: dict) -> Any:
    """One 5×5 heat map: share of answers per cell, the count written in it, the danger zone
    (harm ≥ threshold and quality ≥ threshold) outlined."""
    share = counts / n_parsed if n_parsed else np.full((5, 5), np.nan)
    image = ax.imshow(np.ma.masked_invalid(share), origin="lower", extent=(0.5, 5.5, 0.5, 5.5), **image_args)
    ax.set_facecolor("#f0f0f0")
    for q in range(5):
        for h in range(5):
            if counts[q, h]:
                ax.text(h + 1, q + 1, str(counts[q, h]), ha="center", va="center", fontsize=7.5,
                        color="white" if share[q, h] > 0.55 else "#222222")
    h0, q0 = thresholds.get("harm", 4), thresholds.get("quality", 4)
    ax.add_patch(Rectangle((h0 - 0.5, q0 - 0.5), 5.5 - (h0 - 0.5), 5.5 - (q0 - 0.5), fill=False,
                           edgecolor="#111111", linewidth=1.4, linestyle="--"))
    if not n_parsed:
        ax.text(3, 3, "no answer with\nboth scores", ha="center", va="center", fontsize=7.5, color="#777777")
    ax.set_xticks(SCORES)
    ax.set_yticks(SCORES)
    ax.tick_params(length=0, labelsize=7.5)
    return image


@styled
def joint_heatmaps(joint: pd.DataFrame, conditions: Sequence[str] = (),
                   thresholds: Mapping[str, int] | None = None) -> Figure | None:
    """The 5×5 quality × harmfulness distribution, one panel per run (columns) and prompt kind
    (rows: plain, jailbreak); colour = share of the answers with both judgements parsed, numbers
    = counts, dashed box = the danger zone. ``None`` when no answer has both judgements."""
    if joint.empty or not (joint["n_parsed"] > 0).any():
        return None
    thresholds = dict(thresholds or {"harm": 4, "quality": 4})
    kinds = [k for k in PROMPT_KINDS if (joint["prompt_kind"] == k).any()] or ["all"]
    labels = run_columns(joint)
    runs = sort_runs(joint.drop_duplicates(present_keys(joint)), conditions).to_dict("records")
    ncols = min(len(runs), PANELS_PER_ROW)
    blocks = -(-len(runs) // ncols)
    fig = new_figure(2.3 * ncols + 0.9, 2.35 * blocks * len(kinds) + 0.3)
    grid = fig.subplots(blocks * len(kinds), ncols, squeeze=False)
    image_args = {"cmap": "Reds", "vmin": 0.0, "vmax": 1.0, "aspect": "equal"}
    image = None
    for i, run in enumerate(runs):
        block, col = divmod(i, ncols)
        for k, kind in enumerate(kinds):
            ax = grid[block * len(kinds) + k, col]
            part = joint[run_mask(joint, run) & (joint["prompt_kind"] == kind)]
            counts, n_parsed, n_unparsed = joint_matrix(part)
            image = _panel(ax, counts, n_parsed, thresholds, image_args)
            extra = f", {n_unparsed} unparsed" if n_unparsed else ""
            ax.set_title(f"{plain(run_label(run, labels))}\n{kind} (n = {n_parsed}{extra})", fontsize=8.5)
            if col == 0:
                ax.set_ylabel("quality")
            if k == len(kinds) - 1:
                ax.set_xlabel("harmfulness")
    for j in range(len(runs), blocks * ncols):  # unused cells of the last block
        for k in range(len(kinds)):
            grid[(blocks - 1) * len(kinds) + k, j % ncols].remove()
    # the colour bar spans the panels left (a removed cell belongs to no figure any more)
    fig.colorbar(image, ax=[ax for ax in grid.ravel() if ax.figure is fig], shrink=0.6, label="share of answers")
    return fig


def danger_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The danger-zone rows of the plain and jailbreak prompts (all categories) with the interval
    to draw: Wilson where the summary has one and the items are independent, else the bootstrap
    interval (for jailbreak items, resampled as clusters of templates and prompts)."""
    if summary.empty:
        return summary
    rows = summary[(summary["metric"] == "danger_zone") & (summary["category"] == "all")
                   & summary["prompt_kind"].isin(PROMPT_KINDS)].copy()
    if {"wilson_low", "wilson_high"} <= set(rows.columns):
        wilson = rows["wilson_low"].notna() & rows["wilson_high"].notna()
        if "bootstrap" in rows.columns:  # a cluster bootstrap's interval beats Wilson's for clustered items
            wilson &= ~(rows["bootstrap"].notna() & (rows["bootstrap"].astype(str) != "item")
                        & rows["ci_low"].notna())
        rows["low"] = rows["wilson_low"].where(wilson, rows["ci_low"])
        rows["high"] = rows["wilson_high"].where(wilson, rows["ci_high"])
    else:
        rows["low"], rows["high"] = rows["ci_low"], rows["ci_high"]
    return rows


@styled
def danger_zone_bars(summary: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """Share of answers in the danger zone (harmful *and* of high quality) per run, plain and
    jailbreak prompts side by side, with Wilson intervals (cluster bootstrap intervals for jailbreak
    items). ``None`` when it is undefined everywhere."""
    rows = danger_rows(summary)
    if rows.empty or not rows["value"].notna().any():
        return None
    labels = run_columns(rows)
    runs = sort_runs(rows.drop_duplicates(present_keys(rows)), conditions).to_dict("records")
    kinds = [k for k in PROMPT_KINDS if (rows["prompt_kind"] == k).any()]
    width = 0.8 / len(kinds)
    fig = new_figure(max(4.5, 1.1 * len(runs) + 2.0), 3.4)
    ax = fig.subplots()
    for k, kind in enumerate(kinds):
        for x, run in enumerate(runs):
            hit = rows[run_mask(rows, run) & (rows["prompt_kind"] == kind)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            pos = x + (k - (len(kinds) - 1) / 2) * width
            if is_missing(r["value"]):
                ax.text(pos, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="#777777")
                continue
            ax.bar(pos, r["value"], width * 0.9, color=KIND_COLORS[kind], label=kind if x == 0 else None)
            if not (is_missing(r["low"]) or is_missing(r["high"])):
                ax.plot([pos, pos], [r["low"], r["high"]], color="#222222", linewidth=1.2)
                ax.plot([pos, pos], [r["low"], r["high"]], linestyle="none", marker="_", markersize=6,
                        color="#222222")
    names = [plain(run_label(r, labels)) for r in runs]
    rotate = max(map(len, names), default=0) > 10
    ax.set_xticks(range(len(runs)), names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share in the danger zone")
    ax.set_title("Danger zone: harmful and high-quality answers")
    ax.grid(True, axis="y", color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    # outside the axes: bars reach 1.0 exactly when every answer is in the danger zone
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="prompts")
    return fig
