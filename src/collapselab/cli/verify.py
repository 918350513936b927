"""``collapselab verify``."""

from __future__ import annotations

import sys
from pathlib import Path

from collapselab.cli.common import console, err_console, user_errors


def verify_command(run_dir: Path) -> None:
    with user_errors():
        from rich.progress import track

        from collapselab.errors import DataError
        from collapselab.store.run import RunStore

        store = RunStore(run_dir)
        if not (run_dir / "stages").is_dir():
            raise DataError(f"{run_dir}: not a run folder (no stages/ folder)")
        refs = store.completed()
        broken: dict[str, list[str]] = {}
        unverified: list[str] = []
        for ref in track(refs, description="checking", console=console, transient=True):
            problems = store.check(ref, checksums=True)
            if problems is None:
                unverified.append(f"{ref.kind}/{ref.name}")
            elif problems:
                broken[f"{ref.kind}/{ref.name}"] = problems
        ok = len(refs) - len(broken) - len(unverified)
        console.print(f"{len(refs)} completed stages: {ok} intact, {len(broken)} changed, "
                      f"{len(unverified)} without checksums")
        if unverified:
            console.print(f"[yellow]not verified[/] (written before collapselab recorded checksums): "
                          f"{', '.join(unverified)}", soft_wrap=True)
        for label, problems in broken.items():
            err_console.print(f"[bold red]changed[/] {label}:", soft_wrap=True)
            for line in problems:
                err_console.print(f"  {line}", soft_wrap=True, highlight=False)
        if broken:
            err_console.print("To recompute a changed stage, delete its folder and run again.")
            sys.exit(1)
