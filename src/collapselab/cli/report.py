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
        spec = load_run_spec(run_dir)
        paths = write_run_report(spec, run_dir)
        console.print(f"report: {paths['report.html']}")
        console.print(f"tables: {paths['report.html'].parent}")
        if figures is not None:
            from collapselab.report.write import export_figures

            written = export_figures(paths["report.html"].read_text(), figures)
            console.print(f"figures: {len(written)} PNG files in {figures}")
