"""``collapselab plan``: size an experiment before launching it (no model is loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from collapselab.cli.common import console, load, offline_defaults, user_errors

#: Columns shown for the counts, with their headers.
SHOWN = (("n_items", "items"), ("tokens_generate", "generate"), ("tokens_prefill", "prefill"),
         ("tokens_score", "score"), ("tokens_train", "train"))


def count_text(value: Any, prefix: str = "") -> str:
    """A count with thousands separators; ``unknown`` for a missing one."""
    try:
        import pandas as pd

        if value is None or pd.isna(value):
            return "unknown"
    except TypeError:
        pass
    return f"{prefix}{int(value):,}"


def stage_table(table: Any, title: str) -> tuple[Table, list[str]]:
    """The per-stage rich table and the numbered notes its rows refer to."""
    notes: dict[str, int] = {}
    out = Table(title=title, show_lines=False)
    out.add_column("stage", overflow="fold")
    out.add_column("model", overflow="fold")
    for _, header in SHOWN:
        out.add_column(header, justify="right")
    out.add_column("cpus/gpus", justify="right")
    out.add_column("note", justify="right")
    for row in table.itertuples(index=False):
        note = notes.setdefault(row.basis, len(notes) + 1) if row.basis else None
        bound = "≤ " if row.items_upper_bound else ""
        cells = [count_text(getattr(row, column), bound if column == "n_items" else "")
                 for column, _ in SHOWN]
        model = row.model if isinstance(row.model, str) else "-"
        out.add_row(escape(row.label), escape(model), *cells, f"{row.cpus:g}/{row.gpus:g}",
                    escape(f"[{note}]") if note else "")
    return out, [f"[{n}] {text}" for text, n in notes.items()]


def totals_table(totals: Any, by: str, title: str) -> Table:
    """A totals table; ``≥`` marks sums that leave out unknown counts."""
    out = Table(title=title)
    out.add_column(by, overflow="fold")
    out.add_column("stages", justify="right")
    for _, header in SHOWN:
        out.add_column(header, justify="right")
    for row in totals.itertuples(index=False):
        incomplete = set(filter(None, row.incomplete.split(",")))
        cells = [count_text(getattr(row, column), "≥ " if column in incomplete else "")
                 for column, _ in SHOWN]
        style = "bold" if getattr(row, by) == "all" else None
        out.add_row(escape(str(getattr(row, by))), str(row.stages), *cells, style=style)
    return out


def plan_command(config: Path, overrides: list[str] | None, totals_only: bool, csv: Path | None) -> None:
    offline_defaults()
    with user_errors():
        import pandas as pd

        from collapselab.pipeline.plan import plan_experiment, plan_totals
        from collapselab.store.atomic import write_text

        spec = load(config, overrides)
        table = plan_experiment(spec)
        by_kind, by_model = plan_totals(table, "kind"), plan_totals(table, "model")
        if not totals_only:
            shown, notes = stage_table(table, f"{spec.name}: {len(table)} stages")
            console.print(shown)
            for note in notes:
                console.print(note, highlight=False, markup=False, soft_wrap=True)
        console.print(totals_table(by_kind, "kind", "totals per stage kind"))
        console.print(totals_table(by_model, "model", "totals per model"))
        console.print("items: prompts, texts, examples or comparisons (see each stage's unit); tokens by "
                      "characters/4; generate and train are upper bounds (answers stop early, training "
                      "stops early); ≥: a sum without the stages whose count is unknown offline",
                      highlight=False, soft_wrap=True)
        if csv is not None:
            if totals_only:
                frame = pd.concat([by_kind.rename(columns={"kind": "group"}).assign(by="kind"),
                                   by_model.rename(columns={"model": "group"}).assign(by="model")],
                                  ignore_index=True)
            else:
                frame = table
            write_text(csv, frame.to_csv(index=False))
            console.print(f"wrote {csv}")
