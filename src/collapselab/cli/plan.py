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


def gpu_text(value: Any, lower: bool, memory: str, fits: Any = None, digits: int = 1) -> str:
    """A GPU figure: ``-`` when the stage uses no GPU (or loads no model), ``?`` when it is unknown
    (the reason is in the row's note), ``≥`` before a lower bound, ``✗`` after a peak that does
    not fit ``run.gpu_memory_gb``."""
    import pandas as pd

    from collapselab.pipeline.memory import NO_GPU

    if value is None or pd.isna(value):
        return "-" if not memory or memory.startswith(NO_GPU) else "?"
    number = float(value)
    shown = f"{number:,.{digits}f}" if number == 0 or number >= 10 ** -digits else f"{number:.1g}"
    text = f"{'≥ ' if lower else ''}{shown}"
    return text + (" ✗" if fits is not None and not pd.isna(fits) and not fits else "")


def stage_table(table: Any, title: str) -> tuple[Table, list[str]]:
    """The per-stage rich table and the numbered notes its rows refer to."""
    notes: dict[str, int] = {}
    out = Table(title=title, show_lines=False)
    out.add_column("stage", overflow="fold")
    out.add_column("model", overflow="fold")
    for _, header in SHOWN:
        out.add_column(header, justify="right")
    out.add_column("cpus/gpus", justify="right")
    out.add_column("GB/GPU", justify="right")
    out.add_column("GPU h", justify="right")
    out.add_column("note", justify="right")
    for row in table.itertuples(index=False):
        note = notes.setdefault(row.basis, len(notes) + 1) if row.basis else None
        bound = "≤ " if row.items_upper_bound else ""
        cells = [count_text(getattr(row, column), bound if column == "n_items" else "")
                 for column, _ in SHOWN]
        model = row.model if isinstance(row.model, str) else "-"
        out.add_row(escape(row.label), escape(model), *cells, f"{row.cpus:g}/{row.gpus:g}",
                    gpu_text(row.gpu_gb, row.gpu_gb_lower, row.gpu_memory, row.fits),
                    gpu_text(row.gpu_hours, row.gpu_hours_lower, row.gpu_memory),
                    escape(f"[{note}]") if note else "")
    return out, [f"[{n}] {text}" for text, n in notes.items()]


def totals_table(totals: Any, by: str, title: str) -> Table:
    """A totals table; ``≥`` marks sums that leave out unknown counts. GB/GPU is the largest peak
    of the group's stages, GPU h their sum; ``✗`` counts the stages that do not fit."""
    out = Table(title=title)
    out.add_column(by, overflow="fold")
    out.add_column("stages", justify="right")
    for _, header in SHOWN:
        out.add_column(header, justify="right")
    out.add_column("GB/GPU", justify="right")
    out.add_column("GPU h", justify="right")
    refusals = bool(totals["refused"].sum())
    if refusals:
        out.add_column("✗", justify="right")
    for row in totals.itertuples(index=False):
        incomplete = set(filter(None, row.incomplete.split(",")))
        cells = [count_text(getattr(row, column), "≥ " if column in incomplete else "")
                 for column, _ in SHOWN]
        used = "gpu" if row.gpu_gb is not None and not _missing(row.gpu_gb) else ""
        cells += [gpu_text(row.gpu_gb, "gpu_gb" in incomplete, used),
                  gpu_text(row.gpu_hours, "gpu_hours" in incomplete, used)]
        if refusals:
            cells.append(str(row.refused) if row.refused else "")
        style = "bold" if getattr(row, by) == "all" else None
        out.add_row(escape(str(getattr(row, by))), str(row.stages), *cells, style=style)
    return out


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def memory_table(table: Any, title: str) -> Table:
    """One row per stage kind and model that uses a GPU: the largest peak per GPU with its main
    terms (the stage table's GB/GPU, explained)."""
    import pandas as pd

    out = Table(title=title)
    out.add_column("kind")
    out.add_column("model", overflow="fold")
    out.add_column("stages", justify="right")
    out.add_column("GB/GPU", justify="right")
    out.add_column("largest terms", overflow="fold")
    used = table[table["gpu_gb"].notna()]
    for (kind, model), part in used.groupby(["kind", "model"], sort=False):
        top = part.loc[part["gpu_gb"].astype(float).idxmax()]
        fits = None if pd.isna(top["fits"]) else bool(top["fits"])
        out.add_row(escape(kind), escape(model), str(len(part)),
                    gpu_text(top["gpu_gb"], bool(top["gpu_gb_lower"]), top["gpu_memory"], fits),
                    escape(top["gpu_memory"]))
    return out


def gpu_legend(spec: Any) -> str:
    """What the GPU columns mean for this config (its declared GPUs and throughput)."""
    from collapselab.pipeline.memory import DEFAULT_GPU_TFLOPS, H100_BF16_TFLOPS

    run = spec.run
    rate = (f"{run.gpu_tflops:g} TFLOP/s per GPU (run.gpu_tflops)" if run.gpu_tflops else
            f"{DEFAULT_GPU_TFLOPS:.0f} TFLOP/s per GPU (an H100's {H100_BF16_TFLOPS:g} dense bf16 at 40%; "
            "set run.gpu_tflops)")
    gpus = (f"checked against run.gpu_memory_gb {run.gpu_memory_gb:g} (✗: does not fit; see validate)"
            if run.gpu_memory_gb else "not checked: run.gpu_memory_gb is not set")
    return (f"GB/GPU: estimated peak memory per GPU in GB (1e9 bytes), {gpus}; GPU h: GPU-hours at {rate}, "
            "decoding at least one read of the weights per step; ?: unknown (see the note); -: no GPU; "
            "formulas in docs/plan.md")


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
            console.print(memory_table(table, "peak GPU memory per stage kind and model"))
        console.print(totals_table(by_kind, "kind", "totals per stage kind"))
        console.print(totals_table(by_model, "model", "totals per model"))
        console.print("items: prompts, texts, examples or comparisons (see each stage's unit); tokens by "
                      "characters/4; generate and train are upper bounds (answers stop early, training "
                      "stops early); ≥: a sum without the stages whose count is unknown offline",
                      highlight=False, soft_wrap=True)
        console.print(gpu_legend(spec), highlight=False, soft_wrap=True)
        if csv is not None:
            if totals_only:
                frame = pd.concat([by_kind.rename(columns={"kind": "group"}).assign(by="kind"),
                                   by_model.rename(columns={"model": "group"}).assign(by="model")],
                                  ignore_index=True)
            else:
                frame = table
            write_text(csv, frame.to_csv(index=False))
            console.print(f"wrote {csv}")
