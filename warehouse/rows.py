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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from catalog.models import Resource
from datarail.errors import WarehouseError

DATETIME_TEXT = "%Y-%m-%d %H:%M:%S.%f"
CHUNK_ROWS = 200_000  # rows rendered and staged per batch: bounds memory beyond the frame itself


def format_datetime(value: datetime) -> str:
    return value.strftime(DATETIME_TEXT)


def _as_arrow(series: pd.Series) -> pa.Array:
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array([None if _missing(v) else str(v) for v in series], type=pa.string())
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _missing(v) -> bool:
    return v is None or (not isinstance(v, (str, bytes)) and bool(pd.isna(v)))


def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _date_text(series: pd.Series, arr: pa.Array) -> pa.Array:
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
    parsed = pd.to_datetime(series, format="ISO8601") if series.dtype != object else pd.Series(
        [None if _missing(v) else (v if isinstance(v, (date, datetime)) else pd.Timestamp(str(v)[:10]))
         for v in series], dtype=object)
    return pa.array([None if _missing(v) else pd.Timestamp(v).strftime("%Y-%m-%d") for v in parsed],
                    type=pa.string())


def _datetime_text(series: pd.Series, arr: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is not None:
            arr = pc.cast(arr, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
        return pc.strftime(arr.cast(pa.timestamp("us")), format="%Y-%m-%d %H:%M:%S")
    if pa.types.is_date(arr.type):
        return pc.strftime(arr.cast(pa.timestamp("us")), format="%Y-%m-%d %H:%M:%S")
    if _is_text(arr):
        try:
            return pc.strftime(pc.strptime(arr, format="%Y-%m-%d %H:%M:%S", unit="us"), format="%Y-%m-%d %H:%M:%S")
        except pa.ArrowInvalid:
            pass
    parsed = pd.to_datetime(pd.Series(series, dtype=object), format="ISO8601")
    return _datetime_text(parsed, pa.array(parsed, from_pandas=True))


def _cast_text(arr: pa.Array, via: pa.DataType) -> pa.Array:
    return (arr if arr.type == via else arr.cast(via)).cast(pa.string())


def canonical_column(series: pd.Series, ftype: str, *, field: str = "", resource: str | None = None) -> pa.Array:
    """One field's values as canonical text (nulls stay null)."""
    arr = _as_arrow(series)
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
            return _date_text(series, arr)
        if ftype == "datetime":
            return _datetime_text(series, arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
        raise WarehouseError(f"value of field {field!r} does not render as {ftype}: {exc}", resource=resource,
                             field=field, hint="validation should have quarantined the row") from exc
    raise WarehouseError(f"unknown field type {ftype!r}", resource=resource, field=field)


def canonical_columns(resource: Resource, frame: pd.DataFrame) -> dict[str, pa.Array]:
    """Every field of ``resource`` in ``frame`` as canonical text, plus ``_row_hash``."""
    cols = {f.name: canonical_column(frame[f.name], f.type, field=f.name, resource=resource.code)
            for f in resource.fields}
    cols["_row_hash"] = row_hashes(list(cols.values()))
    return cols


def row_hashes(columns: list[pa.Array]) -> pa.Array:
    """sha256 hex of each row's canonical field texts joined by U+001F (null: U+0000)."""
    if not columns or len(columns[0]) == 0:
        return pa.array([], type=pa.string())
    joined = pc.binary_join_element_wise(*[c.cast(pa.string()) for c in columns], "\x1f",
                                         null_handling="replace", null_replacement="\x00")
    return pa.array([hashlib.sha256(s.encode()).hexdigest() for s in joined.to_pylist()], type=pa.string())


def batches(resource: Resource, frame: pd.DataFrame, meta: dict[str, str | None],
            chunk_rows: int = CHUNK_ROWS) -> Iterator[dict[str, pa.Array]]:
    """The frame in chunks of canonical columns: fields, ``_row_hash`` and the constant load
    metadata (``meta``: column -> text)."""
    for start in range(0, len(frame), chunk_rows):
        part = frame.iloc[start:start + chunk_rows]
        cols = canonical_columns(resource, part)
        for name, value in meta.items():
            cols[name] = pa.repeat(pa.scalar(value, type=pa.string()), len(part))
        yield cols
