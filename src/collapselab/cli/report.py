"""``collapselab report``: write the report of a run from its stage outputs (nothing is recomputed)."""

from __future__ import annotations

from pathlib import Path

from collapselab.cli.common import console, load_run_spec, user_errors


def write_run_report(spec, run_dir: Path) -> dict[str, Path]:
    """Collect the run's outputs and write ``RUN_DIR/report/`` (HTML, Markdown, CSV, Parquet)."""
    from collapselab.report.inputs import collect
    from collapselab.report.write import write_report

    return write_report(collect(spec, run_dir), run_dir / "report")


def report_command(run_dir: Path, figures: Path | None = None) -> None:
    with user_errors():
        from collapselab.pipeline.multirun import read_manifest

        if read_manifest(run_dir) is not None:
            _sweep_reports(run_dir, figures)
            return
        spec = load_run_spec(run_dir)
        paths = write_run_report(spec, run_dir)
        console.print(f"report: {paths['report.html']}")
        console.print(f"tables: {paths['report.html'].parent}")
        if figures is not None:
            from collapselab.report.write import export_figures

            written = export_figures(paths["report.html"].read_text(), figures)
            console.print(f"figures: {len(written)} PNG files in {figures}")


def _sweep_reports(run_dir: Path, figures: Path | None) -> None:
    """A sweep's folder: every point's report (those whose stages are all done) and the comparison."""
    from collapselab.errors import ConfigError
    from collapselab.pipeline.multirun import rewrite_reports

    if figures is not None:
        raise ConfigError(f"--figures: {run_dir} holds a sweep; give one point's report instead "
                          "(collapselab report writes every point's report.html under RUN_DIR/sweep/)")
    written, left, paths = rewrite_reports(run_dir)
    for point in written:
        console.print(f"report: {point.folder(run_dir) / 'report' / 'report.html'}", highlight=False)
    if left:
        console.print(f"[yellow]not finished[/] (stages missing, no report): {', '.join(p.name for p in left)}",
                      highlight=False)
    console.print(f"comparison: {paths['comparison.html']}", highlight=False)
