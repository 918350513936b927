"""Experiment 3's figures: the preference matrix per judge, S per source with intervals, SPB /
PSB per judge with intervals, and SPB's controls (own effect with and without the familiarity
adjustment, self-recognition accuracy). Same conventions as :mod:`collapselab.report.collapse_plots`: a function from
a table to a Figure, ``None`` when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from collapselab.report.figures import condition_colors, draw_interval, panel_grid, plain, styled
from collapselab.report.format import is_missing
from collapselab.report.labels import run_label
from collapselab.report.preference import judge_records, rows_of, source_order


def matrix_array(part: pd.DataFrame, sources: Sequence[str]) -> np.ndarray:
    """One judge's P(row beats column) as a square array in ``sources`` order (NaN: the diagonal
    and pairs the judge never saw)."""
    index = {s: i for i, s in enumerate(sources)}
    out = np.full((len(sources), len(sources)), np.nan)
    for r in part.itertuples(index=False):
        out[index[str(r.row_source)], index[str(r.col_source)]] = r.p_row_wins
    return out


@styled
def preference_matrices(matrix: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """One heat map per judge: P(row source's text beats the column source's); red: the row wins,
    blue: it loses, white: 0.5 (no preference)."""
    if matrix.empty:
        return None
    judges, labels = judge_records(matrix, conditions)
    sources = source_order(pd.DataFrame({"source": [*matrix["row_source"], *matrix["col_source"]]}))
    side = max(2.6, 0.55 * len(sources) + 1.4)
    fig, axes = panel_grid(len(judges), ncols=4, size=(side, side))
    image = None
    for ax, judge in zip(axes, judges, strict=True):
        values = matrix_array(rows_of(matrix, judge), sources)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=0, vmax=1)
        ax.set_facecolor("#f0f0f0")
        ax.grid(False)
        for i in range(len(sources)):
            for j in range(len(sources)):
                if not np.isnan(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7.5,
                            color="white" if abs(values[i, j] - 0.5) > 0.3 else "#222222")
        names = [plain(s) for s in sources]
        ax.set_xticks(range(len(sources)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(sources)), names)
        ax.set_xlabel("column source")
        ax.set_title(f"judge: {plain(run_label(judge, labels))}")
    axes[0].set_ylabel("row source")
    fig.colorbar(image, ax=axes, shrink=0.7, label="P(row beats column)")
    return fig


@styled
def source_scores_plot(scores: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """S per source (x) with its bootstrap interval, one colour per judge; dashed: 0.5 (chance)."""
    if scores.empty:
        return None
    judges, labels = judge_records(scores, conditions)
    sources = source_order(scores)
    colors = condition_colors(run_label(j, labels) for j in judges)
    width = 0.7 / max(len(judges), 1)
    fig, (ax,) = panel_grid(1, ncols=1, size=(max(4.8, 1.3 * len(sources) + 2.5), 3.4))
    for k, judge in enumerate(judges):
        name = run_label(judge, labels)
        part = rows_of(scores, judge).set_index("source")
        for x, source in enumerate(sources):
            if source in part.index:
                r = part.loc[source]
                draw_interval(ax, x + (k - (len(judges) - 1) / 2) * width, r["S"], r["ci_low"], r["ci_high"],
                              colors[name])
        ax.plot([], [], "o", color=colors[name], label=plain(name))
    ax.axhline(0.5, color="#777777", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(sources)), [plain(s) for s in sources])
    ax.set_xlim(-0.6, len(sources) - 0.4)
    ax.set_ylabel("S (mean win probability)")
    ax.set_title("Preference for each source's texts, per judge")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="judge")
    return fig


@styled
def bias_plot(bias: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """SPB and PSB per judge with their bootstrap intervals (two panels); dashed: 0 (no bias)."""
    if bias.empty:
        return None
    judges, labels = judge_records(bias, conditions)
    names = [run_label(j, labels) for j in judges]
    colors = condition_colors(names)
    fig, axes = panel_grid(2, ncols=2, size=(max(3.6, 0.9 * len(judges) + 1.8), 3.3))
    titles = ("Self-preference bias (SPB)", "Pro-synthetic bias (PSB)")
    for ax, metric, title in zip(axes, ("SPB", "PSB"), titles, strict=True):
        for x, (judge, name) in enumerate(zip(judges, names, strict=True)):
            value = judge.get(metric)
            if is_missing(value):  # x in data, y in axes units: visible whatever the other judges' values
                ax.text(x, 0.5, "undefined", rotation=90, ha="center", va="center", fontsize=7.5,
                        color="#777777", transform=ax.get_xaxis_transform())
                continue
            draw_interval(ax, x, value, judge.get(f"{metric}_ci_low"), judge.get(f"{metric}_ci_high"),
                          colors[name])
        ax.axhline(0, color="#777777", linestyle="--", linewidth=1)
        if all(is_missing(j.get(metric)) for j in judges):
            ax.set_yticks([])
        rotate = max(map(len, names), default=0) > 8
        ax.set_xticks(range(len(names)), [plain(n) for n in names], rotation=30 if rotate else 0,
                      ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(title)
    axes[0].set_ylabel("bias (difference in S)")
    return fig


#: the own effects of the controls plot: (column, legend label, marker)
_OWN_EFFECTS = (("own_unadjusted", "own effect", "o"), ("own_adjusted", "own effect | familiarity", "s"),
                ("stratified", "stratified", "^"))


@styled
def controls_plot(controls: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """Two panels per run: left, each judge's own-source effect without and with the familiarity
    adjustment (and stratified by Δ log-perplexity), with intervals, dashed 0; right, its
    self-recognition accuracy with its interval, dashed 0.5 (chance)."""
    if controls is None or controls.empty:
        return None
    judges, labels = judge_records(controls, conditions)
    names = [run_label(j, labels) for j in judges]
    colors = condition_colors(names)
    fig, axes = panel_grid(2, ncols=2, size=(max(3.8, 1.0 * len(judges) + 2.0), 3.3))
    rotate = max(map(len, names), default=0) > 8
    width = 0.22
    for k, (column, label, marker) in enumerate(_OWN_EFFECTS):
        for x, (judge, name) in enumerate(zip(judges, names, strict=True)):
            draw_interval(axes[0], x + (k - 1) * width, judge.get(column), judge.get(f"{column}_ci_low"),
                          judge.get(f"{column}_ci_high"), colors[name], marker=marker)
        axes[0].plot([], [], marker, color="#555555", linestyle="none", label=label)
    axes[0].axhline(0, color="#777777", linestyle="--", linewidth=1)
    axes[0].set_ylabel("Δ P(prefer) for the own text")
    axes[0].set_title("Own-source effect")
    axes[0].legend(loc="best", frameon=False, fontsize=7)
    for x, (judge, name) in enumerate(zip(judges, names, strict=True)):
        value = judge.get("recognition")
        if is_missing(value):
            axes[1].text(x, 0.5, "undefined", rotation=90, ha="center", va="center", fontsize=7.5,
                         color="#777777", transform=axes[1].get_xaxis_transform())
            continue
        draw_interval(axes[1], x, value, judge.get("recognition_ci_low"), judge.get("recognition_ci_high"),
                      colors[name])
    axes[1].axhline(0.5, color="#777777", linestyle="--", linewidth=1)
    axes[1].set_ylabel("P(picks its own text)")
    axes[1].set_title("Self-recognition")
    for ax in axes:
        ax.set_xticks(range(len(names)), [plain(n) for n in names], rotation=30 if rotate else 0,
                      ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(names) - 0.4)
    return fig
