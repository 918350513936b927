"""The comparison across a sweep's points (:mod:`collapselab.pipeline.multirun`):
``RUN_DIR/sweep/comparison.{csv,md,html}``.

Built from what the sweep wrote — ``sweep.json`` (axes and points), each point's
``experiment.yaml``, ``report/results.json`` and ``point.json``, read by
:func:`collapselab.pipeline.multirun.write_sweep_comparison` — so ``collapselab report RUN_DIR``
rebuilds it without recomputing anything.

One row per point × target × condition (× generation after the first), with the varied settings
as columns and the key metrics, each as its value and standard error from the point's
``results.json`` (:mod:`collapselab.report.results_json`: over the seeds when two or more differ,
else from the evaluation's interval; empty when neither is known — never a made-up 0):

* Experiment 1 — the primary endpoints (``stats.primary.collapse``, by base name: ``heaps``
  covers every setting of Heaps); when none of the run's metrics is one, every metric;
* Experiment 2 — ``mean_<endpoint>`` of the safety primary endpoints (``harm``: mean harm) and
  the attack success rate, per prompt kind;
* Experiment 3 — the preference endpoints results.json has (``SPB``, ``PSB``).

Per point, how its stages were shared: ``stages`` in its graph, ``shared`` with an earlier point
of the sweep (the same key: run once, by the first point that needs it), ``ran`` and ``reused``
(done already) when the point last ran. A point that has not finished has a row in the points
table and no metric rows. Every cell of the HTML page is escaped (settings and condition names
are user text).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from collapselab.report.format import MISSING, Table, fmt_num, metric_header
from collapselab.report.markdown import escape as md_escape
from collapselab.report.markdown import table as md_table
from collapselab.report.results_json import FILTER

EXPERIMENTS = ("collapse", "safety", "preference")
#: Experiment 2's headline next to its primary endpoints: the attack success rate
SAFETY_HEADLINE = ("attack_success_rate",)
STDERR_NOTE = ("± is the standard error from each point's results.json: over the seeds when two or more seeds "
               "differ, else from the evaluation's interval (normal approximation); no ± when neither is known.")
SHARING_NOTE = ("stages: in the point's graph; shared: also in an earlier point's graph (the same key, so "
                "run once, by the earlier point); ran / reused: executed / found done when the point last ran.")


@dataclass(frozen=True)
class MetricColumn:
    """A compared metric: its results.json key, its name, its experiment and better direction."""

    key: str
    name: str
    experiment: str
    higher: bool | None


@dataclass
class Comparison:
    """Everything the three renderings show."""

    title: str
    config: str
    fixed: list[str]
    axes: list[str]
    points: list[dict[str, Any]]  # index, name, settings, stages, shared, ran, reused, finished, report
    metrics: list[MetricColumn] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # point, settings, target, condition, generation, values
    notes: list[str] = field(default_factory=list)

    @property
    def generations(self) -> bool:
        return any(r["generation"] for r in self.rows)


def experiment_of(name: str) -> str:
    """``safety/…`` → safety, ``preference/…`` → preference, ``samples/…`` → samples, else collapse."""
    head = name.split("/", 1)[0] if "/" in name else ""
    return head if head in ("safety", "preference", "samples") else "collapse"


def is_key_metric(name: str, primary: dict[str, tuple[str, ...]]) -> bool:
    """Whether a results.json metric is one the comparison shows (see the module docstring)."""
    experiment = experiment_of(name)
    if experiment == "safety":
        metric = name.removeprefix("safety/").split("[", 1)[0]
        return metric in SAFETY_HEADLINE or metric in {f"mean_{e}" for e in primary.get("safety", ())}
    if experiment == "preference":
        return name.removeprefix("preference/") in primary.get("preference", ())
    if experiment == "collapse":
        wanted = primary.get("collapse", ())
        return name in wanted or name.split("[", 1)[0] in wanted
    return False


@dataclass(frozen=True)
class PointInput:
    """What the comparison reads of one point: its row of ``sweep.json``, its ``point.json``
    (None until it finished), its report's ``results.json`` (None until written) and its primary
    endpoints (``stats.primary_endpoints`` of its config)."""

    row: dict[str, Any]
    record: dict[str, Any] | None
    results: dict[str, Any] | None
    primary: dict[str, tuple[str, ...]]


def build_comparison(manifest: dict[str, Any], inputs: list[PointInput]) -> Comparison:
    """The comparison of a sweep (``sweep.json``'s content) from its points' files."""
    axes = [str(a["key"]) for a in manifest.get("axes") or []]
    out = Comparison(title=str(manifest.get("name") or ""), config=str(manifest.get("config") or ""),
                     fixed=list(manifest.get("fixed") or []), axes=axes, points=[])
    docs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    selected: dict[str, MetricColumn] = {}
    every: dict[str, MetricColumn] = {}
    for item in inputs:
        row, record, doc = item.row, item.record, item.results
        finished = record is not None and doc is not None
        point = {"index": row.get("index"), "name": str(row["name"]), "settings": dict(row.get("settings") or {}),
                 "stages": row.get("stages"), "shared": row.get("shared"),
                 "ran": record.get("ran") if record else None, "reused": record.get("already_done") if record else None,
                 "finished": finished, "report": f"{row['name']}/report/report.html" if finished else None}
        out.points.append(point)
        if not finished:
            continue
        docs.append((point, doc))
        names = (doc.get("collapselab") or {}).get("metric_names") or {}
        higher = doc.get("higher_is_better") or {}
        for task, results in (doc.get("results") or {}).items():
            for full in results:
                if not full.endswith(f",{FILTER}") or full.endswith(f"_stderr,{FILTER}"):
                    continue
                key = full.removesuffix(f",{FILTER}")
                name = str(names.get(key, key))
                column = MetricColumn(key, name, experiment_of(name), (higher.get(task) or {}).get(key))
                every.setdefault(key, column)
                if is_key_metric(name, item.primary):
                    selected.setdefault(key, column)
    if any(c.experiment == "collapse" for c in every.values()) and not any(
            c.experiment == "collapse" for c in selected.values()):
        selected.update({k: c for k, c in every.items() if c.experiment == "collapse"})
        out.notes.append("None of Experiment 1's metrics is a primary endpoint (stats.primary.collapse): every "
                         "Experiment 1 metric is shown.")
    out.metrics = sorted(selected.values(), key=lambda c: EXPERIMENTS.index(c.experiment))
    for point, doc in docs:
        configs = doc.get("configs") or {}
        for task, results in (doc.get("results") or {}).items():
            meta = (configs.get(task) or {}).get("metadata") or {}
            values = {c.key: (results.get(f"{c.key},{FILTER}"), results.get(f"{c.key}_stderr,{FILTER}"))
                      for c in out.metrics}
            out.rows.append({"point": point["name"], "settings": point["settings"],
                             "target": meta.get("target", ""), "condition": meta.get("condition", task),
                             "generation": int(meta.get("generation") or 0), "values": values})
    unfinished = [p["name"] for p in out.points if not p["finished"]]
    if unfinished:
        out.notes.append(f"Not finished (no results yet): {', '.join(unfinished)}.")
    return out


def comparison_frame(c: Comparison) -> pd.DataFrame:
    """The CSV's table: numbers as numbers, a ``<metric>_stderr`` column after each metric."""
    points = {p["name"]: p for p in c.points}
    records = []
    for r in c.rows:
        p = points[r["point"]]
        record: dict[str, Any] = {"point": r["point"], **{a: r["settings"].get(a) for a in c.axes},
                                  "target": r["target"], "condition": r["condition"]}
        if c.generations:
            record["generation"] = r["generation"]
        for m in c.metrics:
            value, stderr = r["values"][m.key]
            record[m.name] = value
            record[f"{m.name}_stderr"] = stderr
        record.update({k: p[k] for k in ("stages", "shared", "ran", "reused")})
        records.append(record)
    columns = ["point", *c.axes, "target", "condition", *(["generation"] if c.generations else []),
               *(n for m in c.metrics for n in (m.name, f"{m.name}_stderr")), "stages", "shared", "ran", "reused"]
    return pd.DataFrame(records, columns=columns)


def _pm(value: Any, stderr: Any) -> str:
    if value is None:
        return MISSING
    return fmt_num(value) if stderr is None else f"{fmt_num(value)} ± {fmt_num(stderr)}"


def _count(value: Any) -> str:
    return MISSING if value is None else str(value)


def points_table(c: Comparison) -> Table:
    rows = [{"#": _count(p["index"]), "point": p["name"], **{a: str(p["settings"].get(a, "")) for a in c.axes},
             "stages": _count(p["stages"]), "shared": _count(p["shared"]), "ran": _count(p["ran"]),
             "reused": _count(p["reused"]), "state": "finished" if p["finished"] else "not finished"}
            for p in c.points]
    return Table(pd.DataFrame(rows), caption=SHARING_NOTE, numeric={"#", "stages", "shared", "ran", "reused"})


def results_table(c: Comparison) -> Table:
    headers = {m.key: metric_header(m.name, m.higher) for m in c.metrics}
    rows = []
    for r in c.rows:
        row = {"point": r["point"], **{a: str(r["settings"].get(a, "")) for a in c.axes},
               "target": str(r["target"]), "condition": str(r["condition"])}
        if c.generations:
            row["generation"] = str(r["generation"])
        row.update({headers[m.key]: _pm(*r["values"][m.key]) for m in c.metrics})
        rows.append(row)
    columns = ["point", *c.axes, "target", "condition", *(["generation"] if c.generations else []), *headers.values()]
    return Table(pd.DataFrame(rows, columns=columns), caption=STDERR_NOTE, numeric=set(headers.values()))


def _summary(c: Comparison) -> list[str]:
    return [f"config: {c.config}", f"fixed overrides: {' '.join(c.fixed) or 'none'}",
            f"swept: {', '.join(c.axes)}", f"{len(c.points)} points, {len(c.rows)} rows"]


def render_markdown(c: Comparison) -> str:
    lines = [f"# Sweep comparison: {md_escape(c.title)}", ""]
    lines += [f"- {md_escape(s)}" for s in _summary(c)] + [""]
    lines += ["## Points", "", md_table(points_table(c)), "## Results", "", md_table(results_table(c))]
    lines += [md_escape(n) + "\n" for n in c.notes]
    return "\n".join(lines).rstrip() + "\n"


def _html_table(t: Table, links: dict[str, str] | None = None) -> str:
    """A :class:`Table` as HTML, every cell escaped; ``links``: point name → its report's path."""
    e = html.escape
    head = "".join(f'<th class="{"num" if c in t.numeric else "txt"}" scope="col">{e(c)}</th>' for c in t.columns)
    body = []
    for row in t.rows():
        cells = []
        for column, cell in zip(t.columns, row, strict=True):
            text = e(cell.text)
            if links and column == "point" and cell.text in links:
                text = f'<a href="{e(quote(links[cell.text]), quote=True)}">{text}</a>'
            cells.append(f'<td class="{"num" if column in t.numeric else "txt"}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{e(t.caption)}</p>' if t.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{caption}"


CSS = ("body{font:15px/1.5 system-ui,sans-serif;margin:2rem;color:#1f2328}table{border-collapse:collapse;"
       "font-size:.85rem;margin:.6rem 0}th,td{padding:.3rem .6rem;border-bottom:1px solid #eaeef2;text-align:left;"
       "vertical-align:top}th{background:#f6f8fa}.num{text-align:right;font-variant-numeric:tabular-nums}"
       ".caption,.meta{color:#59636e;font-size:.85rem}a{color:#0b5cad}")


def render_html(c: Comparison) -> str:
    """A self-contained page (inline CSS, no script), every text escaped."""
    e = html.escape
    links = {p["name"]: p["report"] for p in c.points if p["report"]}
    meta = "".join(f"<li>{e(s)}</li>" for s in _summary(c))
    notes = "".join(f"<p class=\"meta\">{e(n)}</p>" for n in c.notes)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sweep comparison: "
            f"{e(c.title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>Sweep comparison: {e(c.title)}</h1><ul class=\"meta\">{meta}</ul>"
            f"<h2>Points</h2>{_html_table(points_table(c), links)}"
            f"<h2>Results</h2>{_html_table(results_table(c), links)}{notes}</main></body></html>\n")


def write_comparison(c: Comparison, folder: str | Path) -> dict[str, Path]:
    """Write ``comparison.csv``, ``.md`` and ``.html`` (the HTML last) into ``folder``; returns
    them by name."""
    from collapselab.store.atomic import write_text

    folder = Path(folder)
    return {
        "comparison.csv": write_text(folder / "comparison.csv", comparison_frame(c).to_csv(index=False)),
        "comparison.md": write_text(folder / "comparison.md", render_markdown(c)),
        "comparison.html": write_text(folder / "comparison.html", render_html(c)),
    }
