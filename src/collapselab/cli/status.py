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
