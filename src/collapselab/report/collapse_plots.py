"""Experiment 1's figures (and the fine-tuning loss curves): one function per plot, each taking a
table (or part of the inputs) and returning a matplotlib :class:`~matplotlib.figure.Figure` — or
``None`` when the run has nothing to draw, so the report can say so instead of showing an empty
frame. The primitives (colours, panel grids, the PNG data URI) are in :mod:`collapselab.report.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from collapselab.report.figures import (
    HUMAN_COLOR,
    SOURCE_PALETTE,
    condition_colors,
    draw_interval,
    metric_title,
    new_figure,
    panel_grid,
    plain,
    styled,
    wrap,
)
from collapselab.report.format import fmt_text, is_missing
from collapselab.report.labels import condition_order, directions, primary_rows, set_kinds, set_labels

# ------------------------------------------------------------------------------------------
# (a) metrics per condition, with intervals
# ------------------------------------------------------------------------------------------


@styled
def metric_intervals(aggregates: pd.DataFrame) -> Figure | None:
    """One panel per metric: each condition's primary statistic with its bootstrap interval; the
    human references as a dashed line. Runs with several targets / seeds / generations get one
    offset series per combination."""
    rows = primary_rows(aggregates, ("condition",))
    if rows.empty:
        return None
    known = directions(aggregates)
    human = primary_rows(aggregates, ("human",))
    conditions = condition_order(rows)
    position = {c: i for i, c in enumerate(conditions)}
    series_cols = [c for c in ("target", "seed", "generation")
                   if c in rows.columns and rows[c].astype(object).map(str).nunique() > 1]
    series = (list(rows.groupby(series_cols, dropna=False, sort=True)) if series_cols else [((), rows)])
    colors = condition_colors(conditions)
    series_colors = condition_colors([str(k) for k, _ in series])
    width = 0.6 / max(len(series), 1)

    metrics = [str(m) for m in pd.unique(rows["metric"])]
    fig, axes = panel_grid(len(metrics))
    legend_drawn = False
    for ax, metric in zip(axes, metrics, strict=True):
        for k, (key, part) in enumerate(series):
            offset = (k - (len(series) - 1) / 2) * width
            for r in part[part["metric"] == metric].itertuples(index=False):
                color = colors[str(r.condition)] if len(series) == 1 else series_colors[str(key)]
                draw_interval(ax, position[str(r.condition)] + offset, r.value, r.ci_low, r.ci_high, color)
        if not rows.loc[rows["metric"] == metric, "value"].notna().any():
            ax.text(0.5, 0.5, "undefined for every condition", transform=ax.transAxes, ha="center",
                    va="center", color="#777777", fontsize=8.5)
        ref = human[human["metric"] == metric]
        if not ref.empty and not is_missing(ref["value"].iloc[0]):
            ax.axhline(ref["value"].iloc[0], color=HUMAN_COLOR, linestyle="--", linewidth=1,
                       label="human references")
            if not legend_drawn:  # one legend says it for every panel
                ax.legend(loc="best", frameon=False)
                legend_drawn = True
        ax.set_xticks(range(len(conditions)), [plain(c) for c in conditions],
                      rotation=30 if max(map(len, conditions), default=0) > 7 else 0, ha="right"
                      if max(map(len, conditions), default=0) > 7 else "center")
        ax.set_xlim(-0.6, len(conditions) - 0.4)
        ax.set_title(metric_title(metric, known.get(metric)))
    if len(series) > 1:
        handles = [fig.axes[0].plot([], [], "o", color=series_colors[str(k)])[0] for k, _ in series]
        keys = [k if isinstance(k, tuple) else (k,) for k, _ in series]
        names = [", ".join(f"{c} {fmt_text(v)}" for c, v in zip(series_cols, k, strict=True)) for k in keys]
        fig.legend(handles, [plain(n) for n in names], loc="outside lower center", ncols=min(len(names), 4),
                   frameon=False)
    return fig


# ------------------------------------------------------------------------------------------
# (b) Heaps curves
# ------------------------------------------------------------------------------------------


def heaps_points(entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The vocabulary-growth curve in one set's details: the ``heaps[...]`` metric's ``N`` and ``V``
    (:class:`collapselab.metrics.vocabulary.Heaps`), or the same under a ``curve`` key."""
    for key, value in entry.items():
        if str(key).split("[")[0] != "heaps" or not isinstance(value, Mapping):
            continue
        curve = value.get("curve", value)
        if isinstance(curve, Mapping) and curve.get("N") and curve.get("V"):
            n = np.asarray(curve["N"], dtype=float)
            v = np.asarray(curve["V"], dtype=float)
            ok = (n > 0) & (v > 0)  # log axes
            if ok.any():
                return n[ok], v[ok]
    return None


@styled
def heaps_curves(details: Mapping[str, Mapping[str, Any]],
                 aggregates: pd.DataFrame | None = None) -> Figure | None:
    """Vocabulary growth V(N) of every set on log–log axes (a straight line = Heaps' law, slope β).
    With ``aggregates``, sets are labelled and coloured as elsewhere and β is in the legend."""
    curves = {s: c for s, e in details.items() if (c := heaps_points(e)) is not None}
    if not curves:
        return None
    aggregates = aggregates if aggregates is not None else pd.DataFrame()
    labels, kinds = set_labels(aggregates), set_kinds(aggregates)
    betas: dict[str, float] = {}
    if not aggregates.empty:
        rows = aggregates[aggregates["metric"].astype(str).str.startswith("heaps")
                          & (aggregates["statistic"] == "beta")]
        betas = dict(zip(rows["set_name"].astype(str), rows["value"], strict=True))
    cond_colors = condition_colors(
        [s for s in curves if kinds.get(s, "condition") == "condition"])
    src_colors = condition_colors([s for s in curves if kinds.get(s) == "source"], SOURCE_PALETTE)

    fig = new_figure(7.2, 4.4)
    ax = fig.subplots()
    order = sorted(curves, key=lambda s: {"condition": 0, "source": 1, "human": 2}.get(kinds.get(s, ""), 0))
    for s in order:
        n, v = curves[s]
        kind = kinds.get(s, "condition")
        label = plain(labels.get(s, s))
        if s in betas and not is_missing(betas[s]):
            label += f" (β = {betas[s]:.3f})"
        if kind == "human":
            ax.loglog(n, v, color=HUMAN_COLOR, linestyle="--", linewidth=1.8, label=label)
        elif kind == "source":
            ax.loglog(n, v, color=src_colors[s], linestyle=":", linewidth=1.4, label=f"source: {label}")
        else:
            ax.loglog(n, v, color=cond_colors[s], linewidth=1.8, label=label)
    ax.set_xlabel("tokens N")
    ax.set_ylabel("distinct word types V")
    ax.set_title("Vocabulary growth (Heaps' law V = K·N^β)")
    ax.grid(True, which="both", color="#ececec", linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# ------------------------------------------------------------------------------------------
# (c) response lengths
# ------------------------------------------------------------------------------------------


def _bins(values: np.ndarray, max_bins: int = 30) -> np.ndarray:
    """Shared bin edges: one bin per integer for small integer ranges (sentence counts), else equal
    width — so every condition's histogram is comparable."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if np.all(np.mod(values, 1) == 0) and hi - lo <= max_bins:
        return np.arange(lo - 0.5, hi + 1.5)
    return np.histogram_bin_edges(values, bins=max_bins)


@styled
def length_histograms(per_item: pd.DataFrame) -> Figure | None:
    """Histograms of the per-item ``length*`` metrics (words, sentences), one outline per condition,
    the human references dashed black, on shared bins."""
    if per_item.empty:
        return None
    rows = per_item[per_item["metric"].astype(str).str.startswith("length")
                    & per_item["set_kind"].isin(["condition", "human"]) & per_item["value"].notna()]
    if rows.empty:
        return None
    labels, kinds = set_labels(rows), set_kinds(rows)
    metrics = sorted(map(str, pd.unique(rows["metric"])), key=lambda m: ("words" not in m, m))
    sets = [str(s) for s in pd.unique(rows["set_name"])]
    colors = condition_colors([s for s in sets if kinds.get(s) == "condition"])
    fig, axes = panel_grid(len(metrics), ncols=2, size=(4.8, 3.1))
    for ax, metric in zip(axes, metrics, strict=True):
        part = rows[rows["metric"] == metric]
        bins = _bins(part["value"].to_numpy(dtype=float))
        for s in sets:
            values = part.loc[part["set_name"] == s, "value"].to_numpy(dtype=float)
            if not values.size:
                continue
            human = kinds.get(s) == "human"
            ax.hist(values, bins=bins, histtype="step", linewidth=1.8 if not human else 1.4,
                    linestyle="--" if human else "-", color=HUMAN_COLOR if human else colors[s],
                    label=plain(labels.get(s, s)))
        unit = metric.rpartition(".")[2] if "." in metric else "words"
        ax.set_xlabel(f"{plain(unit)} per response")
        ax.set_ylabel("responses")
        ax.set_title(f"Response length: {plain(unit)}")
    axes[-1].legend(loc="upper right", frameon=False)
    return fig


# ------------------------------------------------------------------------------------------
# (d) embedding map
# ------------------------------------------------------------------------------------------


@styled
def embedding_map(frame: pd.DataFrame) -> Figure | None:
    """The responses' 2-D PCA projection, one colour per condition (sources: triangles; human
    references: black squares), so a collapsed condition shows up as a tight cloud."""
    if frame.empty or not {"x", "y"} <= set(frame.columns):
        return None
    frame = frame[frame["x"].notna() & frame["y"].notna()]
    if frame.empty:
        return None
    label_of = frame["condition"].astype(object).where(frame["condition"].notna(), frame["set_name"])
    kind_of = frame["set_kind"] if "set_kind" in frame.columns else pd.Series("condition", index=frame.index)
    keys = list(dict.fromkeys(zip(kind_of.astype(str), label_of.astype(str), strict=True)))
    keys.sort(key=lambda k: {"condition": 0, "source": 1, "human": 2}.get(k[0], 0))
    cond_colors = condition_colors([lab for kind, lab in keys if kind == "condition"])
    src_colors = condition_colors([lab for kind, lab in keys if kind == "source"], SOURCE_PALETTE)

    fig = new_figure(7.2, 5.2)
    ax = fig.subplots()
    for kind, label in keys:
        part = frame[(kind_of.astype(str) == kind) & (label_of.astype(str) == label)]
        if kind == "human":
            style = {"color": HUMAN_COLOR, "marker": "s", "s": 10}
            name = "human references"
        elif kind == "source":
            style = {"color": src_colors[label], "marker": "^", "s": 12}
            name = f"source: {label}"
        else:
            style = {"color": cond_colors[label], "marker": "o", "s": 10}
            name = label
        ax.scatter(part["x"], part["y"], alpha=0.7, linewidths=0, label=plain(name), **style)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Response embeddings (one PCA over all sets)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, markerscale=2)
    return fig


# ------------------------------------------------------------------------------------------
# (e) training-data diversity per source
# ------------------------------------------------------------------------------------------


@styled
def source_diversity(aggregates: pd.DataFrame) -> Figure | None:
    """One panel per metric: each source's synthetic training data (and the human data, black)
    with its interval — a dot plot, since bars from zero would hide differences of 0.01."""
    sources = primary_rows(aggregates, ("source",))
    if sources.empty:
        return None
    rows = primary_rows(aggregates, ("source", "human"))
    rows = rows[rows["metric"].isin(set(sources["metric"]))]  # metrics the sources have
    known = directions(aggregates)
    labels, kinds = set_labels(rows), set_kinds(rows)
    sets = sorted(map(str, pd.unique(rows["set_name"])), key=lambda s: kinds.get(s) == "human")
    colors = condition_colors([s for s in sets if kinds.get(s) == "source"], SOURCE_PALETTE)
    metrics = [str(m) for m in pd.unique(rows["metric"])]
    fig, axes = panel_grid(len(metrics), ncols=3, size=(3.7, 1.5 + 0.36 * len(sets)))
    for ax, metric in zip(axes, metrics, strict=True):
        part = rows[rows["metric"] == metric].set_index("set_name")
        for y, s in enumerate(sets):
            if s not in part.index:
                continue
            r = part.loc[s]
            r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
            color = HUMAN_COLOR if kinds.get(s) == "human" else colors[s]
            if not (is_missing(r["ci_low"]) or is_missing(r["ci_high"])):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=color, linewidth=1.6)
            if not is_missing(r["value"]):
                ax.plot([r["value"]], [y], "o", color=color, markersize=5.5)
        ax.set_yticks(range(len(sets)), [plain(labels.get(s, s)) for s in sets])
        ax.set_ylim(-0.6, len(sets) - 0.4)
        ax.grid(True, axis="x", color="#e4e4e4", linewidth=0.6)
        ax.grid(False, axis="y")
        ax.set_title(metric_title(metric, known.get(metric)))
    return fig


# ------------------------------------------------------------------------------------------
# (f) metric concordance heatmap
# ------------------------------------------------------------------------------------------


@styled
def concordance_heatmap(correlations: pd.DataFrame, title: str = "") -> Figure | None:
    """Kendall's τ between every pair of metrics across conditions (on "goodness": τ > 0 means
    the two metrics agree on which conditions are better); undefined pairs shown as "—"."""
    if correlations.empty:
        return None
    metrics = list(dict.fromkeys([*map(str, correlations["metric_a"]), *map(str, correlations["metric_b"])]))
    index = {m: i for i, m in enumerate(metrics)}
    tau = np.full((len(metrics), len(metrics)), np.nan)
    np.fill_diagonal(tau, 1.0)
    for r in correlations.itertuples(index=False):
        i, j = index[str(r.metric_a)], index[str(r.metric_b)]
        tau[i, j] = tau[j, i] = r.tau
    side = max(4.2, 1.6 + 0.62 * len(metrics))
    fig = new_figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(tau), cmap="RdBu", vmin=-1, vmax=1)
    ax.set_facecolor("#f0f0f0")  # undefined τ cells
    names = [wrap(m, 24) for m in metrics]
    ax.set_xticks(range(len(metrics)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(metrics)), names)
    for i in range(len(metrics)):
        for j in range(len(metrics)):
            value = tau[i, j]
            text = "—" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if not np.isnan(value) and abs(value) > 0.6 else "#222222")
    fig.colorbar(image, ax=ax, shrink=0.75, label="Kendall τ (agreement on 'better')")
    ax.set_title(plain(title) or "Metric concordance")
    return fig


# ------------------------------------------------------------------------------------------
# (g) training loss curves
# ------------------------------------------------------------------------------------------


@styled
def training_curves(training: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Train loss (thin line) and validation loss (line with dots) per fine-tuning run, one panel
    per target, one colour per condition."""
    runs = [r for r in training if r.get("curve")]
    if not runs:
        return None
    targets = list(dict.fromkeys(str(r.get("target")) for r in runs))
    colors = condition_colors(str(r.get("condition")) for r in runs)
    several_seeds = len({r.get("seed") for r in runs}) > 1
    fig, axes = panel_grid(len(targets), ncols=2, size=(5.2, 3.3))
    for ax, target in zip(axes, targets, strict=True):
        for run in (r for r in runs if str(r.get("target")) == target):
            curve = pd.DataFrame(run["curve"])
            if "step" not in curve.columns:
                continue
            color = colors[str(run.get("condition"))]
            name = plain(run.get("condition")) + (f" · seed {run.get('seed')}" if several_seeds else "")
            if "train_loss" in curve.columns:
                ax.plot(curve["step"], curve["train_loss"], color=color, linewidth=0.9, alpha=0.55)
            if "val_loss" in curve.columns:
                val = curve[curve["val_loss"].notna()]
                ax.plot(val["step"], val["val_loss"], color=color, linewidth=1.6, marker="o", markersize=3.5)
            ax.plot([], [], color=color, linewidth=1.6, label=name)  # one legend entry per run
        # line styles explained once, not per run
        ax.plot([], [], color="#777777", linewidth=0.9, alpha=0.7, label="train")
        ax.plot([], [], color="#777777", linewidth=1.6, marker="o", markersize=3.5, label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(f"Fine-tuning loss: {plain(target)}")
        ax.legend(loc="upper right", frameon=False)
    return fig
