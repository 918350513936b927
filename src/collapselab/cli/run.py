"""``collapselab run``."""

from __future__ import annotations

from pathlib import Path

from collapselab.cli.common import console, default_run_dir, load, offline_defaults, user_errors


def check_run_dir(run_dir: Path) -> None:
    """A run folder must be a folder (or not exist yet): a file there, or a file in its path,
    is a user error, not a traceback."""
    from collapselab.errors import ConfigError

    for path in (run_dir, *run_dir.parents):
        if path.exists() and not path.is_dir():
            where = "" if path == run_dir else f" (in the run folder's path {run_dir})"
            raise ConfigError(f"--run-dir/-o: {path} is a file, not a folder{where}; give a folder path")


def run_command(config: Path, overrides: list[str] | None, run_dir: Path | None) -> None:
    offline_defaults()
    with user_errors():
        from collapselab.cli.noise import warnings_to_log
        from collapselab.cli.progress import stage_progress
        from collapselab.executors import run_stages
        from collapselab.pipeline.validate import validate_experiment
        from collapselab.tracking import track_run

        spec = load(config, overrides)
        run_dir = run_dir or default_run_dir(spec.name)
        check_run_dir(run_dir)
        stages = validate_experiment(spec)
        console.print(f"[bold]{spec.name}[/]: {len(stages)} stages → {run_dir}")
        with warnings_to_log(run_dir / "logs" / "warnings.log") as log, \
                stage_progress(len(stages), console) as progress, \
                track_run(spec, run_dir, notify=lambda m: console.print(f"tracking: {m}", markup=False)) as tracking:
            report = run_stages(spec, run_dir, progress=tracking.progress(progress), stages=stages)
            if spec.collapse.enabled:
                from collapselab.cli.report import write_run_report

                paths = write_run_report(spec, run_dir)
                tracking.log_results(paths["results.json"])
        console.print(
            f"[green]done[/] in {report.seconds:.0f} s: ran {len(report.ran)} stages, "
            f"{len(report.skipped)} were already done. Run folder: {run_dir}"
        )
        if report.unverified:
            console.print(f"[yellow]note[/]: {len(report.unverified)} completed stages were written before "
                          "collapselab recorded checksums, so their files could not be checked "
                          "(`collapselab verify` lists them)")
        if log.is_file() and log.stat().st_size:
            console.print(f"[dim]library warnings: {log}[/]")
        if spec.collapse.enabled:
            console.print(f"report: [bold]{paths['report.html']}[/]")
