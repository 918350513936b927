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


def _local_path(path: str | None, name: str | None, field: str) -> Path | None:
    if path:
        local = Path(path).expanduser()
        if not local.exists():
            raise DataError(f"{local}: not found ({field}.path)")
        return local
    if name and Path(name).expanduser().exists():
        return Path(name).expanduser()
    return None


def load_dataset_split(path: str | None, name: str | None, subset: str | None, split: str,
                       field: str = "corpus") -> tuple[Any, str]:
    """One split as a ``datasets.Dataset`` and a label naming it in messages.

    ``path`` (or a ``name`` that is an existing local path) is a ``.jsonl``/``.json``/``.csv``/
    ``.parquet`` file (read as the requested split, whatever its name) or a data folder; otherwise
    ``name`` and ``subset`` select a hub dataset. ``field`` is the config section named in errors
    (``corpus``, ``safety.prompts``, ...). Any loading failure is a :class:`DataError`.
    """
    try:
        import datasets  # heavy and optional: imported only when an hf dataset is used
    except ImportError as exc:
        raise DataError(f"{field} kind 'hf' needs the datasets package: "
                        "pip install 'collapselab[data]'") from exc

    local = _local_path(path, name, field)
    if local is not None:
        label = f"{local} [{split}]"
        if local.is_dir():
            # a folder of data files (e.g. a cloned dataset repo): datasets infers the format
            args: tuple[Any, ...] = (str(local), subset)
            kwargs: dict[str, Any] = {"split": split}
        elif local.suffix.lower() in BUILDERS:
            # the one file is the requested split, whatever its name
            args = (BUILDERS[local.suffix.lower()],)
            kwargs = {"data_files": {split: str(local)}, "split": split}
        else:
            raise DataError(f"{local}: unsupported data file type {local.suffix!r} "
                            f"(supported: {', '.join(sorted(BUILDERS))}, or a folder)")
        try:
            return datasets.load_dataset(*args, **kwargs), label
        except Exception as exc:  # datasets raises many types; all mean this input cannot be read
            raise DataError(f"{label}: cannot load with datasets ({type(exc).__name__}: {exc})") from exc

    if not name:
        raise ConfigError(f"{field} kind 'hf' needs {field}.name (a dataset id such as "
                          f"databricks/databricks-dolly-15k) or {field}.path (a local data file)")
    shown = f", subset {subset!r}" if subset else ""
    label = f"{name} [{split}]"
    try:
        return datasets.load_dataset(name, subset, split=split), label
    except Exception as exc:  # network, auth, offline mode, unknown name/subset/split: all end here
        raise DataError(
            f"could not load Hugging Face dataset {name!r}{shown}, split {split!r}: "
            f"{type(exc).__name__}: {exc}. The hub may be unreachable (no network, HF_HUB_OFFLINE or "
            "HF_DATASETS_OFFLINE set) or the name/subset/split may be wrong. Without the hub, save the "
            "dataset to a file on a connected machine (e.g. load_dataset(...).to_json('data.jsonl')) "
            f"and set {field}.path to it."
        ) from exc


def load_hf(spec: CorpusSpec) -> list[Record]:
    """Records from a Hugging Face dataset split (``corpus.kind: hf``).

    ``spec.path`` (or a ``spec.name`` that is an existing local path) loads a ``.jsonl``/``.json``/
    ``.csv``/``.parquet`` file or a data folder with ``datasets``; otherwise ``spec.name`` and
    ``spec.hf_subset`` select a hub dataset. ``spec.hf_split`` picks the split and
    ``spec.columns`` maps its columns. Any loading failure is a :class:`DataError`.
    """
    dataset, label = load_dataset_split(spec.path, spec.name, spec.hf_subset, spec.hf_split, "corpus")
    check_columns(spec.columns, dataset.column_names, label)
    rows = dataset.select_columns(mapped_columns(spec.columns, dataset.column_names)).to_list()
    return rows_to_records(((f"row {i}", row) for i, row in enumerate(rows)), spec.columns, label)
