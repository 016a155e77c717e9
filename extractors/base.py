"""The extractor contract shared by every source kind.

Staged Parquet layout (what every extractor writes and validation reads):

- one string column per catalog field, named by the field's ``name`` (the source's own
  column / header / JSON key is mapped through ``Field.source``); values are the source's
  text, trimmed, empty string -> null; dates/numbers from typed sources rendered as ISO text;
- ``_row`` (int64): 1-based position of the row in the delivery, the "row" in every error;
- ``_source`` (string): where the row came from (``table t_hjrk``, ``degrees.csv:line 12``,
  ``page 3``), for evidence in tickets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catalog.models import Resource, System
from datarail.interval import Interval


@dataclass(frozen=True)
class ConnInfo:
    """Connection details resolved from an Airflow connection, as plain data."""

    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConnInfo:
        extra = d.get("extra") or {}
        if isinstance(extra, str):
            import json
            extra = json.loads(extra) if extra else {}
        return cls(conn_type=d["conn_type"], host=d.get("host"), port=d.get("port"), login=d.get("login"),
                   password=d.get("password"), schema=d.get("schema"), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def redacted(self) -> dict[str, Any]:
        d = self.to_dict()
        if d.get("password"):
            d["password"] = "***"
        return d


@dataclass
class ExtractResult:
    """What one extraction staged; returned to the DAG as a small dict (``to_dict``)."""

    resource: str
    rows: int
    files: list[str]
    bytes: int
    duration_s: float
    watermark_before: str | None = None
    watermark_after: str | None = None
    columns: list[str] = field(default_factory=list)
    # rows read from the source: rows staged + rows a drift policy set aside (``drift``)
    rows_read: int | None = None
    chunks: int = 0
    engine: str | None = None  # sql read path (connectorx / sqlalchemy), files, http
    drift: dict[str, Any] | None = None
    source_schema: dict[str, str] | None = None  # field -> source type family (SQL)
    rejects_file: str | None = None
    key_range: dict[str, Any] | None = None
    source_files: list[dict[str, Any]] | None = None  # file drops: name, fingerprint, rows, status
    skipped: str | None = None  # why nothing was extracted on purpose (no new file): downstream skips

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.duration_s, 1) if self.duration_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


def extract_resource(resource: Resource, system: System, conn: ConnInfo, interval: Interval,
                     out_dir: Path, *, since: str | None = None, chunk_rows: int = 50_000, state: Any = None,
                     key_range: dict[str, Any] | None = None,
                     previous_schema: dict[str, str] | None = None) -> ExtractResult:
    """Extract ``resource`` from ``system`` into Parquet files under ``out_dir``.

    ``since``: for watermark resources, only rows whose watermark column is greater than
    this value (minus the resource's lookback) are read; rows at or after ``interval.end``
    are never read, so a rerun of the same interval stages the same rows.

    ``state`` (:class:`extractors.state.ExtractState`): file drops are fingerprinted and
    archived. ``key_range`` (SQL): extract one key range of a partitioned table.
    ``previous_schema`` (SQL): the source schema last seen, to detect retyped columns.
    """
    if system.kind == "sql":
        from extractors.sql import extract_sql
        return extract_sql(resource, conn, interval, Path(out_dir), since=since, chunk_rows=chunk_rows,
                           key_range=key_range, previous_schema=previous_schema)
    if system.kind == "file":
        from extractors.files import extract_files
        return extract_files(resource, conn, interval, Path(out_dir), since=since, chunk_rows=chunk_rows,
                             state=state)
    if system.kind == "http":
        from extractors.http import extract_http
        return extract_http(resource, conn, interval, Path(out_dir), since=since, chunk_rows=chunk_rows)
    raise ValueError(system.kind)  # pragma: no cover - the catalog model forbids other kinds
