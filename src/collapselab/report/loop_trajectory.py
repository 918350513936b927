"""The report section "Trajectory of the training data" (issue 13): what the ``trajectory`` stage
(:mod:`collapselab.loop.trajectory`) measured on each generation's training set, averaged over
seeds, with the closed form of the toy ground truth next to it where the run has one. It reads
``trajectory.parquet`` and recomputes nothing."""

from __future__ import annotations

from typing import Any

import pandas as pd

from collapselab.report.figures import condition_colors, panel_grid, plain, styled
from collapselab.report.format import Table, fmt_int, fmt_num
from collapselab.report.sections import ReportSection, SectionContext, SectionFigure, register_section

#: the table's columns: (trajectory column, header)
TABLE_COLUMNS = (("examples", "examples"), ("types", "types"), ("expected_types", "types (closed form)"),
                 ("gini_simpson", "Gini–Simpson"), ("rare_tail_coverage", "rare-tail coverage"),
                 ("tv_from_generation0", "TV from gen 0"), ("human_share", "human share"),
                 ("sq_error", "‖p̂ − p‖²"), ("expected_sq_error", "‖p̂ − p‖² (closed form)"))


def mean_over_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, condition, generation): the seeds' mean of every measure, and ``seeds``."""
    numeric = [c for c in frame.columns if c not in ("target", "condition", "seed", "generation")]
    grouped = frame.groupby(["target", "condition", "generation"], sort=False)
    out = grouped[numeric].mean().reset_index()
    out["seeds"] = grouped["seed"].nunique().to_numpy()
    return out


def trajectory_table(means: pd.DataFrame) -> Table:
    """The seeds' means per target, condition and generation (closed-form columns only when present)."""
    columns = [(c, h) for c, h in TABLE_COLUMNS if c in means.columns and means[c].notna().any()]
    body = []
    for _, row in means.iterrows():
        item: dict[str, Any] = {"target": str(row["target"]), "condition": str(row["condition"]),
                                "generation": fmt_int(row["generation"]), "seeds": fmt_int(row["seeds"])}
        item.update({header: fmt_num(row[c]) for c, header in columns})
        body.append(item)
    return Table(pd.DataFrame(body),
                 caption="Means over seeds of each generation's training set. Types: distinct tokens; "
                         "Gini–Simpson: 1 − Σ q², q the unigram distribution; rare-tail coverage: share of the "
                         "human train answers' once-seen types present; TV: total-variation distance from the "
                         "chain's generation-0 data. Closed form: exact expectation for a toy (categorical) model "
                         "refitted on its own samples.",
                 numeric={"generation", "seeds", *(h for _, h in columns)})


@styled
def trajectory_figure(means: pd.DataFrame) -> Any:
    """Distinct types and TV distance from generation 0 against generation, one line per (target,
    condition); the closed-form expectation of the types dashed where present."""
    if means.empty:
        return None
    lines = list(dict.fromkeys(zip(means["target"], means["condition"], strict=True)))
    several_targets = len({t for t, _ in lines}) > 1
    colors = condition_colors(f"{t} · {c}" if several_targets else c for t, c in lines)
    fig, (types_ax, tv_ax) = panel_grid(2, ncols=2, size=(4.2, 3.0))
    for target, condition in lines:
        part = means[(means["target"] == target) & (means["condition"] == condition)].sort_values("generation")
        name = f"{target} · {condition}" if several_targets else condition
        color = colors[name]
        types_ax.plot(part["generation"], part["types"], color=color, marker="o", markersize=3.5, label=plain(name))
        if "expected_types" in part.columns and part["expected_types"].notna().any():
            types_ax.plot(part["generation"], part["expected_types"], color=color, linestyle="--", linewidth=1.2,
                          label=plain(f"{name} (closed form)"))
        tv_ax.plot(part["generation"], part["tv_from_generation0"], color=color, marker="o", markersize=3.5)
    types_ax.set_title("Distinct types in the training data")
    types_ax.set_xlabel("generation")
    types_ax.set_ylabel("types (mean over seeds)")
    types_ax.legend(loc="best", frameon=False)
    tv_ax.set_title("Total variation from generation 0")
    tv_ax.set_xlabel("generation")
    tv_ax.set_ylabel("TV distance (mean over seeds)")
    for ax in (types_ax, tv_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def build(ctx: SectionContext) -> ReportSection | None:
    done = ctx.done("trajectory")
    if not done:
        return None
    _, folder = done[0]
    frame = pd.read_parquet(folder / "trajectory.parquet")
    if frame.empty:
        return None
    means = mean_over_seeds(frame)
    has_closed = "expected_types" in frame.columns and frame["expected_types"].notna().any()
    return ReportSection(
        "trajectory", "Trajectory of the training data",
        intro="How each chain's training data changes from generation to generation: vocabulary, "
              "concentration, the human rare tail and the distance from generation 0. Replacing the data with "
              "the previous model's samples loses types for good (Shumailov et al. 2024); accumulating keeps them "
              "(Gerstgrasser et al. 2024)."
              + (" Dashed lines: the exact expectation for the toy model." if has_closed else ""),
        tables=[trajectory_table(means)],
        figures=[SectionFigure("trajectory", "Trajectory of the training data",
                               "Distinct types (left) and total-variation distance from generation 0 (right), "
                               "means over seeds.", lambda: trajectory_figure(means))])


register_section("trajectory", "Trajectory of the training data", build)
