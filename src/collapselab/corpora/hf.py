"""Hugging Face datasets (``corpus.kind: hf``): a hub id such as ``databricks/databricks-dolly-15k``,
or a local data file / folder read through ``datasets.load_dataset`` the same way.

Rows are mapped by :func:`collapselab.corpora.files.rows_to_records`, so column names, defaults
and errors match the local-file loaders; the default :class:`ColumnMap` fits Dolly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collapselab.config.spec import CorpusSpec
from collapselab.corpora.base import Record
from collapselab.corpora.files import check_columns, mapped_columns, rows_to_records
from collapselab.errors import ConfigError, DataError

#: The ``datasets`` builder for each local data-file suffix.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _local_path(spec: CorpusSpec) -> Path | None:
    if spec.path:
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: not found (corpus.path)")
        return path
    if spec.name and Path(spec.name).expanduser().exists():
        return Path(spec.name).expanduser()
    return None


def _load(spec: CorpusSpec) -> tuple[Any, str]:
    """The split as a ``datasets.Dataset`` and a label naming it in messages."""
    try:
        import datasets  # heavy and optional: imported only when an hf corpus is used
    except ImportError as exc:
        raise DataError("corpus kind 'hf' needs the datasets package: "
                        "pip install 'collapselab[data]'") from exc

    local = _local_path(spec)
    if local is not None:
        label = f"{local} [{spec.hf_split}]"
        if local.is_dir():
            # a folder of data files (e.g. a cloned dataset repo): datasets infers the format
            args: tuple[Any, ...] = (str(local), spec.hf_subset)
            kwargs: dict[str, Any] = {"split": spec.hf_split}
        elif local.suffix.lower() in BUILDERS:
            # the one file is the requested split, whatever its name
            args = (BUILDERS[local.suffix.lower()],)
            kwargs = {"data_files": {spec.hf_split: str(local)}, "split": spec.hf_split}
        else:
            raise DataError(f"{local}: unsupported data file type {local.suffix!r} "
                            f"(supported: {', '.join(sorted(BUILDERS))}, or a folder)")
        try:
            return datasets.load_dataset(*args, **kwargs), label
        except Exception as exc:  # datasets raises many types; all mean this input cannot be read
            raise DataError(f"{label}: cannot load with datasets ({type(exc).__name__}: {exc})") from exc

    if not spec.name:
        raise ConfigError("corpus kind 'hf' needs corpus.name (a dataset id such as "
                          "databricks/databricks-dolly-15k) or corpus.path (a local data file)")
    subset = f", subset {spec.hf_subset!r}" if spec.hf_subset else ""
    label = f"{spec.name} [{spec.hf_split}]"
    try:
        return datasets.load_dataset(spec.name, spec.hf_subset, split=spec.hf_split), label
    except Exception as exc:  # network, auth, offline mode, unknown name/subset/split: all end here
        raise DataError(
            f"could not load Hugging Face dataset {spec.name!r}{subset}, split {spec.hf_split!r}: "
            f"{type(exc).__name__}: {exc}. The hub may be unreachable (no network, HF_HUB_OFFLINE or "
            "HF_DATASETS_OFFLINE set) or the name/subset/split may be wrong. Without the hub, save the "
            "dataset to a file on a connected machine (e.g. load_dataset(...).to_json('corpus.jsonl')) "
            "and set corpus.path to it (with kind hf, jsonl, csv or parquet)."
        ) from exc


def load_hf(spec: CorpusSpec) -> list[Record]:
    """Records from a Hugging Face dataset split (``corpus.kind: hf``).

    ``spec.path`` (or a ``spec.name`` that is an existing local path) loads a ``.jsonl``/``.json``/
    ``.csv``/``.parquet`` file or a data folder with ``datasets``; otherwise ``spec.name`` and
    ``spec.hf_subset`` select a hub dataset. ``spec.hf_split`` picks the split and
    ``spec.columns`` maps its columns. Any loading failure is a :class:`DataError`.
    """
    dataset, label = _load(spec)
    check_columns(spec.columns, dataset.column_names, label)
    rows = dataset.select_columns(mapped_columns(spec.columns, dataset.column_names)).to_list()
    return rows_to_records(((f"row {i}", row) for i, row in enumerate(rows)), spec.columns, label)
