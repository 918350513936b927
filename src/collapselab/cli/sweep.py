"""``collapselab sweep-human-data``: one config per fresh-human-data setting (proportion vs count)."""

from __future__ import annotations

from pathlib import Path

from collapselab.cli.common import console, load, user_errors


def sweep_human_data_command(config: Path, out_dir: Path, overrides: list[str] | None, proportions: str,
                             counts: str) -> None:
    with user_errors():
        import yaml

        from collapselab.errors import ConfigError
        from collapselab.pipeline.sweeps import human_data_sweep
        from collapselab.store.atomic import write_json, write_text

        spec = load(config, overrides)
        try:
            props = [float(x) for x in proportions.split(",") if x.strip()]
            cnts = [int(x) for x in counts.split(",") if x.strip()]
        except ValueError as exc:
            raise ConfigError(f"--proportion/--count: {exc}") from None
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"OUT_DIR: {out_dir} is a file, not a folder")
        points = human_data_sweep(spec, proportions=props, counts=cnts)
        rows = []
        for point in points:
            path = out_dir / f"{point.spec.name}.yaml"
            write_text(path, yaml.safe_dump(point.spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
            rows.append({**point.row(), "config": str(path)})
        write_json(out_dir / "sweep.json", rows)
        for row in rows:
            console.print(f"{row['point']:>12}  {row['varies']:<11} → {row['config']}")
        console.print(f"{len(rows)} configs in {out_dir}. Run each with `collapselab run CONFIG -o RUN_DIR`; one "
                      "RUN_DIR for all shares the stages they have in common (each run rewrites RUN_DIR/report).")
