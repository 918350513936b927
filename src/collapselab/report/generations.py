"""Every experiment's metrics across recursive generations (``generations.count > 1``).

The model fine-tuned in generation g writes the training data of generation g + 1 (see
:class:`collapselab.config.spec.GenerationsSpec`); the question is how each metric moves with g.
This module reads the tables the report already has — nothing is recomputed — and reshapes them
into one long frame per experiment (:func:`generation_frames`)::

    generation, target, condition, seed, <experiment's keys>, metric, value, ci_low, ci_high,
    interval, n

* Experiment 1 (``collapse``): each metric's primary statistic on the condition sets with its
  bootstrap interval (:mod:`collapselab.metrics.tables`); keys: set_name, statistic,
  higher_is_better.
* Experiment 2 (``safety``): mean_harm, mean_quality (bootstrap intervals), attack_success_rate,
  danger_zone, refusal_rate (Wilson score intervals where the summary has them, else bootstrap —
  as the safety tables show them) for plain and jailbreak prompts over all categories; key:
  prompt_kind.
* Experiment 3 (``preference``): SPB and PSB per judge with their bootstrap intervals; keys:
  judge, own_source.

``interval`` names the interval in ``ci_low`` / ``ci_high``. A table without a ``generation``
column (a run from before recursion) or a missing generation counts as generation 0.

The report shows a section "Across generations" only for experiments with more than one
generation: per experiment one figure (:func:`generation_lines`; one panel per metric, x = the
generation, one line per condition) and one table (:func:`generation_table`; metric × condition
× generation). With a single generation every plot function returns ``None`` and
:func:`generation_sections` is empty, so a one-round report is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from collapselab.errors import DataError
from collapselab.report.figures import HUMAN_COLOR, condition_colors, metric_title, panel_grid, plain, styled
from collapselab.report.format import (
    MISSING,
    Table,
    direction_of,
    fmt_ci,
    fmt_text,
    is_missing,
    metric_header,
    rate_ci,
)
from collapselab.report.labels import primary_rows

GENERATION = "generation"
#: the experiments, by the key used in file names (``generations_<key>.csv``) and anchors
EXPERIMENT_TITLES = {"collapse": "Experiment 1 — distribution collapse",
                     "safety": "Experiment 2 — safety",
                     "preference": "Experiment 3 — self-preference bias"}
#: Experiment 2's metrics across generations, as the safety tables head them (↓: lower is safer)
SAFETY_METRICS = {"mean_harm": "mean harm ↓", "mean_quality": "mean quality ↑",
                  "attack_success_rate": "attack success ↓", "danger_zone": "danger zone ↓",
                  "refusal_rate": "refusal rate"}
SAFETY_MEANS = ("mean_harm", "mean_quality")
SAFETY_PROMPT_KINDS = ("plain", "jailbreak")
PREFERENCE_METRICS = {"SPB": "self-preference bias (SPB)", "PSB": "pro-synthetic bias (PSB)"}
RUN_COLUMNS = ["generation", "target", "condition", "seed"]
VALUE_COLUMNS = ["metric", "value", "ci_low", "ci_high", "interval", "n"]
#: each experiment's columns between the run labels and the values
KEY_COLUMNS = {"collapse": ["set_name", "statistic", "higher_is_better"],
               "safety": ["prompt_kind"],
               "preference": ["judge", "own_source"]}
#: line styles of the targets when a run has several (colour stays the condition's)
TARGET_STYLES = ["-", "--", "-.", ":"]


# ------------------------------------------------------------------------------------------
# The frames
# ------------------------------------------------------------------------------------------


def generation_numbers(frame: pd.DataFrame, table: str) -> pd.Series:
    """The ``generation`` column as integers: absent or missing → 0 (the first round, and every run
    from before recursion). A value that is not a whole number is a :class:`DataError` naming the
    table and the row."""
    if GENERATION not in frame.columns:
        return pd.Series(0, index=frame.index, dtype="int64")
    raw = frame[GENERATION]
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = (numbers.isna() & ~raw.map(is_missing)) | (numbers.notna() & (numbers % 1 != 0)) | (numbers < 0)
    if bad.any():
        label = bad[bad].index[0]
        raise DataError(f"{table}: row {label}, field 'generation': {raw.loc[label]!r} is not a generation "
                        "number (a whole number ≥ 0)")
    return numbers.fillna(0).astype("int64")


def _column(frame: pd.DataFrame, name: str, default: Any = np.nan) -> pd.Series:
    """``frame[name]``, or a column of ``default`` where the table has none."""
    return frame[name] if name in frame.columns else pd.Series(default, index=frame.index, dtype=object)


def _runs(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The run label columns of ``frame`` (generation as an int)."""
    return pd.DataFrame({"generation": generation_numbers(frame, table), "target": _column(frame, "target"),
                         "condition": _column(frame, "condition"), "seed": _column(frame, "seed")},
                        index=frame.index)


def _empty(key: str) -> pd.DataFrame:
    return pd.DataFrame(columns=[*RUN_COLUMNS, *KEY_COLUMNS[key], *VALUE_COLUMNS])


def collapse_generations(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Experiment 1: every metric's primary statistic on every condition set, with its bootstrap
    interval, by generation (the sources' training data and the human references are left out:
    they are no model's output)."""
    rows = primary_rows(aggregates, ("condition",))
    if rows.empty:
        return _empty("collapse")
    out = _runs(rows, "aggregates")
    out["set_name"] = rows["set_name"]
    out["statistic"] = rows["statistic"]
    out["higher_is_better"] = rows["higher_is_better"]
    out["metric"] = rows["metric"]
    out["value"], out["ci_low"], out["ci_high"] = rows["value"], rows["ci_low"], rows["ci_high"]
    out["interval"] = "bootstrap"
    out["n"] = _column(rows, "n")
    return out.reset_index(drop=True)


def _safety_interval(row: Mapping[str, Any]) -> tuple[Any, Any, str]:
    """A mean's bootstrap interval; a rate's Wilson interval (not degenerate at 0 or 1, unlike a
    bootstrap) where the summary has one — the interval the safety tables show."""
    if row["metric"] not in SAFETY_MEANS and not (is_missing(row.get("wilson_low"))
                                                  or is_missing(row.get("wilson_high"))):
        return row["wilson_low"], row["wilson_high"], "wilson"
    return row.get("ci_low"), row.get("ci_high"), "bootstrap"


def safety_generations(summary: pd.DataFrame) -> pd.DataFrame:
    """Experiment 2: mean harm and quality, attack success, danger zone and refusal rate for plain
    and jailbreak prompts (all categories), by generation."""
    if summary.empty:
        return _empty("safety")
    rows = summary[(summary["category"] == "all") & summary["prompt_kind"].isin(SAFETY_PROMPT_KINDS)
                   & summary["metric"].isin(list(SAFETY_METRICS))]
    if rows.empty:
        return _empty("safety")
    out = _runs(rows, "safety summary")
    out["prompt_kind"] = rows["prompt_kind"]
    out["metric"] = rows["metric"]
    out["value"] = rows["value"]
    intervals = [_safety_interval(r) for r in rows.to_dict("records")]
    out["ci_low"] = [i[0] for i in intervals]
    out["ci_high"] = [i[1] for i in intervals]
    out["interval"] = [i[2] for i in intervals]
    out["n"] = _column(rows, "n")
    return out.reset_index(drop=True)


def preference_generations(bias: pd.DataFrame) -> pd.DataFrame:
    """Experiment 3: each judge's SPB and PSB with their bootstrap intervals, by generation (one
    row per judge and statistic)."""
    if bias.empty:
        return _empty("preference")
    parts = []
    for metric in PREFERENCE_METRICS:
        if metric not in bias.columns:
            continue
        out = _runs(bias, "preference bias")
        out["judge"] = _column(bias, "judge")
        out["own_source"] = _column(bias, "own_source")
        out["metric"] = metric
        out["value"] = bias[metric]
        out["ci_low"] = _column(bias, f"{metric}_ci_low")
        out["ci_high"] = _column(bias, f"{metric}_ci_high")
        out["interval"] = "bootstrap"
        out["n"] = _column(bias, "n_items")
        parts.append(out)
    if not parts:
        return _empty("preference")
    return pd.concat(parts, ignore_index=True)


def condition_sequence(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> list[str]:
    """The conditions of ``frame`` in the config's order, unknown ones after, in order of appearance."""
    seen = [fmt_text(c) for c in pd.unique(frame["condition"].astype(object))] if len(frame) else []
    return [*[c for c in conditions if c in seen], *[c for c in dict.fromkeys(seen) if c not in conditions]]


def sort_generations(frame: pd.DataFrame, panel_by: Sequence[str],
                     conditions: Sequence[str] = ()) -> pd.DataFrame:
    """Rows ordered by panel (first appearance), condition (config order), target (first
    appearance), seed and generation — the order of the tables and the legend."""
    if frame.empty:
        return frame
    keys = pd.DataFrame(index=frame.index)
    for i, column in enumerate(panel_by):
        labels = frame[column].astype(object).map(fmt_text)
        keys[f"p{i}"] = labels.map({v: k for k, v in enumerate(pd.unique(labels))})
    order = {c: i for i, c in enumerate(condition_sequence(frame, conditions))}
    keys["c"] = frame["condition"].astype(object).map(lambda c: order[fmt_text(c)])
    targets = frame["target"].astype(object).map(fmt_text)
    keys["t"] = targets.map({t: i for i, t in enumerate(pd.unique(targets))})
    keys["s"] = pd.to_numeric(frame["seed"], errors="coerce")
    keys["g"] = frame["generation"]
    position = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return frame.loc[position].reset_index(drop=True)


#: how each experiment's frame is split into panels (and table row groups)
PANEL_BY = {"collapse": ("metric",), "safety": ("prompt_kind", "metric"), "preference": ("metric",)}


def generation_frames(inputs) -> dict[str, pd.DataFrame]:
    """Per experiment the run has (``collapse``, ``safety``, ``preference``), its metrics by
    generation × condition × target × seed (see the module docstring for the columns), sorted;
    experiments without values are left out. One generation or several: see
    :func:`multi_generation_frames` for the ones the report shows."""
    frames: dict[str, pd.DataFrame] = {}
    if inputs.collapse and not inputs.aggregates.empty:
        frames["collapse"] = collapse_generations(inputs.aggregates)
    if inputs.safety is not None:
        frames["safety"] = safety_generations(inputs.safety.summary)
    if inputs.preference is not None:
        frames["preference"] = preference_generations(inputs.preference.bias)
    return {key: sort_generations(frame, PANEL_BY[key], inputs.conditions)
            for key, frame in frames.items() if not frame.empty}


def generation_count(frame: pd.DataFrame) -> int:
    """How many distinct generations ``frame`` has (0 for an empty frame)."""
    return 0 if frame.empty else int(frame["generation"].nunique())


def multi_generation_frames(inputs) -> dict[str, pd.DataFrame]:
    """The frames of :func:`generation_frames` with more than one generation: what the report shows
    and saves as ``generations_<experiment>`` (a one-round run has nothing new to show)."""
    return {key: frame for key, frame in generation_frames(inputs).items() if generation_count(frame) > 1}


# ------------------------------------------------------------------------------------------
# The figure
# ------------------------------------------------------------------------------------------


def human_references(aggregates: pd.DataFrame) -> dict[str, float]:
    """metric → the human references' primary value (Experiment 1's yardstick line)."""
    rows = primary_rows(aggregates, ("human",)) if not aggregates.empty else aggregates
    if rows.empty:
        return {}
    rows = rows[rows["value"].notna()].drop_duplicates("metric")
    return {str(m): float(v) for m, v in zip(rows["metric"], rows["value"], strict=True)}


def _bar(ax, x: float, value: Any, low: Any, high: Any, color: str, alpha: float, size: float) -> None:
    # a line from low to high plus the point (not errorbar(): a corpus-bootstrap interval can lie
    # entirely on one side of the full-set value)
    if not (is_missing(low) or is_missing(high)):
        ax.plot([x, x], [low, high], color=color, linewidth=1.3, alpha=alpha, solid_capstyle="butt")
    if not is_missing(value):
        ax.plot([x], [value], marker="o", markersize=size, color=color, alpha=alpha, linestyle="none")


Series = list[tuple[tuple[str, str], pd.DataFrame]]  # ((condition, target), its rows)


def _series(frame: pd.DataFrame, conditions: Sequence[str]) -> tuple[list[str], Series]:
    """One line per condition (and target, where the run has several), in the config's order."""
    labelled = frame.assign(_c=frame["condition"].astype(object).map(fmt_text),
                            _t=frame["target"].astype(object).map(fmt_text))
    series = list(labelled.groupby(["_c", "_t"], sort=False))
    order = {c: i for i, c in enumerate(condition_sequence(frame, conditions))}
    targets = list(pd.unique(labelled["_t"]))
    series.sort(key=lambda item: (order[item[0][0]], targets.index(item[0][1])))
    return targets, series


def _draw_series(ax, part: pd.DataFrame, x_shift: float, color: str, style: str, span: tuple[float, float],
                 gid: str) -> None:
    """One condition's line in one panel: with several seeds, faint per-seed points and intervals
    and a line through the seed means; with one seed, the values with their interval bars. A
    condition with a single generation in a run with several (vanilla, human: never retrained) also
    gets a dotted level line, so later generations read against it."""
    several_seeds = part["seed"].astype(object).map(fmt_text).nunique() > 1
    for r in part.itertuples(index=False):
        _bar(ax, r.generation + x_shift, r.value, r.ci_low, r.ci_high, color,
             alpha=0.3 if several_seeds else 1.0, size=3.5 if several_seeds else 5.0)
    means = part.groupby("generation", sort=True)["value"].mean()  # NaN (undefined) values skipped
    (line,) = ax.plot(means.index.to_numpy(dtype=float) + x_shift, means.to_numpy(dtype=float), color=color,
                      linestyle=style, linewidth=1.7, marker="o" if several_seeds else None, markersize=4.5)
    line.set_gid(gid)
    if len(means) == 1 and not np.isnan(means.iloc[0]):  # the figure always spans several generations
        ax.plot(list(span), [means.iloc[0]] * 2, color=color, linestyle=":", linewidth=1.0, alpha=0.8)


def _panel_keys(frame: pd.DataFrame, panel_by: Sequence[str]) -> list[tuple[str, ...]]:
    labels = frame[list(panel_by)].astype(object).map(fmt_text)
    return list(dict.fromkeys(labels.itertuples(index=False, name=None)))


def _panel_rows(frame: pd.DataFrame, panel_by: Sequence[str], key: tuple[str, ...]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, value in zip(panel_by, key, strict=True):
        mask &= frame[column].astype(object).map(fmt_text) == value
    return mask


@styled
def generation_lines(frame: pd.DataFrame, panel_by: Sequence[str] = ("metric",),
                     titles: Mapping[tuple[str, ...], str] | None = None, conditions: Sequence[str] = (),
                     references: Mapping[tuple[str, ...], float] | None = None, baseline: float | None = None,
                     ncols: int = 3, ylabel: str = "") -> Figure | None:
    """Small multiples: one panel per ``panel_by`` key (a metric), x = the generation, y = the
    value with its interval; one line per condition (line style: the target where there are
    several); several seeds: a line through the seed means over faint per-seed points. Optional
    ``references`` (panel key → value; dashed black, e.g. the human references) and ``baseline``
    (dashed grey, e.g. 0 = no bias). ``None`` when the frame has fewer than two generations."""
    if generation_count(frame) < 2:
        return None
    titles, references = dict(titles or {}), dict(references or {})
    panels = _panel_keys(frame, panel_by)
    generations = sorted(int(g) for g in pd.unique(frame["generation"]))
    span = (generations[0] - 0.3, generations[-1] + 0.3)
    targets, series = _series(frame, conditions)
    colors = condition_colors([*conditions, *condition_sequence(frame, conditions)])
    styles = {t: TARGET_STYLES[i % len(TARGET_STYLES)] for i, t in enumerate(targets)}
    step = min(0.08, 0.5 / max(len(series), 1))  # side by side, so the interval bars do not overlap
    fig, axes = panel_grid(len(panels), ncols=ncols)
    for ax, key in zip(axes, panels, strict=True):
        part = frame[_panel_rows(frame, panel_by, key)]
        for k, ((condition, target), rows) in enumerate(series):
            mine = rows.loc[rows.index.intersection(part.index)]
            if mine.empty:
                continue
            shift = (k - (len(series) - 1) / 2) * step
            _draw_series(ax, mine, shift, colors[condition], styles[target], span,
                         gid=f"{condition}|{target}")
        if not part["value"].notna().any():
            ax.text(0.5, 0.5, "undefined in every generation", transform=ax.transAxes, ha="center",
                    va="center", color="#777777", fontsize=8.5)
        if key in references:
            ax.axhline(references[key], color=HUMAN_COLOR, linestyle="--", linewidth=1)
        if baseline is not None:
            ax.axhline(baseline, color="#777777", linestyle="--", linewidth=1)
        ax.set_xticks(generations, [str(g) for g in generations])
        ax.set_xlim(*span)
        ax.set_xlabel("generation")
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_title(titles.get(key, plain(" · ".join(key))))
    _legend(fig, axes[0], series, colors, styles, several_targets=len(targets) > 1,
            has_references=any(k in references for k in panels))
    return fig


def _legend(fig: Figure, ax, series: Series, colors: Mapping[str, str], styles: Mapping[str, str],
            several_targets: bool, has_references: bool) -> None:
    """One legend for the whole figure, below the panels."""
    handles, names = [], []
    for condition, target in (key for key, _ in series):
        handles.append(ax.plot([], [], color=colors[condition], linestyle=styles[target], linewidth=1.7)[0])
        names.append(plain(condition + (f" · {target}" if several_targets else "")))
    if has_references:
        handles.append(ax.plot([], [], color=HUMAN_COLOR, linestyle="--", linewidth=1)[0])
        names.append("human references")
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 5), frameon=False)


def collapse_generations_plot(frame: pd.DataFrame, aggregates: pd.DataFrame | None = None,
                              conditions: Sequence[str] = ()) -> Figure | None:
    """Experiment 1: every metric's primary statistic against the generation (arrow: its better
    direction); dashed black: the human references, where ``aggregates`` has them."""
    if frame.empty:
        return None
    first = frame.drop_duplicates("metric")
    titles = {(fmt_text(m),): metric_title(str(m), direction_of(d))
              for m, d in zip(first["metric"], first["higher_is_better"], strict=True)}
    human = human_references(aggregates if aggregates is not None else pd.DataFrame())
    refs = {(m,): v for m, v in human.items()}
    return generation_lines(frame, ("metric",), titles, conditions, refs)


def safety_generations_plot(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """Experiment 2: one row of panels per prompt kind (plain, jailbreak), one panel per metric."""
    if frame.empty:
        return None
    metrics = [m for m in SAFETY_METRICS if (frame["metric"] == m).any()]
    kinds = [k for k in SAFETY_PROMPT_KINDS if (frame["prompt_kind"] == k).any()]
    # panels in the grid's order: a prompt kind per row, a metric per column
    order = {(k, m): i for i, (k, m) in enumerate((k, m) for k in kinds for m in metrics)}
    position = [order.get(km, len(order)) for km in zip(frame["prompt_kind"], frame["metric"], strict=True)]
    ordered = frame.assign(_o=position).sort_values("_o", kind="stable").drop(columns="_o")
    titles = {(k, m): f"{SAFETY_METRICS[m]} · {k}" for k in kinds for m in metrics}
    return generation_lines(ordered, ("prompt_kind", "metric"), titles, conditions,
                            ncols=max(len(metrics), 1))


def preference_generations_plot(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> Figure | None:
    """Experiment 3: SPB and PSB of each judge condition against the generation; dashed: 0 (no bias)."""
    if frame.empty:
        return None
    titles = {(m,): name for m, name in PREFERENCE_METRICS.items()}
    return generation_lines(frame, ("metric",), titles, conditions, baseline=0.0, ncols=2,
                            ylabel="bias (difference in S)")


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------


def _label_columns(frame: pd.DataFrame) -> list[str]:
    """condition, plus target / seed where they vary."""
    varying = [c for c in ("target", "seed") if frame[c].astype(object).map(fmt_text).nunique() > 1]
    return ["condition", *varying]


def generation_table(frame: pd.DataFrame, panel_by: Sequence[str],
                     row_by: Mapping[str, Callable[[Mapping[str, Any]], str]], conditions: Sequence[str] = (),
                     cell: Callable[[Mapping[str, Any]], str] | None = None, caption: str = "") -> Table:
    """Metric × condition (× target × seed, where they vary) rows, one column per generation
    ("gen 0", "gen 1", …): the value with its interval; "—" where a condition has no such
    generation (vanilla and human are trained only once). Rows are grouped by ``panel_by`` (as the
    figure's panels), conditions in the config's order; ``row_by`` maps each leading column's
    header to the function that writes it from a row; ``cell`` formats a row's value."""
    if frame.empty:
        return Table(pd.DataFrame(), "no values")
    cell = cell or (lambda r: fmt_ci(r["value"], r["ci_low"], r["ci_high"]))
    labels = _label_columns(frame)
    generations = sorted(int(g) for g in pd.unique(frame["generation"]))
    headers = {g: f"gen {g}" for g in generations}
    body: dict[tuple[str, ...], dict[str, str]] = {}
    for r in sort_generations(frame, panel_by, conditions).to_dict("records"):
        lead = {h: fn(r) for h, fn in row_by.items()}
        lead.update({c: fmt_text(r[c]) for c in labels})
        key = tuple(lead.values())
        line = body.setdefault(key, {**lead, **{h: MISSING for h in headers.values()}})
        line[headers[int(r["generation"])]] = cell(r)
    table = pd.DataFrame(list(body.values()), columns=[*row_by, *labels, *headers.values()])
    return Table(table, caption, set(), set(headers.values()))


def _safety_cell(r: Mapping[str, Any]) -> str:
    if r["metric"] in SAFETY_MEANS:
        return fmt_ci(r["value"], r["ci_low"], r["ci_high"])
    return rate_ci(r["value"], r["ci_low"], r["ci_high"])


def collapse_generation_table(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Experiment 1's metrics × conditions × generations."""
    def header(r: Mapping[str, Any]) -> str:
        return metric_header(str(r["metric"]), direction_of(r["higher_is_better"]))

    caption = ("Primary statistic of each metric per generation with its 95% bootstrap interval [low, high]. "
               "↑ higher is better, ↓ lower is better. —: the condition has no such generation.")
    return generation_table(frame, PANEL_BY["collapse"], {"metric": header}, conditions, caption=caption)


def safety_generation_table(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Experiment 2's metrics × prompt kinds × conditions × generations."""
    row_by = {"prompts": lambda r: fmt_text(r["prompt_kind"]),
              "metric": lambda r: SAFETY_METRICS.get(str(r["metric"]), str(r["metric"]))}
    caption = ("Per generation: mean harmfulness and quality (1–5) with bootstrap intervals; attack success, "
               "danger zone and refusal rate with Wilson score intervals [low, high]; all harm categories. "
               "—: the condition has no such generation.")
    return generation_table(frame, PANEL_BY["safety"], row_by, conditions, cell=_safety_cell, caption=caption)


def preference_generation_table(frame: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Experiment 3's SPB and PSB × judge conditions × generations."""
    caption = ("SPB = S(own family) − mean S(other synthetic sources); PSB = mean S(synthetic) − S(human), "
               "per judge condition and generation, with bootstrap intervals over items. —: no such judge.")
    return generation_table(frame, PANEL_BY["preference"], {"metric": lambda r: str(r["metric"])}, conditions,
                            caption=caption)


# ------------------------------------------------------------------------------------------
# The section
# ------------------------------------------------------------------------------------------


@dataclass
class GenerationSection:
    """One experiment across generations: its frame, its table and what its figure says."""

    key: str  # collapse / safety / preference: the anchor and the file name part
    title: str
    frame: pd.DataFrame
    table: Table
    caption: str  # the figure's caption


_TABLES = {"collapse": collapse_generation_table, "safety": safety_generation_table,
           "preference": preference_generation_table}
_CAPTIONS = {
    "collapse": "One panel per metric: its primary statistic per generation with its 95% bootstrap interval, "
                "one line per condition; dashed black: the human references.",
    "safety": "Per prompt kind (rows) and metric (columns), per generation, with bootstrap (means) or Wilson "
              "(rates) intervals; one line per condition.",
    "preference": "SPB and PSB of each judge condition per generation with bootstrap intervals; dashed: "
                  "no bias.",
}
_SEEDS_NOTE = (" With several seeds the line joins the seed means and the faint points are the single seeds. "
               "A dotted level line: a condition trained only once (vanilla, human), drawn across for "
               "comparison.")


def generation_sections(inputs) -> list[GenerationSection]:
    """The experiments with more than one generation, in the report's order (empty for a
    one-round run: the report then has no "Across generations" section)."""
    return [GenerationSection(key, EXPERIMENT_TITLES[key], frame, _TABLES[key](frame, inputs.conditions),
                              _CAPTIONS[key] + _SEEDS_NOTE)
            for key, frame in multi_generation_frames(inputs).items()]


def generation_plot(key: str, frame: pd.DataFrame, inputs) -> Figure | None:
    """The figure of one experiment's section (``key`` as in :data:`EXPERIMENT_TITLES`)."""
    if key == "collapse":
        return collapse_generations_plot(frame, inputs.aggregates, inputs.conditions)
    if key == "safety":
        return safety_generations_plot(frame, inputs.conditions)
    return preference_generations_plot(frame, inputs.conditions)
