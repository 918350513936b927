"""``collapselab run CONFIG -m key=A,B …``: a sweep into one run folder (:mod:`collapselab.pipeline.multirun`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from collapselab.cli.common import console, default_run_dir, offline_defaults, user_errors
from collapselab.pipeline.multirun import SweepProgress


def multirun_command(config: Path, overrides: list[str] | None, run_dir: Path | None) -> None:
    offline_defaults()
    with user_errors():
        from collapselab.cli.noise import warnings_to_log
        from collapselab.cli.run import check_run_dir
        from collapselab.pipeline.multirun import expand, run_sweep

        sweep = expand(config, overrides or [])  # every point validated before anything runs
        run_dir = run_dir or default_run_dir(sweep.name)
        check_run_dir(run_dir)
        n = len(sweep.points)
        console.print(f"[bold]{escape(sweep.name)}[/]: sweep of {n} points over "
                      f"{escape(', '.join(a.key for a in sweep.axes))}; {sweep.stage_count} distinct stages → "
                      f"{escape(str(run_dir))}")
        with warnings_to_log(run_dir / "logs" / "warnings.log") as log:
            results = run_sweep(sweep, run_dir, CliSweepProgress(run_dir, sweep.name))
        ran = sum(len(r.ran) for r in results)
        skipped = sum(r.skipped for r in results)
        console.print(f"[green]done[/]: {n} points, ran {ran} stages ({skipped} points were already done). "
                      f"Run folder: {escape(str(run_dir))}")
        if any(r.unverified for r in results):
            console.print("[yellow]note[/]: some completed stages were written before collapselab recorded "
                          "checksums, so their files could not be checked (`collapselab verify` lists them)")
        if log.is_file() and log.stat().st_size:
            console.print(f"[dim]library warnings: {log}[/]")
        console.print(f"comparison: [bold]{escape(str(run_dir / 'sweep' / 'comparison.html'))}[/]")


class CliSweepProgress(SweepProgress):
    """Which point of how many, then the executor's stage progress for that point."""

    def __init__(self, run_dir: Path, name: str = "") -> None:
        self.run_dir, self.name = run_dir, name

    @contextmanager
    def point_started(self, point, total: int):
        from collapselab.cli.progress import stage_progress
        from collapselab.tracking import track_run

        console.print(f"[bold]point {point.index}/{total}[/] {escape(point.name)} ({escape(point.label())}): "
                      f"{len(point.stages)} stages, {point.shared} shared with earlier points")
        folder = point.folder(self.run_dir)
        # with tracking: a tracked run per point (its stages, shared ones too, and its final metrics),
        # all in the sweep's project (a point's spec is named after the point)
        tracked = point.spec.tracking
        spec = point.spec.model_copy(update={"tracking": tracked.model_copy(
            update={"project": tracked.project or self.name or point.spec.name})})
        with stage_progress(len(point.stages), console) as progress, \
                track_run(spec, self.run_dir, name=point.name, ledger_dir=folder / "tracking",
                          notify=lambda m: console.print(f"tracking: {m}", markup=False)) as tracking:
            yield tracking.progress(progress)
            if (folder / "report" / "results.json").is_file():  # the point's report is written by now
                tracking.log_results(folder / "report" / "results.json")

    def point_finished(self, result, total: int) -> None:
        point = result.point
        if result.skipped:
            console.print(f"[bold]point {point.index}/{total}[/] {escape(point.name)}: [dim]done already[/]")
        else:
            report = point.folder(self.run_dir) / "report" / "report.html"
            console.print(f"  ran {len(result.ran)} stages, {len(result.already_done)} were already done "
                          f"({result.seconds:.0f} s); report: {escape(str(report))}")
