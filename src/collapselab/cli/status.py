"""``collapselab status``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from collapselab.cli.common import console, load_run_spec, user_errors

STYLE = {"done": "green", "running": "cyan", "interrupted": "yellow", "missing": "dim"}


def status_command(run_dir: Path, times: bool = False) -> None:
    with user_errors():
        if times:
            _times(run_dir)
            return
        from collapselab.pipeline.multirun import read_manifest

        if read_manifest(run_dir) is not None:
            _sweep(run_dir)
            return
        from collapselab.executors import stage_status
        from collapselab.pipeline.kinds import stage_kind

        spec = load_run_spec(run_dir)
        rows = stage_status(spec, run_dir)
        table = Table(title=f"{spec.name} — {run_dir}")
        table.add_column("stage")
        table.add_column("experiment")
        table.add_column("state")
        table.add_column("folder", overflow="fold")
        for stage, state in rows:
            table.add_row(stage.label, stage_kind(stage.kind).experiment, f"[{STYLE[state]}]{state}[/]",
                          f"stages/{stage.kind}/{stage.ref.dirname}")
        console.print(table)
        counts = {s: sum(1 for _, st in rows if st == s) for s in STYLE}
        console.print(" · ".join(f"{n} {s}" for s, n in counts.items() if n))


def _sweep(run_dir: Path) -> None:
    """A sweep's folder: one row per point (its stages' states, finished or not), then every
    stage of the sweep once, with the points that use it."""
    from rich.markup import escape

    from collapselab.pipeline.kinds import stage_kind
    from collapselab.pipeline.multirun import sweep_status

    points = sweep_status(run_dir)
    table = Table(title=f"sweep — {escape(str(run_dir))} ({len(points)} points)")
    for column in ("#", "point", "settings", *STYLE, "state"):
        table.add_column(column, justify="right" if column in (*STYLE, "#") else "left")
    for p in points:
        counts = {s: sum(1 for _, st in p.stages if st == s) for s in STYLE}
        table.add_row(str(p.point.index), escape(p.point.name), escape(p.point.label()),
                      *(f"[{STYLE[s]}]{n}[/]" if n else "0" for s, n in counts.items()),
                      "[green]finished[/]" if p.finished else "[yellow]not finished[/]")
    console.print(table)
    stages: dict[tuple[str, str], tuple[object, str, list[int]]] = {}
    for p in points:
        for stage, state in p.stages:
            stages.setdefault((stage.kind, stage.ref.dirname), (stage, state, []))[2].append(p.point.index)
    detail = Table(title="stages (each once; points: the points whose graph has it)")
    for column in ("stage", "experiment", "state", "points", "folder"):
        detail.add_column(column, overflow="fold" if column == "folder" else None)
    for stage, state, used in stages.values():
        detail.add_row(stage.label, stage_kind(stage.kind).experiment, f"[{STYLE[state]}]{state}[/]",
                       ",".join(map(str, used)), f"stages/{stage.kind}/{stage.ref.dirname}")
    console.print(detail)
    counts = {s: sum(1 for _, st, _ in stages.values() if st == s) for s in STYLE}
    console.print(f"{len(stages)} distinct stages: " + " · ".join(f"{n} {s}" for s, n in counts.items() if n))
    console.print(f"comparison: {run_dir / 'sweep' / 'comparison.html'}", highlight=False)


def _times(run_dir: Path) -> None:
    """Time per stage kind (``--times``): where the run spent its time."""
    from collapselab.pipeline.profile import profile, stage_seconds, wall_clock

    spec = load_run_spec(run_dir)
    stages = stage_seconds(spec, run_dir)
    table = Table(title=f"{spec.name} — time per stage kind (runner seconds)")
    for column in ("kind", "planned", "done", "seconds", "share", "mean s", "max s"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in profile(stages).itertuples(index=False):
        table.add_row(row.kind, str(row.planned), str(row.done), _secs(row.seconds),
                      "—" if row.share != row.share else f"{row.share:.1%}", _secs(row.mean), _secs(row.max))
    console.print(table)
    start, end = wall_clock(stages)
    if start:
        console.print(f"first stage started {start} · last stage finished {end}")


def _secs(value: float) -> str:
    return "—" if value != value else f"{value:,.1f}"
