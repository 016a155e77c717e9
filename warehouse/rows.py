"""Delivered rows in their canonical text form, column at a time (Arrow), and their row hash.

Every field value is rendered ONE way whatever the frame holds (staged text, or the typed
values validation returns: ``datetime.date``, ``datetime64``, ``Int64``, floats, bools):

| type | canonical text |
|---|---|
| string | the value |
| integer | decimal digits |
| decimal | shortest round-trip float text (``1.5``, ``100``) |
| boolean | ``true`` / ``false`` |
| date | ``YYYY-MM-DD`` |
| datetime | ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's SQLite storage format; PostgreSQL parses it) |

The same text feeds the row hash (``_row_hash``: sha256 of the field texts joined by
``\\x1f``, null as ``\\x00``), PostgreSQL's ``COPY`` and SQLite's inserts, so a value hashes
the same however it arrived, and nothing is converted row by row in Python except the hash.

A load reads its rows as a :class:`Delivery`: the validated (or staged) Parquet files, batch
by batch, so memory is bounded by the batch size whatever the size of the delivery; an
in-memory frame (tests, tools) is accepted too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.models import Resource
from datarail.errors import WarehouseError

DATETIME_TEXT = "%Y-%m-%d %H:%M:%S.%f"
CHUNK_ROWS = 25_000  # rows rendered and staged per batch: what a load holds in memory


def format_datetime(value: datetime) -> str:
    return value.strftime(DATETIME_TEXT)


def _as_arrow(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    else:
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _as_series(values: pd.Series | pa.Array) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values.to_pylist(), dtype=object)


def _missing(v) -> bool:
    return v is None or (not isinstance(v, (str, bytes)) and bool(pd.isna(v)))


def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _timestamp_text(arr: pa.Array) -> pa.Array:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` of a timestamp array (a cast: Arrow renders microsecond
    timestamps exactly so, ten times faster than ``strftime``)."""
    if arr.type.tz is not None:
        arr = pc.cast(arr, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    return arr.cast(pa.timestamp("us")).cast(pa.string())


def _date_text(values, arr: pa.Array) -> pa.Array:
    if pa.types.is_date(arr.type):
        return arr.cast(pa.date32()).cast(pa.string())
    if pa.types.is_timestamp(arr.type):
        return arr.cast(pa.timestamp("us")).cast(pa.date32()).cast(pa.string())
    if _is_text(arr):
        try:
            return pc.strptime(pc.utf8_slice_codeunits(arr, 0, 10), format="%Y-%m-%d", unit="s").cast(
                pa.date32()).cast(pa.string())
        except pa.ArrowInvalid:
            pass
    series = _as_series(values)
    parsed = pd.to_datetime(series, format="ISO8601") if series.dtype != object else pd.Series(
        [None if _missing(v) else (v if isinstance(v, (date, datetime)) else pd.Timestamp(str(v)[:10]))
         for v in series], dtype=object)
    return pa.array([None if _missing(v) else pd.Timestamp(v).strftime("%Y-%m-%d") for v in parsed],
                    type=pa.string())


def _datetime_text(values, arr: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(arr.type):
        return _timestamp_text(arr)
    if pa.types.is_date(arr.type):
        return _timestamp_text(arr.cast(pa.timestamp("us")))
    if _is_text(arr):
        try:
            return _timestamp_text(pc.strptime(arr, format="%Y-%m-%d %H:%M:%S", unit="us"))
        except pa.ArrowInvalid:
            pass
    parsed = pd.to_datetime(pd.Series(_as_series(values), dtype=object), format="ISO8601")
    return _datetime_text(parsed, pa.array(parsed, from_pandas=True))


def _cast_text(arr: pa.Array, via: pa.DataType) -> pa.Array:
    return (arr if arr.type == via else arr.cast(via)).cast(pa.string())


def canonical_column(values: pd.Series | pa.Array | pa.ChunkedArray, ftype: str, *, field: str = "",
                     resource: str | None = None) -> pa.Array:
    """One field's values (a pandas Series or an Arrow array) as canonical text (nulls stay
    null)."""
    arr = _as_arrow(values)
    try:
        if ftype == "string":
            return arr if _is_text(arr) else arr.cast(pa.string())
        if ftype == "integer":
            if _is_text(arr):
                arr = arr.cast(pa.float64()) if pc.any(pc.match_substring(arr, ".")).as_py() else arr
            return _cast_text(arr.cast(pa.int64()), pa.int64())
        if ftype == "decimal":
            return _cast_text(arr, pa.float64())
        if ftype == "boolean":
            return _cast_text(arr, pa.bool_())
        if ftype == "date":
            return _date_text(values, arr)
        if ftype == "datetime":
            return _datetime_text(values, arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
        raise WarehouseError(f"value of field {field!r} does not render as {ftype}: {exc}", resource=resource,
                             field=field, hint="validation should have quarantined the row") from exc
    raise WarehouseError(f"unknown field type {ftype!r}", resource=resource, field=field)


def canonical_columns(resource: Resource, frame: pd.DataFrame | pa.Table) -> dict[str, pa.Array]:
    """Every field of ``resource`` in ``frame`` (pandas or Arrow) as canonical text, plus
    ``_row_hash``."""
    get = frame.column if isinstance(frame, pa.Table) else frame.__getitem__
    cols = {f.name: canonical_column(get(f.name), f.type, field=f.name, resource=resource.code)
            for f in resource.fields}
    cols["_row_hash"] = row_hashes(list(cols.values()))
    return cols


def row_hashes(columns: list[pa.Array]) -> pa.Array:
    """sha256 hex of each row's canonical field texts joined by U+001F (null: U+0000).

    Hashes slices of the joined column's UTF-8 buffer directly (no Python string per row)."""
    if not columns or len(columns[0]) == 0:
        return pa.array([], type=pa.string())
    joined = pc.binary_join_element_wise(*[c.cast(pa.string()) for c in columns], "\x1f",
                                         null_handling="replace", null_replacement="\x00")
    joined = joined.cast(pa.large_string()) if joined.nbytes >= 2**31 - 1 else joined
    width = np.int64 if pa.types.is_large_string(joined.type) else np.int32
    _, offsets, data = joined.buffers()
    bounds = np.frombuffer(offsets, dtype=width)[joined.offset:joined.offset + len(joined) + 1].tolist()
    view = memoryview(data) if data is not None else memoryview(b"")
    sha = hashlib.sha256
    return pa.array([sha(view[a:b]).hexdigest() for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                    type=pa.string())


class Delivery:
    """The passing rows of one delivery, read batch by batch.

    ``source``: Parquet files (the validated ``passed.parquet``, or staged parts; read a row
    group at a time, so memory is bounded by the batch size) or, for tests and tools, an
    in-memory pandas frame or Arrow table. ``columns``: the columns to read (catalog fields;
    others in the files are ignored)."""

    def __init__(self, source: pd.DataFrame | pa.Table | Sequence[str | Path] | str | Path,
                 columns: Sequence[str] | None = None):
        if isinstance(source, (str, Path)):
            source = [source]
        self.source = source
        self.columns = list(columns) if columns is not None else None
        if isinstance(source, (pd.DataFrame, pa.Table)):
            self.rows = len(source)
        else:
            self.rows = sum(pq.ParquetFile(f).metadata.num_rows for f in source)

    def __len__(self) -> int:
        return self.rows

    def tables(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame | pa.Table]:
        """The rows in pieces of at most ``chunk_rows``."""
        chunk_rows = chunk_rows or CHUNK_ROWS
        src = self.source
        if isinstance(src, (pd.DataFrame, pa.Table)):
            for start in range(0, len(src), chunk_rows):
                yield src.iloc[start:start + chunk_rows] if isinstance(src, pd.DataFrame) else src.slice(
                    start, chunk_rows)
            return
        pool = pa.default_memory_pool()
        for path in src:
            # No pre-buffering, one thread: a row group at a time (pre-buffered, threaded reads
            # hold several column chunks at once: ~60 MB more for the same throughput here).
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            cols = None if self.columns is None else [c for c in self.columns if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols, use_threads=False):
                yield pa.Table.from_batches([batch])
                pool.release_unused()


def batches(resource: Resource, rows: pd.DataFrame | Delivery,
            chunk_rows: int | None = None) -> Iterator[dict[str, pa.Array]]:
    """The delivery in chunks of canonical columns: the fields and ``_row_hash`` (the load
    metadata is the same for every row: the merge writes it as constants)."""
    delivery = rows if isinstance(rows, Delivery) else Delivery(rows)
    for part in delivery.tables(chunk_rows or CHUNK_ROWS):
        yield canonical_columns(resource, part)
