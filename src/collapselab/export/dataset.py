"""The exported tables as Parquet files that ``datasets.load_dataset`` reads as configs.

Each table is ``data/<config>.parquet`` under the dataset folder; the card's YAML header maps
every config to its file (:func:`collapselab.export.cards.dataset_card`), so
``load_dataset(FOLDER_OR_REPO, "<config>", split="train")`` returns it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

from collapselab.export.tables import Table
from collapselab.store.atomic import write_bytes

DATA_DIR = "data"


def _cell(value: Any) -> Any:
    """Nested values as JSON text (one type per column, however rows differ); NaN as missing."""
    if isinstance(value, dict | list | tuple):
        from collapselab.store.jsonsafe import jsonable

        return json.dumps(jsonable(value), ensure_ascii=False)
    if isinstance(value, float) and value != value:
        return None
    return value


def arrow_table(rows: list[dict[str, Any]]):
    """JSON records as one Arrow table: the union of their keys in first-seen order (a record
    without a key has a missing value there); a column whose values mix types (a seed that is an
    int in one row and text in another) is written as text; an all-missing column as text."""
    import pyarrow as pa

    columns = list(dict.fromkeys(k for r in rows for k in r))
    arrays = {}
    for column in columns:
        values = [_cell(r.get(column)) for r in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
                             pa.string())
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        arrays[column] = array
    return pa.table(arrays)


def write_table(table: Table, folder: Path) -> tuple[Path, int]:
    """Write one table as ``folder/data/<name>.parquet`` (atomically); its path and row count.
    A stage's Parquet file is copied byte for byte."""
    import pyarrow.parquet as pq

    path = Path(folder) / DATA_DIR / f"{table.name}.parquet"
    if table.parquet is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a finished stage's file, copied whole into the export's temporary folder, which
        # appears under its final name only once complete (collapselab.export.run)
        shutil.copyfile(table.parquet, path)
        return path, pq.read_metadata(path).num_rows
    buffer = io.BytesIO()
    pq.write_table(arrow_table(table.rows or []), buffer)
    write_bytes(path, buffer.getvalue())
    return path, len(table.rows or [])


def write_tables(tables: dict[str, Table], folder: Path) -> dict[str, int]:
    """Write every table under ``folder``; rows per config name."""
    return {name: write_table(table, folder)[1] for name, table in tables.items()}
