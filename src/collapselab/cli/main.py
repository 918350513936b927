"""Entry point. Commands import the library (and torch) only when they run, so ``--help`` is instant."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="collapselab",
    help="Study what synthetic training data does to fine-tuned language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OVERRIDES_HELP = "Overrides such as lora.r=8 split.train_size=40 (applied after the YAML and environment)."


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment YAML."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    run_dir: Path = typer.Option(None, "--run-dir", "-o", help="Run folder (default: runs/<name>)."),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Sweep: an override with comma-separated "
                                  "values (lora.r=8,16) is an axis; every combination runs into the one run "
                                  "folder (shared stages once), then RUN_DIR/sweep/comparison.html "
                                  "(docs/sweeps.md)."),
) -> None:
    """Run an experiment; completed stages are skipped, an interrupted run resumes."""
    if multirun:
        from collapselab.cli.multirun import multirun_command

        multirun_command(config, overrides, run_dir)
        return
    from collapselab.cli.run import run_command

    run_command(config, overrides, run_dir)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="Experiment YAML."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Build and check everything (specs, registered names, paths, the stage graph); run nothing."""
    from collapselab.cli.validate import validate_command

    validate_command(config, overrides)


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run folder."),
           times: bool = typer.Option(False, "--times", help="Time per stage kind instead: where the run "
                                                              "spent its time.")) -> None:
    """Which stages of a run are done, running, interrupted or missing."""
    from collapselab.cli.status import status_command

    status_command(run_dir, times)


@app.command()
def verify(run_dir: Path = typer.Argument(..., help="A run folder.")) -> None:
    """Check every completed stage's files against the sizes and SHA-256 recorded when it finished."""
    from collapselab.cli.verify import verify_command

    verify_command(run_dir)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder."),
           figures: Path | None = typer.Option(None, "--figures", help="Also write every figure of the report "
                                                                        "as a PNG file into this folder.")) -> None:
    """Write RUN_DIR/report/: report.html (self-contained), report.md, results as CSV and Parquet, results.json
    (lm-evaluation-harness's shape)."""
    from collapselab.cli.report import report_command

    report_command(run_dir, figures)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder (finished or partly finished: what is done is exported)."),
    out: Path = typer.Argument(..., help="A new or empty folder for the dataset and the adapters."),
    push: str | None = typer.Option(None, "--push", help="Also upload to the Hugging Face Hub: the dataset as "
                                                         "ORG/NAME, each adapter as ORG/NAME-<adapter>."),
    private: bool = typer.Option(False, "--private", help="With --push: create the repositories private."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists and is not empty."),
) -> None:
    """Export a run: training sets (with provenance), responses, judgements and preference read-outs as a
    Hugging Face dataset (Parquet + card), and each adapter with a model card."""
    from collapselab.cli.export import export_command

    export_command(run_dir, out, push, private, overwrite)


@app.command("ls")
def ls(what: str = typer.Argument("all", help="models, backends, corpora, metrics, conditions, stages or all")) -> None:
    """List what is registered: packaged models, backends, corpora, condition kinds, stage kinds."""
    from collapselab.cli.ls import ls_command

    ls_command(what)


@app.command()
def plan(
    config: Path = typer.Argument(..., help="Experiment YAML."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    totals: bool = typer.Option(False, "--totals", help="Print only the totals per stage kind and model."),
    csv: Path = typer.Option(None, "--csv", help="Also write the table (with --totals: the totals) as CSV."),
) -> None:
    """Size a job before running it: per stage, the items and tokens to generate, read, score and train on."""
    from collapselab.cli.plan import plan_command

    plan_command(config, overrides, totals, csv)


@app.command("sweep-human-data")
def sweep_human_data(
    config: Path = typer.Argument(..., help="Experiment YAML with recursive generations."),
    out_dir: Path = typer.Argument(..., help="Folder for the configs (one per point) and sweep.json."),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    proportion: str = typer.Option("", "--proportion", help="Shares of fresh human data, e.g. 0.1,0.25,0.5."),
    count: str = typer.Option("", "--count", help="Counts of fresh human examples per generation, e.g. 4,8,16."),
) -> None:
    """Write one config per fresh-human-data setting: as a proportion (human_fraction) vs as a cardinality
    (human_count), the rest of CONFIG unchanged."""
    from collapselab.cli.sweep import sweep_human_data_command

    sweep_human_data_command(config, out_dir, overrides, proportion, count)


@app.command()
def lineage(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    stage: str = typer.Argument(None, help="A stage label such as train/NAME: show only its ancestry."),
) -> None:
    """The chain of stages of a run, from its final stages back to prepare, each marked done or missing."""
    from collapselab.cli.lineage import lineage_command

    lineage_command(run_dir, stage)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
