"""Extraction state in the warehouse's meta area (migration ``0002_extraction_state.sql``).

- **watermark**: the committed watermark is ``meta.runs.watermark_after`` of the latest
  LOADED run of an earlier interval (written in the load's own transaction, so a failed
  extract or load never moves it). ``datarail state reset`` records a reset in
  ``meta.extract_state``: runs finished before it no longer count, and the next run starts
  from the reset's watermark (or from scratch).
- **snapshot hashes**: per interval, the hash of every row a snapshot resource staged
  (``meta.snapshot_hashes``); the next interval diffs against the latest loaded earlier
  interval and reports inserts, updates and deletes. The diff is SQL in the warehouse
  (``warehouse_sql/extract/``): memory does not grow with the snapshot.
- **file ingests**: every file seen in a drop folder, by sha256 fingerprint
  (``meta.file_ingests``): a file is ingested by one interval only, never twice.
- **source schema**: the type family of every source column last seen (drift detection).
- **run summaries**: ``meta.extract_runs``, one row per resource and interval.

Keyed by the data interval throughout: a retry or backfill of an interval reads the same
baseline and gives the same result.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from catalog.models import Resource
from datarail.interval import Interval

log = logging.getLogger(__name__)

_SEP = "\x1f"
_NULL = "\x00"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def row_hash(values: Iterable[str | None]) -> str:
    """The content hash of one staged row (its field texts; null differs from '')."""
    text = _SEP.join(_NULL if v is None else v for v in values)
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def row_key(values: Iterable[str | None]) -> str:
    """The primary key of a staged row as JSON text (the quarantine's ``key`` form)."""
    return json.dumps(list(values), ensure_ascii=False)


def file_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ExtractState:
    """Read and write the extraction state of one warehouse (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    # ---------------------------------------------------------------- watermark and reset

    def reset_info(self, resource: str) -> dict[str, Any] | None:
        """The resource's ``meta.extract_state`` row, if any."""
        with self.engine.connect() as c:
            row = c.execute(sa.text("SELECT resource, reset_at, reset_watermark, source_schema, updated_at "
                                    "FROM meta.extract_state WHERE resource = :r"), {"r": resource}).mappings().first()
        return dict(row) if row else None

    def since(self, resource: Resource, interval: Interval) -> str | None:
        """The watermark a run of ``interval`` starts from: ``watermark_after`` of the latest
        loaded run of an EARLIER interval finished after the last reset; else the reset's
        watermark; else ``None`` (from scratch)."""
        info = self.reset_info(resource.code) or {}
        sql = ("SELECT watermark_after FROM meta.runs WHERE resource = :r AND status = 'loaded' "
               "AND interval_end <= :start AND watermark_after IS NOT NULL")
        params: dict[str, Any] = {"r": resource.code, "start": interval.start.astimezone(UTC).replace(tzinfo=None)}
        if info.get("reset_at") is not None:
            sql += " AND finished_at >= :reset"
            params["reset"] = info["reset_at"]
        with self.engine.connect() as c:
            row = c.execute(sa.text(sql + " ORDER BY interval_end DESC LIMIT 1"), params).first()
        if row:
            return row[0]
        return info.get("reset_watermark")

    def reset(self, resource: str, *, watermark: str | None = None, forget_files: bool = False,
              forget_snapshots: bool = True) -> dict[str, Any]:
        """Reset a resource's state: the next run starts from ``watermark`` (or from scratch);
        snapshot hashes are dropped (the next snapshot diff counts every row as inserted);
        with ``forget_files`` the file fingerprints too (files may be ingested again)."""
        now = _now()
        out: dict[str, Any] = {"resource": resource, "reset_at": now.isoformat(sep=" "), "watermark": watermark}
        with self.engine.begin() as c:
            c.execute(sa.text("DELETE FROM meta.extract_state WHERE resource = :r"), {"r": resource})
            c.execute(sa.text("INSERT INTO meta.extract_state (resource, reset_at, reset_watermark, source_schema, "
                              "updated_at) VALUES (:r, :t, :w, NULL, :t)"), {"r": resource, "t": now, "w": watermark})
            if forget_snapshots:
                out["snapshot_rows_dropped"] = c.execute(sa.text(
                    "DELETE FROM meta.snapshot_hashes WHERE resource = :r"), {"r": resource}).rowcount
            if forget_files:
                out["files_forgotten"] = c.execute(sa.text(
                    "DELETE FROM meta.file_ingests WHERE resource = :r"), {"r": resource}).rowcount
        log.warning("extraction state of %s reset (watermark %s)", resource, watermark or "none: from scratch")
        return out

    # ---------------------------------------------------------------- source schema

    def source_schema(self, resource: str) -> dict[str, str] | None:
        """field -> source type family, as last seen."""
        info = self.reset_info(resource)
        return json.loads(info["source_schema"]) if info and info.get("source_schema") else None

    def save_source_schema(self, resource: str, schema: dict[str, str]) -> None:
        """Remember this delivery's source schema (keeps the reset marker)."""
        now = _now()
        with self.engine.begin() as c:
            n = c.execute(sa.text("UPDATE meta.extract_state SET source_schema = :s, updated_at = :t "
                                  "WHERE resource = :r"),
                          {"r": resource, "s": json.dumps(schema, sort_keys=True), "t": now}).rowcount
            if not n:
                c.execute(sa.text("INSERT INTO meta.extract_state (resource, source_schema, updated_at) "
                                  "VALUES (:r, :s, :t)"), {"r": resource, "s": json.dumps(schema, sort_keys=True),
                                                           "t": now})

    # ---------------------------------------------------------------- run summaries

    def record_run(self, resource: Resource, interval: Interval, summary: dict[str, Any] | None, *,
                   status: str, error: str | None = None, started_at: datetime | None = None) -> dict[str, Any]:
        """Write this interval's extraction summary to ``meta.extract_runs`` (replacing an
        earlier attempt); return the row."""
        s = summary or {}
        changes = s.get("changes") or {}
        row = {
            "resource": resource.code, "interval_key": interval.key, "unit": resource.unit, "status": status,
            "engine": s.get("engine"), "rows_read": int(s.get("rows_read") or s.get("rows") or 0),
            "rows_staged": int(s.get("rows") or 0),
            "rows_discarded": int((s.get("drift") or {}).get("discarded_rows") or 0),
            "chunks": int(s.get("chunks") or 0), "staged_bytes": int(s.get("bytes") or 0),
            "duration_s": s.get("duration_s"), "rows_per_s": s.get("rows_per_s"),
            "watermark_before": s.get("watermark_before"), "watermark_after": s.get("watermark_after"),
            "inserted": changes.get("inserted"), "updated": changes.get("updated"),
            "deleted": changes.get("deleted"), "unchanged": changes.get("unchanged"),
            "parts": int(s.get("parts") or 1),
            "drift": json.dumps(s["drift"], ensure_ascii=False) if s.get("drift") else None,
            "source_files": json.dumps(s["source_files"], ensure_ascii=False) if s.get("source_files") else None,
            "error": (error or "")[:4000] or None, "started_at": started_at, "finished_at": _now(),
        }
        with self.engine.begin() as c:
            c.execute(sa.text("DELETE FROM meta.extract_runs WHERE resource = :r AND interval_key = :k"),
                      {"r": resource.code, "k": interval.key})
            c.execute(sa.text("INSERT INTO meta.extract_runs (" + ", ".join(row) + ") VALUES ("
                              + ", ".join(f":{k}" for k in row) + ")"), row)
        return row

    def runs(self, resource: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Latest extraction summaries, newest interval first."""
        sql = "SELECT * FROM meta.extract_runs"
        params: dict[str, Any] = {"n": limit}
        if resource:
            sql += " WHERE resource = :r"
            params["r"] = resource
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(sa.text(sql + " ORDER BY interval_key DESC, resource LIMIT :n"),
                                               params).mappings()]

    # ---------------------------------------------------------------- snapshot diff

    def baseline_interval(self, resource: str, interval: Interval) -> str | None:
        """The interval a snapshot of ``interval`` is diffed against: the latest loaded earlier one
        (after the last reset) that has hashes."""
        info = self.reset_info(resource) or {}
        sql = ("SELECT r.interval_key FROM meta.runs r WHERE r.resource = :r AND r.status = 'loaded' "
               "AND r.interval_end <= :start AND EXISTS (SELECT 1 FROM meta.snapshot_hashes h "
               "WHERE h.resource = r.resource AND h.interval_key = r.interval_key)")
        params: dict[str, Any] = {"r": resource, "start": interval.start.astimezone(UTC).replace(tzinfo=None)}
        if info.get("reset_at") is not None:
            sql += " AND r.finished_at >= :reset"
            params["reset"] = info["reset_at"]
        with self.engine.connect() as c:
            row = c.execute(sa.text(sql + " ORDER BY r.interval_end DESC LIMIT 1"), params).first()
        return row[0] if row else None

    def diff_snapshot(self, resource: Resource, interval: Interval, files: list[str],
                      changes_path: Path | None = None, *, batch_rows: int = 50_000) -> dict[str, Any]:
        """Hash every staged row, store this interval's hashes, diff them against the baseline
        interval in the warehouse; return counts (``inserted``, ``updated``, ``deleted``,
        ``unchanged``, ``baseline_interval``) and write the changed keys to ``changes_path``
        (Parquet: ``key``, ``change``).

        Memory-bounded: the staged files are hashed ``batch_rows`` rows at a time and streamed
        into a temporary table (PostgreSQL: COPY); storing (a key staged twice keeps its last
        row), counting and listing the changes are SQL in ``warehouse_sql/extract/`` joining
        the two intervals' rows of ``meta.snapshot_hashes`` on its primary key; the changed
        keys stream back in batches. Nothing holds a whole snapshot. One transaction: a
        failure stores nothing.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from warehouse.engine import transaction
        from warehouse.sqlfiles import query_file, run_file, sql_path, statements

        names = [f.name for f in resource.fields]
        base_key = self.baseline_interval(resource.code, interval)
        params = {"resource": resource.code, "interval_key": interval.key, "baseline": base_key}
        counts = {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0}
        hashed = 0
        with transaction(self.engine) as c:
            run_file(c, "extract/snapshot_incoming")
            for path in files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=names):
                    cols = [batch.column(n).to_pylist() for n in names]
                    keys = [batch.column(k).to_pylist() for k in resource.primary_key]
                    rows = [(hashed + i, row_key(key), row_hash(vals)) for i, (vals, key)
                            in enumerate(zip(zip(*cols, strict=True), zip(*keys, strict=True), strict=True))]
                    _insert_incoming(c, rows)
                    hashed += len(rows)
            run_file(c, "extract/snapshot_store", params)
            stored = int(query_file(c, "extract/snapshot_stored", params)[0]["n"])
            # One pass over the diff: the changed keys are counted as they stream (and written
            # when asked for); the unchanged ones are the rest of what was stored.
            schema = pa.schema([("key", pa.string()), ("change", pa.string())])
            (stmt,) = statements(sql_path("extract/snapshot_diff").read_text(encoding="utf-8"))
            result = c.execution_options(stream_results=True, yield_per=batch_rows).execute(sa.text(stmt), params)
            out = pq.ParquetWriter(changes_path, schema) if changes_path is not None else None
            try:
                for part in result.partitions():
                    changes = [r[1] for r in part]
                    for change in changes:
                        counts[change] += 1
                    if out is not None:
                        out.write_table(pa.table({"key": [r[0] for r in part], "change": changes}, schema=schema))
            finally:
                if out is not None:
                    out.close()
                result.close()
            counts["unchanged"] = stored - counts["inserted"] - counts["updated"]
        log.info("resource %s [%s]: snapshot diff of %d rows against %s: %d inserted, %d updated, %d deleted, "
                 "%d unchanged", resource.code, interval.key, hashed, base_key or "nothing (first snapshot)",
                 counts["inserted"], counts["updated"], counts["deleted"], counts["unchanged"])
        return {**counts, "baseline_interval": base_key}

    # ---------------------------------------------------------------- file ingests

    def file_seen(self, resource: str, fingerprint: str) -> dict[str, Any] | None:
        """The ingest record of a file fingerprint, if the file was seen before."""
        with self.engine.connect() as c:
            row = c.execute(sa.text("SELECT * FROM meta.file_ingests WHERE resource = :r AND fingerprint = :f"),
                            {"r": resource, "f": fingerprint}).mappings().first()
        return dict(row) if row else None

    def record_file(self, resource: str, fingerprint: str, *, file_name: str, size_bytes: int, interval_key: str,
                    status: str, reason: str | None = None, archived_to: str | None = None,
                    rows_staged: int | None = None) -> None:
        """Insert or replace the ingest record of one file."""
        with self.engine.begin() as c:
            c.execute(sa.text("DELETE FROM meta.file_ingests WHERE resource = :r AND fingerprint = :f"),
                      {"r": resource, "f": fingerprint})
            c.execute(sa.text(
                "INSERT INTO meta.file_ingests (resource, fingerprint, file_name, size_bytes, interval_key, status, "
                "reason, archived_to, rows_staged, seen_at) VALUES (:r, :f, :n, :s, :k, :st, :re, :a, :rows, :t)"),
                {"r": resource, "f": fingerprint, "n": file_name, "s": size_bytes, "k": interval_key, "st": status,
                 "re": (reason or "")[:4000] or None, "a": archived_to, "rows": rows_staged, "t": _now()})

    def last_processed(self, resource: str) -> dict[str, Any] | None:
        """The most recently ingested file of the resource, if any."""
        with self.engine.connect() as c:
            row = c.execute(sa.text("SELECT * FROM meta.file_ingests WHERE resource = :r AND status = 'processed' "
                                    "ORDER BY seen_at DESC LIMIT 1"), {"r": resource}).mappings().first()
        return dict(row) if row else None

    def files(self, resource: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Latest file ingests, newest first."""
        sql = "SELECT * FROM meta.file_ingests"
        params: dict[str, Any] = {"n": limit}
        if resource:
            sql += " WHERE resource = :r"
            params["r"] = resource
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(sa.text(sql + " ORDER BY seen_at DESC LIMIT :n"), params).mappings()]


def _insert_incoming(c: sa.Connection, rows: list[tuple[int, str, str]]) -> None:
    """One batch of (seq, row_key, row_hash) into the temporary ``snapshot_incoming``."""
    if not rows:
        return
    if c.dialect.name == "postgresql":
        # DIALECT: COPY is several times faster than INSERT for a million hashes.
        buf = io.StringIO()
        for seq, k, h in rows:
            buf.write(f"{seq}\t{_copy_text(k)}\t{h}\n")
        buf.seek(0)
        cur = c.connection.dbapi_connection.cursor()
        cur.copy_expert("COPY snapshot_incoming (seq, row_key, row_hash) FROM STDIN", buf)
        cur.close()
    else:
        c.exec_driver_sql("INSERT INTO snapshot_incoming (seq, row_key, row_hash) VALUES (?, ?, ?)", rows)


def _copy_text(value: str) -> str:
    """A value in PostgreSQL COPY text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


__all__ = ["ExtractState", "file_fingerprint", "row_hash", "row_key"]
