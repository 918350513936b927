"""``collapselab validate``."""

from __future__ import annotations

from pathlib import Path

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
