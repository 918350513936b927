"""``collapselab run``."""

from __future__ import annotations

from pathlib import Path

from collapselab.cli.common import console, default_run_dir, load, offline_defaults, user_errors


def run_command(config: Path, overrides: list[str] | None, run_dir: Path | None) -> None:
    offline_defaults()
    with user_errors():
        from collapselab.cli.progress import RichStageProgress
        from collapselab.executors import run_stages
        from collapselab.pipeline.validate import validate_experiment

        spec = load(config, overrides)
        stages = validate_experiment(spec)
        run_dir = run_dir or default_run_dir(spec.name)
        console.print(f"[bold]{spec.name}[/]: {len(stages)} stages → {run_dir}")
        with RichStageProgress(len(stages), console) as progress:
            report = run_stages(spec, run_dir, progress=progress, stages=stages)
        console.print(
            f"[green]done[/] in {report.seconds:.0f} s: ran {len(report.ran)} stages, "
            f"{len(report.skipped)} were already done. Run folder: {run_dir}"
        )
        if spec.collapse.enabled:
            from collapselab.cli.report import write_run_report

            paths = write_run_report(spec, run_dir)
            console.print(f"report: [bold]{paths['report.html']}[/]")
