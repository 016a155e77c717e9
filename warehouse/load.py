"""Load one validated delivery into the warehouse, atomically and idempotently.

In ONE transaction: merge passing rows into ``ods.<table>`` by primary key, keeping the
previous version of every changed or deleted row in ``ods.<table>_history`` (a row whose
content hash is unchanged is not touched; the set-based merge is :mod:`warehouse.merge`);
for snapshot resources close keys the source no longer delivers; replace this interval's
quarantine rows and check results; record the run (``meta.runs``) and the load
(``meta.loads``). A failure anywhere, a dropped connection or a killed process included,
rolls all of it back, and rerunning the same interval gives the same state.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, date, datetime

import pandas as pd
import sqlalchemy as sa

from catalog.models import Resource
from datarail.errors import ReconciliationError
from datarail.interval import Interval
from warehouse.engine import is_sqlite, transaction
from warehouse.merge import merge
from warehouse.rows import Delivery, batches, canonical_columns, format_datetime
from warehouse.tables import ensure_ods

log = logging.getLogger(__name__)


def _py(value, ftype: str):
    """A pandas cell as the Python value the driver binds."""
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    if ftype == "date":
        if isinstance(value, (pd.Timestamp, datetime)):
            return value.date()
        return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    if ftype == "datetime":
        return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    if ftype == "integer":
        return int(value)
    if ftype == "decimal":
        return float(value)
    if ftype == "boolean":
        return bool(value)
    return str(value)


def rows_for_insert(resource: Resource, frame: pd.DataFrame) -> list[dict]:
    """Passing rows as dicts of canonical field texts plus their row hash (small frames,
    tests and tools; loads stage whole columns, :mod:`warehouse.rows`)."""
    cols = canonical_columns(resource, frame)
    names = list(cols)
    columns = [cols[n].to_pylist() for n in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


# Fault-injection points for the atomicity tests: name -> callable(conn). Production code
# never sets them; tests kill the process or drop the connection from inside a load.
HOOKS: dict = {}


def _checkpoint(name: str, conn: sa.Connection) -> None:
    hook = HOOKS.get(name)
    if hook is not None:
        hook(conn)


def _quarantined_keys(resource: Resource, quarantined: pd.DataFrame) -> list[tuple]:
    if not len(quarantined):
        return []
    keys = [tuple(json.loads(k)) if k.startswith("[") else (k,) for k in quarantined["key"].dropna().astype(str)]
    return sorted(set(_coerce_keys(resource, keys)), key=str)


def load_delivery(engine: sa.Engine, resource: Resource, *, interval: Interval, run_id: str | None,
                  passed: Delivery | pd.DataFrame, quarantined: pd.DataFrame, checks: list[dict],
                  extracted: int, extract_summary: dict, latest_update: str | None) -> dict:
    """Load one resource's validated delivery for one interval; return the run record.

    ``passed``: the passing rows, a :class:`~warehouse.rows.Delivery` (the validated Parquet,
    read batch by batch: memory stays bounded whatever the delivery's size) or a frame.
    ONE transaction: stage the passing rows (COPY on PostgreSQL), merge them into
    ``ods.<table>`` keeping previous versions in ``ods.<table>_history`` (see
    :mod:`warehouse.merge`), close keys a snapshot no longer delivers, replace this interval's
    quarantine rows and check results, record the run and the load (``meta.loads``)."""
    t0 = time.perf_counter()
    if extracted != len(passed) + len(quarantined):
        raise ReconciliationError(
            f"extracted {extracted} rows but validation returned {len(passed)} passed + "
            f"{len(quarantined)} quarantined", unit=resource.unit, resource=resource.code,
            hint="no row may be lost between staging and load; rerun the interval")
    ods, hist = ensure_ods(engine, resource)
    now = datetime.now(UTC).replace(tzinfo=None)
    valid_from = interval.start.astimezone(UTC).replace(tzinfo=None)
    meta = {"_run_id": run_id, "_interval_key": interval.key, "_loaded_at": format_datetime(now),
            "_valid_from": format_datetime(valid_from)}
    # A delivery refused by a blocking delivery-level check (quality: a tenth of the usual
    # volume) is all quarantined; it must not close the keys it lacks either.
    refused = any(c.get("scope") == "dataset" and c.get("kind") != "unique" and c["failed"]
                  and c["severity"] == "blocking" for c in checks)
    snapshot = resource.change_tracking.mode == "snapshot" and not refused
    keep = _quarantined_keys(resource, quarantined) if snapshot else []
    warned = sum(c["failed"] for c in checks if c["severity"] == "warning")
    record = {
        "resource": resource.code, "interval_key": interval.key, "unit": resource.unit,
        "interval_start": interval.start.replace(tzinfo=None), "interval_end": interval.end.replace(tzinfo=None),
        "run_id": run_id, "status": "loaded", "extracted": extracted, "loaded": len(passed),
        "quarantined": len(quarantined), "warned": warned,
        "staged_bytes": extract_summary.get("bytes", 0), "duration_s": extract_summary.get("duration_s"),
        "watermark_before": extract_summary.get("watermark_before"),
        "watermark_after": extract_summary.get("watermark_after"), "latest_update": latest_update,
        "error": None, "finished_at": now,
    }
    params = {"r": resource.code, "k": interval.key}
    with transaction(engine) as conn:
        _checkpoint("begin", conn)
        later = _later_interval_loaded(conn, resource, interval)
        if snapshot and later:
            # A backfill: the later snapshot already said which keys exist; a key missing from
            # this older one must not close a version a newer delivery confirmed.
            log.info("%s [%s]: a later interval is loaded; this backfill closes no keys", resource.code,
                     interval.key)
            snapshot = False
        stats, method = merge(conn, resource, ods, hist, batches(resource, passed), keep, snapshot=snapshot,
                              params={"vf": valid_from, "run": run_id, "k": interval.key, "now": now},
                              late_possible=later, constants=meta)
        _checkpoint("merged", conn)
        conn.execute(sa.text("DELETE FROM quality.quarantine WHERE resource = :r AND interval_key = :k"), params)
        if len(quarantined):
            conn.execute(sa.text(
                "INSERT INTO quality.quarantine (resource, interval_key, row_num, row_key, reasons, record) "
                "VALUES (:r, :k, :row_num, :row_key, :reasons, :record)"),
                [{**params, "row_num": int(q["_row"]), "row_key": q["key"], "reasons": q["reasons"],
                  "record": q["record"]} for q in quarantined.to_dict("records")])
        conn.execute(sa.text("DELETE FROM quality.check_results WHERE resource = :r AND interval_key = :k"), params)
        insert_check_results(conn, resource.code, interval.key, checks)
        conn.execute(sa.text("DELETE FROM meta.runs WHERE resource = :r AND interval_key = :k"), params)
        conn.execute(sa.text(
            "INSERT INTO meta.runs (" + ", ".join(record) + ") VALUES (" + ", ".join(f":{k}" for k in record) + ")"),
            record)
        duration = round(time.perf_counter() - t0, 3)
        conn.execute(sa.text(
            "INSERT INTO meta.loads (load_id, resource, interval_key, run_id, method, rows_in, inserted, updated, "
            "unchanged, deleted, late, quarantined, valid_from, loaded_at, duration_s) VALUES (:id, :r, :k, :run, "
            ":method, :rows_in, :inserted, :updated, :unchanged, :deleted, :late, :q, :vf, :now, :d)"
        ).bindparams(sa.bindparam("vf", type_=sa.DateTime()), sa.bindparam("now", type_=sa.DateTime())),
            {**params, **stats.as_dict(), "id": uuid.uuid4().hex, "run": run_id, "method": method,
             "q": len(quarantined), "vf": valid_from, "now": now, "d": duration})
        _checkpoint("before_commit", conn)
    log.info("loaded %s [%s] by %s: %d in, %d inserted, %d updated, %d unchanged, %d late, %d deleted, "
             "%d quarantined in %.2f s", resource.code, interval.key, method, stats.rows_in, stats.inserted,
             stats.updated, stats.unchanged, stats.late, stats.deleted, len(quarantined), duration)
    return {**record, **stats.as_dict(), "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(), "finished_at": now.isoformat()}


def _later_interval_loaded(conn: sa.Connection, resource: Resource, interval: Interval) -> bool:
    return conn.execute(sa.text(
        "SELECT 1 FROM meta.runs WHERE resource = :r AND status = 'loaded' AND interval_start > :s LIMIT 1"),
        {"r": resource.code, "s": interval.start.replace(tzinfo=None)}).first() is not None


def insert_check_results(conn: sa.Connection, resource_code: str, interval_key: str, checks: list[dict]) -> None:
    """Insert check results of one interval (counts, failure percent, masked keys and sample);
    the caller deleted the rows they replace, in the same transaction."""
    if not checks:
        return
    conn.execute(sa.text(
        "INSERT INTO quality.check_results (resource, interval_key, check_id, field, severity, rule, "
        "evaluated, failed, failed_pct, failed_keys, sample) VALUES (:r, :k, :check_id, :field, :severity, :rule, "
        ":evaluated, :failed, :failed_pct, :failed_keys, :sample)"),
        [{"r": resource_code, "k": interval_key, "check_id": c["check_id"], "field": c.get("field"),
          "severity": c["severity"], "rule": c["rule"], "evaluated": c["evaluated"], "failed": c["failed"],
          "failed_pct": 100.0 * c["failed"] / c["evaluated"] if c["evaluated"] else None,
          "failed_keys": json.dumps(c["failed_keys"], ensure_ascii=False),
          "sample": json.dumps(c["sample"], ensure_ascii=False, default=str)} for c in checks])


def _coerce_keys(resource: Resource, keys: list[tuple]) -> list[tuple]:
    """Quarantined keys arrive as text; bind them with the key columns' types."""
    types = [resource.field(k).type for k in resource.primary_key]
    out = []
    for key in keys:
        try:
            out.append(tuple(_py(v, t) for v, t in zip(key, types, strict=True)))
        except (ValueError, TypeError):
            continue  # an uncoercible quarantined key cannot match a stored row
    return out


def previous_watermark(engine: sa.Engine, resource: Resource, interval: Interval) -> str | None:
    """The watermark a run of ``interval`` starts from: the latest one reached by a run of an
    EARLIER interval, so that rerunning an interval reads the same rows again."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT watermark_after FROM meta.runs WHERE resource = :r AND status = 'loaded' "
            "AND interval_end <= :start AND watermark_after IS NOT NULL "
            "ORDER BY interval_end DESC LIMIT 1"),
            {"r": resource.code, "start": interval.start.replace(tzinfo=None)}).first()
    return row[0] if row else None


def record_failure(engine: sa.Engine, resource: Resource, interval: Interval, run_id: str | None,
                   error: str) -> None:
    """Record a failed run (the previous load, if any, stays as it was)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM meta.runs WHERE resource = :r AND interval_key = :k AND status <> 'loaded'"),
                     {"r": resource.code, "k": interval.key})
        exists = conn.execute(sa.text("SELECT 1 FROM meta.runs WHERE resource = :r AND interval_key = :k"),
                              {"r": resource.code, "k": interval.key}).first()
        if not exists:
            conn.execute(sa.text(
                "INSERT INTO meta.runs (resource, interval_key, unit, interval_start, interval_end, run_id, status, "
                "error, finished_at) VALUES (:r, :k, :u, :s, :e, :run, 'failed', :err, :t)"),
                {"r": resource.code, "k": interval.key, "u": resource.unit,
                 "s": interval.start.replace(tzinfo=None), "e": interval.end.replace(tzinfo=None),
                 "run": run_id, "err": error[:4000], "t": now})


__all__ = ["load_delivery", "previous_watermark", "record_failure", "rows_for_insert", "is_sqlite"]
