"""``collapselab export``: a run's data as a Hugging Face dataset and its adapters with model cards,
optionally uploaded to the Hub (:mod:`collapselab.export`)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from collapselab.cli.common import console, user_errors


def export_command(run_dir: Path, out: Path, push: str | None, private: bool, overwrite: bool) -> None:
    with user_errors():
        from collapselab.export.hub_names import check_repo_id
        from collapselab.export.push import push_export
        from collapselab.export.run import export_run

        if push is not None:  # a bad name fails before anything is written
            check_repo_id(push)
        result = export_run(run_dir, out, repo=push, overwrite=overwrite)
        table = Table("config", "rows", title=f"dataset: {escape(str(result.dataset))}")
        for name, rows in result.rows.items():
            table.add_row(escape(name), str(rows))
        console.print(table)
        console.print(f"adapters: {len(result.adapters)} in {escape(str(result.out / 'adapters'))}")
        console.print(f"collapselab {escape(result.version.version)}, commit {escape(result.version.commit)}",
                      highlight=False)
        if result.missing:
            console.print(f"[yellow]not exported[/] ({len(result.missing)} stages not finished):", highlight=False)
            for label in result.missing[:20]:
                console.print(f"  {escape(label)}", highlight=False)
            if len(result.missing) > 20:
                console.print(f"  … and {len(result.missing) - 20} more (listed in the dataset card)")
        if push is not None:
            for upload, url in push_export(result.out, push, private=private):
                console.print(f"uploaded {upload.repo_type} {escape(upload.repo_id)}: {escape(url)}", highlight=False)
