"""Export a run folder: its data as a Hugging Face dataset, its adapters with model cards.

Layout of ``OUT``::

    OUT/dataset/README.md                 the dataset card (YAML header: configs, licence, tags)
    OUT/dataset/data/<config>.parquet     one table per config (collapselab.export.tables)
    OUT/adapters/<train stage name>/      adapter files + README.md model card

The export is written into a temporary folder beside ``OUT`` and renamed into place when
complete, so ``OUT`` never holds half an export; every file inside is written atomically too.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from collapselab.errors import CollapselabError
from collapselab.export.adapters import ADAPTERS_DIR, write_adapter
from collapselab.export.cards import CardContext, dataset_card, redacted_config_yaml
from collapselab.export.dataset import write_tables
from collapselab.export.hub_names import adapter_repo_id, check_repo_id
from collapselab.export.tables import EXPORTED_KINDS, gather
from collapselab.store.atomic import write_text
from collapselab.store.versions import SourceVersion, source_version

DATASET_DIR = "dataset"


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: rows per dataset config, adapter folders by name, and the
    stages it could not export (not finished, or finished without an adapter folder)."""

    out: Path
    rows: dict[str, int]
    adapters: dict[str, Path]
    missing: list[str]
    version: SourceVersion

    @property
    def dataset(self) -> Path:
        return self.out / DATASET_DIR


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_destination(out: Path, run_dir: Path, overwrite: bool) -> None:
    """``OUT`` must be a new or empty folder (or ``overwrite``), and never the run folder, a
    folder holding it, or a folder among its stages."""
    out_r, run_r = out.resolve(), run_dir.resolve()
    if _inside(run_r, out_r):
        raise CollapselabError(f"{out}: the export folder would replace the run folder {run_dir}; choose another")
    if _inside(out_r, run_r / "stages"):
        raise CollapselabError(f"{out}: is inside the run's stages folder; choose another export folder")
    if out.exists() and not out.is_dir():
        raise CollapselabError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CollapselabError(f"{out}: exists and is not empty; choose another folder or pass --overwrite")


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished export ``tmp`` at ``out``, the old ``out`` (if any) moved aside first and
    deleted last."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _split_summary(stages: list, store) -> dict:
    prepare = next((s for s in stages if s.kind == "prepare"), None)
    if prepare is None or not store.is_done(prepare.ref):
        return {}
    path = store.final_dir(prepare.ref) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def export_run(run_dir: str | Path, out: str | Path, *, repo: str | None = None,
               overwrite: bool = False) -> ExportResult:
    """Export the finished stages of ``run_dir`` into ``out`` (see the module docstring);
    ``repo`` (``ORG/NAME``) is the Hub repository the export will be pushed to, named in the
    cards. A stage not finished yet is listed in the result and the card, not an error; a run
    with nothing finished to export is."""
    from collapselab.config.load import load_config
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.run import RunStore

    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise CollapselabError(f"{run_dir}: no such run folder")
    config = run_dir / "experiment.yaml"
    if not config.is_file():
        raise CollapselabError(f"{run_dir}: not a run folder (no experiment.yaml)")
    check_destination(out, run_dir, overwrite)
    spec = load_config(config, use_env=False)
    stages = build_graph(spec)
    store = RunStore(run_dir)
    contents = gather(stages, store)
    if not contents.tables and not contents.adapters:
        raise CollapselabError(f"{run_dir}: nothing to export: none of its {', '.join(EXPORTED_KINDS)} stages has "
                               "finished (run `collapselab run` first)")
    if repo is not None:  # a name the Hub refuses fails before anything is written
        for name in [repo, *(adapter_repo_id(repo, a.name) for a in contents.adapters)]:
            check_repo_id(name)
    version = source_version(run_dir)
    ctx = CardContext(spec, redacted_config_yaml(config.read_text()), version, repo)
    missing = list(contents.missing)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        rows = write_tables(contents.tables, tmp / DATASET_DIR)
        adapters: dict[str, Path] = {}
        for adapter in contents.adapters:
            if not adapter.folder.is_dir():
                missing.append(f"{adapter.stage.label} (finished without an adapter folder)")
                continue
            write_adapter(adapter, tmp / ADAPTERS_DIR / adapter.name, ctx)
            adapters[adapter.name] = out / ADAPTERS_DIR / adapter.name
        write_text(tmp / DATASET_DIR / "README.md",
                   dataset_card(ctx, contents.tables, rows, adapters=list(adapters), missing=missing,
                                split=_split_summary(stages, store)))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, rows, adapters, missing, version)
