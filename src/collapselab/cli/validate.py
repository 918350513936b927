"""``collapselab validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from collapselab.cli.common import console, load, offline_defaults, user_errors


def validate_command(config: Path, overrides: list[str] | None) -> None:
    offline_defaults()
    with user_errors():
        from collapselab.pipeline.validate import validate_experiment

        spec = load(config, overrides)
        stages = validate_experiment(spec)
        counts: dict[str, int] = {}
        for s in stages:
            counts[s.kind] = counts.get(s.kind, 0) + 1
        table = Table(title=f"{config}: valid", show_header=True)
        table.add_column("stage kind")
        table.add_column("count", justify="right")
        for kind, n in counts.items():
            table.add_row(kind, str(n))
        console.print(table)
        console.print(
            f"sources: {', '.join(s.name for s in spec.sources) or '-'} · "
            f"conditions: {', '.join(c.label for c in spec.conditions)} · "
            f"targets: {', '.join(t.id for t in spec.targets)} · seeds: {list(spec.seeds)} · "
            f"shards: {spec.n_shards}"
        )
        for name in spec.target_names:  # the per-target settings (lora_overrides, preference.sources_by_target)
            lora = spec.lora_for(name)
            tokens = "every token" if lora.loss == "full" else "the answers"
            line = (f"{name}: training batch {lora.batch_size} x grad_accum {lora.grad_accum} = "
                    f"{lora.batch_size * lora.grad_accum}, loss on {tokens}")
            if spec.preference.enabled:
                line += f" · its judges compare {', '.join(spec.preference_sources(name))} + human"
            console.print(line)
        console.print(memory_line(spec, stages), highlight=False, soft_wrap=True)
        from collapselab.pipeline.validate import mix_shares

        for label, shares in mix_shares(spec).items():
            if shares is None:
                console.print(f"{label}: shares realised by example; the training set's size is not known "
                              "offline, so the mix stage checks them (split.weight_tolerance "
                              f"{spec.split.weight_tolerance:g})")
            else:
                n = sum(int(v["count"]) for v in shares.values())
                console.print(f"{label}: realised shares of the {n:,} training prompts: " + ", ".join(
                    f"{s} {v['count']:,} = {v['share']:.1%} (requested {v['requested']:.1%})"
                    for s, v in shares.items()), highlight=False)


def memory_line(spec: Any, stages: list[Any]) -> str:
    """What the GPU memory check found (validate has already refused any stage that does not fit)."""
    from collapselab.pipeline.memory import GB, check_memory

    if spec.run.gpu_memory_gb is None:
        return "GPU memory: not checked (run.gpu_memory_gb is not set); `collapselab plan` shows the estimates"
    check = check_memory(spec, stages)
    line = f"GPU memory: {check.checked} model stage(s) fit GPUs of {spec.run.gpu_memory_gb:g} GB"
    if check.largest is not None:
        label, mem = check.largest
        line += f" (the largest: {label}, ≈ {(mem.peak or 0) / GB:,.1f} GB per GPU)"
    if check.unchecked:
        reasons = sorted({note for _, mem in check.unchecked for note in mem.notes})
        line += (f"; {len(check.unchecked)} not checked: "
                 + ", ".join(label for label, _ in check.unchecked[:5])
                 + (" ..." if len(check.unchecked) > 5 else "") + f" ({'; '.join(reasons)})")
    return line
