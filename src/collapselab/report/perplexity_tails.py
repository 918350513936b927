"""The report section on the tails of human-text perplexity (issue 13; Shumailov et al. 2024).

Shumailov et al. (2024, Nature, "AI models collapse when trained on recursively generated data",
Fig. 1b–c) show collapse as the distribution of per-text perplexity of the *original* human test
data under each generation's model: it moves little in the bulk but grows a long tail. This section
draws that figure from the per-item rows the evaluate stages wrote — ``human_perplexity`` (or,
when the suite left it out, ``human_perplexity_tail``: the same values), one row per human
reference and condition set — and tabulates the quantiles. Nothing is recomputed from a model.

* Figure: one panel per condition (per target × condition when the run has several targets), one
  line per generation: the share of the references whose perplexity exceeds x (the complementary
  ECDF), both axes logarithmic — a tail is a line that stays up further right. Seeds are pooled
  (every seed's model scores the same references, so the pooled curve is the seeds' mean curve).
  The references under the base model (the human reference set's own rows, scored by the vanilla
  target) are the dashed black line.
* Table: one row per set (condition × generation, with target and seed where they vary): q50, q90,
  q99 and the share above the base model's q90 with their bootstrap intervals, from
  ``human_perplexity_tail``'s aggregates where the suite has it; otherwise the quantiles of the
  per-item values (linear interpolation, no interval).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from collapselab.report.figures import HUMAN_COLOR, panel_grid, plain, styled
from collapselab.report.format import MISSING, Table, fmt_ci, fmt_int, fmt_num, fmt_text, rate_ci
from collapselab.report.labels import condition_order, condition_text, run_columns, sort_runs
from collapselab.report.sections import ReportSection, SectionContext, SectionFigure, register_section

KEY = "perplexity_tails"
TITLE = "Tails of human-text perplexity"
PER_ITEM_METRIC = "human_perplexity"
TAIL_METRIC = "human_perplexity_tail"
#: the quantiles shown, by the tail metric's statistic names
QUANTILES = {"q50": 0.5, "q90": 0.9, "q99": 0.99}
SHARE = "share_above_base"


def _base(metric: Any) -> str:
    return str(metric).split("[", 1)[0]


def reference_rows(per_item: pd.DataFrame) -> pd.DataFrame:
    """The per-item rows of the human references' perplexity under each set's model: the
    ``human_perplexity`` rows, else those of one ``human_perplexity_tail`` variant (its per-item
    values are the same). Empty when the run has neither."""
    if per_item is None or per_item.empty or "metric" not in per_item.columns:
        return pd.DataFrame()
    rows = per_item[per_item["metric"] == PER_ITEM_METRIC]
    if rows.empty:
        tails = per_item[per_item["metric"].map(_base) == TAIL_METRIC]
        rows = tails[tails["metric"] == tails["metric"].iloc[0]] if not tails.empty else tails
    rows = rows[pd.to_numeric(rows["value"], errors="coerce").notna()].copy()
    rows["value"] = rows["value"].astype(float)
    if "generation" not in rows.columns:
        rows["generation"] = 0
    rows["generation"] = rows["generation"].fillna(0).astype(int)
    return rows.reset_index(drop=True)


def _panels(conditions: pd.DataFrame, order: list[str]) -> list[tuple[Any, str]]:
    """(target, condition) per panel: targets in order of appearance, conditions in config order."""
    ordered = sort_runs(conditions[["target", "condition"]].drop_duplicates()
                        if "target" in conditions.columns
                        else conditions[["condition"]].drop_duplicates().assign(target=None), order)
    return [(r.target, str(r.condition)) for r in ordered.itertuples(index=False)]


def survival(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The complementary ECDF as a step line: x = the sorted values, y = the share strictly above
    each (the last point, 0, is left out: it cannot be drawn on a log scale)."""
    x = np.sort(np.asarray(values, dtype=float))
    y = 1.0 - np.arange(1, x.size + 1) / x.size
    return x[:-1], y[:-1]


@styled
def tail_figure(rows: pd.DataFrame, conditions: list[str] | None = None) -> Figure | None:
    """One panel per (target ×) condition, one complementary-ECDF line per generation (seeds pooled),
    the references under the base model dashed black; None without condition rows."""
    sets = rows[rows["set_kind"] == "condition"] if "set_kind" in rows.columns else rows
    if sets.empty:
        return None
    order = conditions or condition_order(sets)
    panels = _panels(sets, order)
    several_targets = len({fmt_text(t) for t, _ in panels}) > 1
    human = rows[rows["set_kind"] == "human"] if "set_kind" in rows.columns else rows.iloc[:0]
    generations = sorted(sets["generation"].unique())
    cmap = matplotlib.colormaps["viridis"]
    colour = {g: cmap(0.85 * i / max(len(generations) - 1, 1)) for i, g in enumerate(generations)}
    fig, axes = panel_grid(len(panels), ncols=3, size=(3.9, 3.0))
    for ax, (target, condition) in zip(axes, panels, strict=True):
        part = sets[sets["condition"].astype(str) == condition]
        if several_targets:
            part = part[part["target"].map(fmt_text) == fmt_text(target)]
        for g in generations:
            values = part.loc[part["generation"] == g, "value"].to_numpy()
            if values.size > 1:
                ax.step(*survival(values), where="post", color=colour[g], linewidth=1.4, label=f"gen {g}")
        base = human
        if several_targets and "target" in human.columns and (human["target"].map(fmt_text) == fmt_text(target)).any():
            base = human[human["target"].map(fmt_text) == fmt_text(target)]
        if len(base) > 1:
            ax.step(*survival(base["value"].to_numpy()), where="post", color=HUMAN_COLOR, linestyle="--",
                    linewidth=1.1, label="base model")
        title = condition_text(condition)
        ax.set_title(plain(f"{fmt_text(target)} · {title}" if several_targets else title))
        ax.set_xscale("log")
        ax.set_yscale("log")
        # perplexities span less than a decade or two: ticks at 1-2-5, written plainly ("3", not "3×10⁰")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("perplexity of a human reference")
        ax.set_ylabel("share of references above")
        ax.legend(frameon=False, loc="lower left")
    return fig


def _quantile_cells(values: np.ndarray) -> dict[str, str]:
    return {name: fmt_num(float(np.quantile(values, p))) if values.size else MISSING for name, p in QUANTILES.items()}


def tail_table(rows: pd.DataFrame, aggregates: pd.DataFrame | None, conditions: list[str] | None = None) -> Table:
    """One row per condition set: generation, the varying run labels, the references scored (n),
    q50 / q90 / q99 and the share above the base model's q90 (with intervals from
    ``human_perplexity_tail``'s aggregates where the suite has them, else the per-item quantiles)."""
    sets = rows[rows["set_kind"] == "condition"] if "set_kind" in rows.columns else rows
    label_cols = [c for c in ("set_name", "target", "condition", "seed", "generation") if c in sets.columns]
    # generation first, then sort_runs' stable sort: target, condition, seed, generation
    runs = sets[label_cols].drop_duplicates("set_name").sort_values("generation", kind="stable")
    runs = sort_runs(runs, conditions or condition_order(sets))
    columns = [*run_columns(runs, ("target", "seed")), "generation"]
    tail = pd.DataFrame()
    if aggregates is not None and not aggregates.empty and "metric" in aggregates.columns:
        tail = aggregates[aggregates["metric"].map(_base) == TAIL_METRIC]
        # several variants: the default one (its share is above the base model's q90, as headed)
        if (tail["metric"] == TAIL_METRIC).any():
            tail = tail[tail["metric"] == TAIL_METRIC]
    out = []
    from_aggregates = False
    for run in runs.itertuples(index=False):
        r = run._asdict()
        values = sets.loc[sets["set_name"] == r["set_name"], "value"].to_numpy()
        row = {c: condition_text(r[c]) if c == "condition" else fmt_text(r[c]) for c in columns}
        row["references"] = fmt_int(values.size)
        mine = tail[tail["set_name"] == r["set_name"]] if not tail.empty else tail
        if not mine.empty:
            from_aggregates = True
            stats = mine.drop_duplicates("statistic").set_index("statistic")
            for name in QUANTILES:
                row[name] = (fmt_ci(stats.at[name, "value"], stats.at[name, "ci_low"], stats.at[name, "ci_high"])
                             if name in stats.index else MISSING)
            row["above base q90"] = (rate_ci(stats.at[SHARE, "value"], stats.at[SHARE, "ci_low"],
                                             stats.at[SHARE, "ci_high"]) if SHARE in stats.index else MISSING)
        else:
            row.update(_quantile_cells(values))
            row["above base q90"] = MISSING
        out.append(row)
    frame = pd.DataFrame(out)
    if not frame.empty and (frame["above base q90"] == MISSING).all():
        frame = frame.drop(columns="above base q90")
    caption = ("Perplexity of the human references under each set's model: quantiles over the references"
               + (" with bootstrap intervals (human_perplexity_tail); \"above base q90\": the share of "
                  "references above the base model's 90th percentile (0.10 for the base model itself)"
                  if from_aggregates else " (linear interpolation; add human_perplexity_tail to the suite for "
                  "intervals)") + ".")
    numeric = {c for c in frame.columns if c not in columns}
    return Table(frame, caption=caption, numeric=numeric)


def build(ctx: SectionContext) -> ReportSection | None:
    """The section, or None when the run has no per-item human-text perplexity of a condition set."""
    inputs = ctx.inputs
    rows = reference_rows(getattr(inputs, "per_item", None))
    if rows.empty or ("set_kind" in rows.columns and not (rows["set_kind"] == "condition").any()):
        return None
    conditions = [str(c) for c in getattr(inputs, "conditions", None) or []] or None
    aggregates = getattr(inputs, "aggregates", None)
    return ReportSection(
        KEY, TITLE,
        intro="Each model scores the same human test references. Shumailov et al. (2024) found that recursive "
              "training leaves the bulk of this distribution in place while a long tail of human texts grows "
              "that the model finds very unlikely: the model forgets the rare parts of the human distribution. "
              "The mean (human_perplexity) hides that tail; these curves and quantiles show it.",
        tables=[tail_table(rows, aggregates, conditions)],
        figures=[SectionFigure("perplexity_tails", "Human-text perplexity per generation",
                               "Share of the human references whose perplexity under the model exceeds x, "
                               "one line per generation (seeds pooled), both axes logarithmic; dashed black: "
                               "the base model. A line further right at the bottom is a heavier tail.",
                               lambda: tail_figure(rows, conditions))])


register_section(KEY, TITLE, build)
