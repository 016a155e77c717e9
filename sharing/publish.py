"""Publish one run date: resource status, share tables, the sharing list, lineage.

For every catalog resource it decides, from the warehouse alone, whether the resource was
delivered in the interval, is fresh for its update cycle, passes quality (loaded ÷ extracted
at or above the threshold) and is published; then it refreshes ``share.<table>`` from the
ods rows (which hold only rows that passed) for every shared resource, in one transaction.

Flags: ``share.<table>._quality_status`` is per row: ``ok``, or for a row under a live
feedback ticket (its key is among the ticket's failing rows) ``under_rectification`` or
``disputed``, so consumers see it; the sharing list carries the resource-level status.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime

import sqlalchemy as sa

from catalog.models import CYCLE_DAYS, Catalog, Resource
from datarail.interval import Interval
from quality.tickets import LIVE_STATES
from warehouse.tables import ensure, ods_table, share_table

log = logging.getLogger(__name__)


def _age_days(latest_update: str | None, run_date: date) -> int | None:
    if not latest_update:
        return None
    return (run_date - date.fromisoformat(latest_update[:10])).days


def resource_status(conn: sa.Connection, resource: Resource, interval: Interval, threshold: float) -> dict:
    """The status row of one resource for the interval's run date."""
    run = conn.execute(sa.text(
        "SELECT extracted, loaded, quarantined, latest_update FROM meta.runs "
        "WHERE resource = :r AND interval_key = :k AND status = 'loaded'"),
        {"r": resource.code, "k": interval.key}).mappings().first()
    delivered = bool(resource.status == "active" and run and run["extracted"] > 0)
    extracted = run["extracted"] if run else 0
    loaded = run["loaded"] if run else 0
    pass_rate = loaded / extracted if extracted else None
    age = _age_days(run["latest_update"] if run else None, interval.run_date)
    fresh = delivered and age is not None and age <= CYCLE_DAYS[resource.update_cycle]
    return {
        "run_date": interval.run_date.isoformat(), "resource": resource.code, "delivered": int(delivered),
        "extracted": extracted, "loaded": loaded, "quarantined": run["quarantined"] if run else 0,
        "pass_rate": pass_rate, "quality_ok": int(bool(delivered and pass_rate is not None and pass_rate >= threshold)),
        "latest_update": run["latest_update"] if run else None, "age_days": age, "fresh": int(bool(fresh)),
        "published": int(delivered and resource.published),
        # Every delivery path today stages a schema-checked table, so a delivered resource is
        # structured; document deliveries (scans) will count as delivered but not structured.
        "structured": int(delivered),
        "shared_rows": 0,
    }


def _quality_flag(conn: sa.Connection, resource: Resource) -> str:
    live = conn.execute(sa.text(
        "SELECT severity, state FROM quality.tickets WHERE resource = :r AND state IN ("
        + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"), {"r": resource.code}).all()
    if any(s == "disputed" for _, s in live):
        return "disputed"
    if any(sev == "blocking" for sev, _ in live):
        return "under_rectification"
    return "warning" if live else "ok"


def _flagged_keys(conn: sa.Connection, resource: Resource) -> dict[str, list[tuple]]:
    """Keys of the rows under a live ticket, by the flag they carry in the share area:
    ``under_rectification`` (a ticket the unit must act on) wins over ``disputed`` (every
    ticket covering the row is disputed). The keys are the failing rows of each ticket's
    latest run (``quality.check_failures``)."""
    from quality.coerce import parse_date, parse_datetime

    rows = conn.execute(sa.text(
        "SELECT DISTINCT f.row_key, t.state FROM quality.tickets t JOIN quality.check_failures f "
        "ON f.resource = t.resource AND f.interval_key = t.last_interval AND f.check_id = t.check_id "
        "WHERE t.resource = :r AND t.state IN (" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"),
        {"r": resource.code}).all()
    flag: dict[str, str] = {}
    for key, state in rows:
        wanted = "disputed" if state == "disputed" else "under_rectification"
        if flag.get(key) != "under_rectification":
            flag[key] = wanted
    types = [resource.field(k).type for k in resource.primary_key]
    convert = {"date": parse_date, "datetime": parse_datetime, "integer": lambda v: int(float(v)),
               "decimal": float, "boolean": lambda v: str(v).lower() in ("true", "1", "是", "y", "yes", "t")}
    out: dict[str, list[tuple]] = {}
    for key, f in flag.items():
        try:
            values = json.loads(key)
            typed = tuple(None if v is None else convert.get(t, str)(v) for v, t in zip(values, types, strict=True))
        except (ValueError, TypeError):
            continue  # a key that does not parse cannot match a published row
        out.setdefault(f, []).append(typed)
    return out


def _flag_rows(conn: sa.Connection, resource: Resource, dst: sa.Table) -> dict[str, int]:
    """Row-level flags: rows under a live ticket carry its status in ``_quality_status``."""
    counts = {}
    for f, keys in _flagged_keys(conn, resource).items():
        stmt = dst.update().where(*[dst.c[k] == sa.bindparam(f"k{i}") for i, k in enumerate(resource.primary_key)])
        stmt = stmt.values(_quality_status=f)
        params = [{f"k{i}": v for i, v in enumerate(key)} for key in keys]
        for i in range(0, len(params), 5_000):
            conn.execute(stmt, params[i:i + 5_000])
        counts[f] = len(keys)
    return counts


def publish(engine: sa.Engine, catalog: Catalog, interval: Interval, *, threshold: float) -> dict:
    """Refresh resource status, share tables, sharing list and lineage for the run date."""
    run_date = interval.run_date.isoformat()
    shared = [r for r in catalog.resources if r.status == "active" and r.published]
    md = sa.MetaData()
    ensure(engine, *[ods_table(r, md) for r in shared], *[share_table(r, md) for r in shared])
    now = datetime.now(UTC).replace(tzinfo=None)
    summary: dict[str, dict] = {}
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM meta.resource_status WHERE run_date = :d"), {"d": run_date})
        conn.execute(sa.text("DELETE FROM share.sharing_list WHERE run_date = :d"), {"d": run_date})
        for r in catalog.resources:
            st = resource_status(conn, r, interval, threshold)
            if st["published"]:
                src, dst = md.tables[f"ods.{r.table}"], md.tables[f"share.{r.table}"]
                flag = _quality_flag(conn, r)
                names = [f.name for f in r.fields]
                conn.execute(dst.delete())
                conn.execute(dst.insert().from_select(
                    [*names, "_quality_status", "_published_interval"],
                    sa.select(*[src.c[n] for n in names], sa.literal("ok"), sa.literal(interval.key))))
                _flag_rows(conn, r, dst)
                st["shared_rows"] = conn.execute(sa.select(sa.func.count()).select_from(dst)).scalar_one()
                conn.execute(sa.text(
                    "INSERT INTO share.sharing_list (run_date, resource, table_name, name_zh, name_en, provider_unit, "
                    "sharing_type, sharing_condition, granted_to, update_cycle, base_library, fields, shared_rows, "
                    "latest_update, pass_rate, quality_status) VALUES (:d, :r, :t, :nz, :ne, :u, :st, :sc, :g, :uc, "
                    ":bl, :f, :n, :lu, :pr, :q)"),
                    {"d": run_date, "r": r.code, "t": f"share.{r.table}", "nz": r.name_zh, "ne": r.name_en,
                     "u": r.unit, "st": r.sharing.type, "sc": r.sharing.condition,
                     "g": json.dumps(list(r.sharing.granted_to)), "uc": r.update_cycle, "bl": r.base_library,
                     "f": json.dumps([{"name": f.name, "type": f.type, "semantic": f.semantic,
                                       "description": f.description, "personal": f.personal} for f in r.fields],
                                     ensure_ascii=False),
                     "n": st["shared_rows"], "lu": st["latest_update"], "pr": st["pass_rate"], "q": flag})
                conn.execute(sa.text("DELETE FROM meta.lineage WHERE target = :t"), {"t": f"share.{r.table}"})
                conn.execute(sa.text("INSERT INTO meta.lineage (target, resource, interval_key, built_at) "
                                     "VALUES (:t, :r, :k, :b)"),
                             {"t": f"share.{r.table}", "r": r.code, "k": interval.key, "b": now})
            conn.execute(sa.text(
                "INSERT INTO meta.resource_status (" + ", ".join(st) + ") VALUES ("
                + ", ".join(f":{k}" for k in st) + ")"), st)
            summary[r.code] = st
    log.info("published %d resources for %s", sum(s["published"] for s in summary.values()), run_date)
    return {"run_date": run_date, "published": sum(s["published"] for s in summary.values()),
            "shared_rows": sum(s["shared_rows"] for s in summary.values())}
