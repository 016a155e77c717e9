"""Load one validated delivery into the warehouse, atomically and idempotently.

In ONE transaction: upsert passing rows into ``ods.<table>`` by primary key (a row whose
content hash is unchanged is not touched); for snapshot resources delete keys the source no
longer delivers; replace this interval's quarantine rows and check results; record the run.
A failure anywhere rolls all of it back, and rerunning the same interval gives the same state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime

import pandas as pd
import sqlalchemy as sa

from catalog.models import Resource
from datarail.errors import ReconciliationError, WarehouseError
from datarail.interval import Interval
from warehouse.engine import is_sqlite
from warehouse.tables import ensure, ods_table

log = logging.getLogger(__name__)
BATCH = 5_000


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
    """Passing rows as dicts of field values plus their content hash."""
    names = [f.name for f in resource.fields]
    types = [f.type for f in resource.fields]
    out = []
    for rec in frame[names].itertuples(index=False, name=None):
        values = {n: _py(v, t) for n, v, t in zip(names, rec, types, strict=True)}
        digest = hashlib.sha256(json.dumps([values[n] for n in names], default=str,
                                           ensure_ascii=False).encode()).hexdigest()
        values["_row_hash"] = digest
        out.append(values)
    return out


def _upsert(conn: sa.Connection, table: sa.Table, pk: tuple[str, ...], rows: list[dict]) -> None:
    # DIALECT: SQLite and PostgreSQL share the ON CONFLICT form; SQLAlchemy has one insert per dialect.
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover
        raise WarehouseError(f"unsupported warehouse dialect {conn.dialect.name}")
    stmt = insert(table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in pk}
    stmt = stmt.on_conflict_do_update(index_elements=list(pk), set_=update,
                                      where=table.c._row_hash != stmt.excluded._row_hash)
    for i in range(0, len(rows), BATCH):
        conn.execute(stmt, rows[i:i + BATCH])


def _delete_undelivered(conn: sa.Connection, table: sa.Table, resource: Resource, keys: list[tuple]) -> int:
    """Snapshot sources: a key the source no longer delivers was deleted at the source."""
    md = sa.MetaData()
    cols = [sa.Column(k, table.c[k].type) for k in resource.primary_key]
    tmp = sa.Table("_delivered_keys", md, *cols, prefixes=["TEMPORARY"])
    tmp.drop(conn, checkfirst=True)
    tmp.create(conn)
    if keys:
        for i in range(0, len(keys), BATCH):
            conn.execute(tmp.insert(), [dict(zip(resource.primary_key, k, strict=True)) for k in keys[i:i + BATCH]])
    match = sa.and_(*[tmp.c[k] == table.c[k] for k in resource.primary_key])
    res = conn.execute(table.delete().where(~sa.exists().where(match)))
    tmp.drop(conn)
    return res.rowcount or 0


def load_delivery(engine: sa.Engine, resource: Resource, *, interval: Interval, run_id: str | None,
                  passed: pd.DataFrame, quarantined: pd.DataFrame, checks: list[dict],
                  extracted: int, extract_summary: dict, latest_update: str | None) -> dict:
    """Load one resource's validated delivery for one interval; return the run record."""
    if extracted != len(passed) + len(quarantined):
        raise ReconciliationError(
            f"extracted {extracted} rows but validation returned {len(passed)} passed + "
            f"{len(quarantined)} quarantined", unit=resource.unit, resource=resource.code,
            hint="no row may be lost between staging and load; rerun the interval")
    table = ods_table(resource)
    ensure(engine, table)
    rows = rows_for_insert(resource, passed)
    now = datetime.now(UTC).replace(tzinfo=None)
    for r in rows:
        r.update(_run_id=run_id, _interval_key=interval.key, _loaded_at=now)
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
    deleted = 0
    with engine.begin() as conn:
        _upsert(conn, table, resource.primary_key, rows)
        if resource.change_tracking.mode == "snapshot":
            keys = [tuple(r[k] for k in resource.primary_key) for r in rows]
            keys += [tuple(json.loads(k)) if k.startswith("[") else (k,) for k in
                     quarantined["key"].dropna().astype(str)] if len(quarantined) else []
            keys = _coerce_keys(resource, keys)
            deleted = _delete_undelivered(conn, table, resource, sorted(set(keys), key=str))
        params = {"r": resource.code, "k": interval.key}
        conn.execute(sa.text("DELETE FROM quality.quarantine WHERE resource = :r AND interval_key = :k"), params)
        if len(quarantined):
            conn.execute(sa.text(
                "INSERT INTO quality.quarantine (resource, interval_key, row_num, row_key, reasons, record) "
                "VALUES (:r, :k, :row_num, :row_key, :reasons, :record)"),
                [{**params, "row_num": int(q["_row"]), "row_key": q["key"], "reasons": q["reasons"],
                  "record": q["record"]} for q in quarantined.to_dict("records")])
        conn.execute(sa.text("DELETE FROM quality.check_results WHERE resource = :r AND interval_key = :k"), params)
        if checks:
            conn.execute(sa.text(
                "INSERT INTO quality.check_results (resource, interval_key, check_id, field, severity, rule, "
                "evaluated, failed, failed_keys, sample) VALUES (:r, :k, :check_id, :field, :severity, :rule, "
                ":evaluated, :failed, :failed_keys, :sample)"),
                [{**params, "check_id": c["check_id"], "field": c.get("field"), "severity": c["severity"],
                  "rule": c["rule"], "evaluated": c["evaluated"], "failed": c["failed"],
                  "failed_keys": json.dumps(c["failed_keys"], ensure_ascii=False),
                  "sample": json.dumps(c["sample"], ensure_ascii=False, default=str)} for c in checks])
        conn.execute(sa.text("DELETE FROM meta.runs WHERE resource = :r AND interval_key = :k"), params)
        conn.execute(sa.text(
            "INSERT INTO meta.runs (" + ", ".join(record) + ") VALUES (" + ", ".join(f":{k}" for k in record) + ")"),
            record)
    log.info("loaded %s [%s]: extracted %d, loaded %d, quarantined %d, deleted %d", resource.code,
             interval.key, extracted, len(passed), len(quarantined), deleted)
    return {**record, "deleted": deleted, "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(), "finished_at": now.isoformat()}


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
