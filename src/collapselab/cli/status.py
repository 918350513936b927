"""``collapselab status``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from collapselab.cli.common import console, load_run_spec, user_errors

STYLE = {"done": "green", "running": "cyan", "interrupted": "yellow", "missing": "dim"}


def status_command(run_dir: Path) -> None:
    with user_errors():
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
