"""One extraction run of one resource for one data interval, with its state and summary:
what ``datarail.pipeline.extract`` (and so the DAG's extract task) calls.

- the watermark to start from (:meth:`ExtractState.since`, reset-aware);
- the extraction itself (:func:`extractors.extract_resource`), file drops fingerprinted
  and archived;
- reconciliation: the rows the extractor counted must be the rows in the staged files, and
  ``rows_read = rows staged + rows a drift policy set aside``; a mismatch fails the run;
- snapshot resources: the row-hash diff against the last loaded interval (inserts,
  updates, deletes; changed keys in ``changes.parquet`` beside the staged files);
- the run summary (rows, bytes, duration, rows/s, watermark before and after, changes,
  drift, files) in ``meta.extract_runs``, returned as the task's value.

Large SQL tables with ``partition`` in the catalog are extracted as key ranges in parallel
(:func:`plan_parts`, :func:`extract_interval` with ``key_range`` per mapped task, then
:func:`merge_parts`, which renumbers ``_row`` while copying row groups: memory stays bounded).
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from catalog.models import Resource, System
from datarail.errors import ExtractError, ReconciliationError
from datarail.interval import Interval
from extractors.base import ConnInfo, ExtractResult, extract_resource
from extractors.staging import PARQUET_WRITE, clear_staging, parse_moment
from extractors.state import ExtractState

log = logging.getLogger(__name__)

PARTS_DIR = ".parts"


def _staged_rows(files: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in files)


def reconcile(resource: Resource, result: ExtractResult) -> None:
    """Fail unless every row read is staged or set aside, and the staged files hold exactly
    the rows the extractor counted."""
    in_files = _staged_rows(result.files)
    discarded = int((result.drift or {}).get("discarded_rows") or 0)
    read = result.rows_read if result.rows_read is not None else result.rows
    if in_files != result.rows or read != result.rows + discarded:
        raise ReconciliationError(
            f"read {read} rows, staged {result.rows} (+{discarded} set aside by the drift policy), "
            f"but the staged files hold {in_files}", unit=resource.unit, resource=resource.code,
            hint="no row may be lost between the source and staging; rerun the interval")


def extract_interval(engine: sa.Engine, resource: Resource, system: System, conn: ConnInfo, interval: Interval,
                     out_dir: Path, *, chunk_rows: int = 50_000, key_range: dict[str, Any] | None = None,
                     run_id: str | None = None) -> dict[str, Any]:
    """Extract ``resource`` for ``interval`` into ``out_dir`` and return the run summary.

    With ``key_range`` only that range is staged, under ``out_dir/.parts/<index>/``, and no
    state is written: :func:`merge_parts` finishes the run. On failure the run is recorded
    as failed (``meta.extract_runs`` and ``meta.runs``), nothing stays staged, and the
    committed watermark does not move.
    """
    from warehouse.load import record_failure

    state = ExtractState(engine)
    started_at = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.time()
    since = state.since(resource, interval) if resource.change_tracking.mode == "watermark" else None
    part = key_range is not None
    target = out_dir / PARTS_DIR / f"{int(key_range['index']):05d}" if part else out_dir
    previous = state.source_schema(resource.code) if system.kind == "sql" else None
    try:
        result = extract_resource(resource, system, conn, interval, target, since=since, chunk_rows=chunk_rows,
                                  state=state, key_range=key_range, previous_schema=previous)
        if not result.skipped:
            reconcile(resource, result)
    except (ExtractError, ReconciliationError) as exc:
        where = f"key range {key_range.get('index', 0) + 1}/{key_range.get('count', 1)}: " if part else ""
        state.record_run(resource, interval, {"watermark_before": since}, status="failed", error=where + str(exc),
                         started_at=started_at)
        record_failure(engine, resource, interval, run_id, where + str(exc))
        raise
    summary = result.to_dict()
    summary.update(interval_key=interval.key, unit=resource.unit, started_epoch=t0)
    if part:
        return summary
    return _finish(state, resource, interval, out_dir, summary, started_at)


def _finish(state: ExtractState, resource: Resource, interval: Interval, out_dir: Path, summary: dict[str, Any],
            started_at: datetime) -> dict[str, Any]:
    """Snapshot diff, source schema, run summary: the parts of a run written once per interval."""
    if summary.get("skipped"):
        summary["status"] = "skipped"
        state.record_run(resource, interval, summary, status="skipped", started_at=started_at)
        log.info("extract %s [%s]: skipped: %s", resource.code, interval.key, summary["skipped"])
        return summary
    if resource.change_tracking.mode == "snapshot":
        summary["changes"] = state.diff_snapshot(resource, interval, summary["files"], out_dir / "changes.parquet")
    if summary.get("source_schema"):
        state.save_source_schema(resource.code, summary["source_schema"])
    summary["status"] = "staged"
    state.record_run(resource, interval, summary, status="staged", started_at=started_at)
    log.info("extract %s [%s]: %d rows, %d bytes, %.2f s (%.0f rows/s), watermark %s -> %s%s", resource.code,
             interval.key, summary["rows"], summary["bytes"], summary["duration_s"], summary.get("rows_per_s") or 0,
             summary.get("watermark_before"), summary.get("watermark_after"),
             f", changes {summary['changes']}" if summary.get("changes") else "")
    return summary


def plan_parts(resource: Resource, system: System, conn: ConnInfo) -> list[dict[str, Any]]:
    """The key ranges of a partitioned SQL resource (one element: extract in one piece)."""
    if system.kind != "sql" or resource.partition is None:
        return [{}]
    from extractors.sql import plan_key_ranges

    ranges = plan_key_ranges(resource, conn)
    return [r.to_dict() for r in ranges] if len(ranges) > 1 else [{}]


def merge_parts(engine: sa.Engine, resource: Resource, interval: Interval, out_dir: Path,
                parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the staged key ranges into one delivery under ``out_dir`` (``_row`` renumbered in
    key order, row group by row group), then finish the run like an unpartitioned one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    state = ExtractState(engine)
    if len(parts) == 1 and not parts[0].get("key_range"):
        return dict(parts[0])  # extracted in one piece: that run already finished itself
    t0 = time.time()
    parts = sorted(parts, key=lambda p: p["key_range"]["index"])
    clear_staging(out_dir)
    files: list[str] = []
    rows = 0
    writer = None
    try:
        for p in parts:
            for f in p["files"]:
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    t = pf.read_row_group(g)
                    n = t.num_rows
                    if n == 0:
                        continue
                    import numpy as np
                    t = t.set_column(t.schema.get_field_index("_row"), "_row",
                                     pa.array(np.arange(rows + 1, rows + n + 1, dtype=np.int64)))
                    if writer is None:
                        final = out_dir / f"part-{len(files):05d}.parquet"
                        writer = pq.ParquetWriter(out_dir / f".{final.name}.inprogress", t.schema, **PARQUET_WRITE)
                    writer.write_table(t, row_group_size=n)
                    rows += n
        if writer is None:  # every range empty: one empty part keeps the columns readable
            schema = pq.read_schema(parts[0]["files"][0])
            writer = pq.ParquetWriter(out_dir / ".part-00000.parquet.inprogress", schema, **PARQUET_WRITE)
        writer.close()
        final = out_dir / "part-00000.parquet"
        (out_dir / ".part-00000.parquet.inprogress").replace(final)
        files.append(str(final))
    except BaseException:
        if writer is not None:
            writer.close()
        for leftover in out_dir.glob(".part-*.inprogress"):
            leftover.unlink()
        raise
    shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
    after = None
    for p in parts:
        wm = p.get("watermark_after")
        if wm is not None and (after is None or (parse_moment(wm) or datetime.min) > (parse_moment(after) or datetime.min)):
            after = wm
    first_start = min(p.get("started_epoch") or t0 for p in parts)
    read = sum(int(p.get("rows_read") or p["rows"]) for p in parts)
    discarded = sum(int((p.get("drift") or {}).get("discarded_rows") or 0) for p in parts)
    if rows != sum(int(p["rows"]) for p in parts) or read != rows + discarded:
        raise ReconciliationError(f"key ranges staged {sum(int(p['rows']) for p in parts)} rows, merged {rows}",
                                  unit=resource.unit, resource=resource.code)
    duration = round(time.time() - first_start, 3)
    summary = {**parts[0], "rows": rows, "rows_read": read, "files": files,
               "bytes": sum(Path(f).stat().st_size for f in files), "duration_s": duration,
               "rows_per_s": round(rows / duration, 1) if duration else 0.0,
               "chunks": sum(int(p.get("chunks") or 0) for p in parts), "watermark_after": after,
               "parts": len(parts), "key_range": None,
               "part_durations_s": [p.get("duration_s") for p in parts]}
    log.info("extract %s [%s]: merged %d key ranges, %d rows in %.2f s", resource.code, interval.key, len(parts),
             rows, time.time() - t0)
    return _finish(state, resource, interval, out_dir, summary, datetime.now(UTC).replace(tzinfo=None))


__all__ = ["PARTS_DIR", "extract_interval", "merge_parts", "plan_parts", "reconcile"]
