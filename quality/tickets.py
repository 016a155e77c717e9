"""Feedback tickets (数据质量问题反馈) to source units, driven by check results.

One live ticket per (resource, check). A run in which the check fails opens it (state
``new``) or updates it while it is live; a later run in which the check passes resolves it
(销号) -- only a passing run resolves, never a person alone; a resolved ticket whose check
fails again is ``reopened``. Every state change is an event in ``quality.ticket_events``.
Rerunning the same interval changes nothing: same counts, no new ticket, no new event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from catalog.models import Catalog
from datarail.interval import Interval

log = logging.getLogger(__name__)

LIVE_STATES = ("new", "acknowledged", "rectifying", "disputed", "reopened")
DUE_DAYS = {"blocking": 7, "warning": 30}
SYSTEM_ACTOR = "datarail"


def ticket_id(resource: str, check_id: str) -> str:
    """Stable id per (resource, check), so reruns and backfills address the same ticket."""
    return "DQ-" + hashlib.sha1(f"{resource}|{check_id}".encode()).hexdigest()[:10].upper()


def _event(conn: sa.Connection, tid: str, from_state: str | None, to_state: str, interval: Interval,
           comment: str, at: datetime) -> None:
    seq = conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) + 1 FROM quality.ticket_events WHERE ticket_id = :t"),
                       {"t": tid}).scalar_one()
    conn.execute(sa.text(
        "INSERT INTO quality.ticket_events (ticket_id, seq, at, actor, from_state, to_state, interval_key, comment) "
        "VALUES (:t, :seq, :at, :actor, :f, :to, :k, :c)"),
        {"t": tid, "seq": seq, "at": at, "actor": SYSTEM_ACTOR, "f": from_state, "to": to_state,
         "k": interval.key, "c": comment})


def update_tickets(engine: sa.Engine, catalog: Catalog, resource_code: str, interval: Interval) -> dict:
    """Open, update, resolve or reopen the resource's tickets from this interval's check results."""
    resource = catalog.resource(resource_code)
    unit = catalog.unit(resource.unit)
    now = datetime.now(UTC).replace(tzinfo=None)
    counts = {"opened": 0, "updated": 0, "resolved": 0, "reopened": 0, "unchanged": 0}
    with engine.begin() as conn:
        checks = conn.execute(sa.text(
            "SELECT check_id, field, severity, rule, evaluated, failed, failed_keys, sample "
            "FROM quality.check_results WHERE resource = :r AND interval_key = :k ORDER BY check_id"),
            {"r": resource_code, "k": interval.key}).mappings().all()
        existing = {row["check_id"]: dict(row) for row in conn.execute(sa.text(
            "SELECT ticket_id, check_id, state, last_interval, failed, failed_keys FROM quality.tickets "
            "WHERE resource = :r"), {"r": resource_code}).mappings()}
        for c in checks:
            t = existing.get(c["check_id"])
            if t is not None and t["last_interval"] > interval.key:
                counts["unchanged"] += 1  # a backfill of an older interval never overrides newer evidence
                continue
            tid = ticket_id(resource_code, c["check_id"])
            fields = {"evaluated": c["evaluated"], "failed": c["failed"], "failed_keys": c["failed_keys"],
                      "sample": c["sample"], "last_interval": interval.key, "rule": c["rule"], "t": tid}
            if c["failed"] > 0:
                if t is None:
                    due = interval.run_date + timedelta(days=DUE_DAYS.get(c["severity"], 7))
                    conn.execute(sa.text(
                        "INSERT INTO quality.tickets (ticket_id, resource, unit, check_id, field, severity, state, rule, "
                        "assignee, evaluated, failed, failed_keys, sample, opened_interval, last_interval, opened_at, "
                        "updated_at, due_date, closed_at) VALUES (:t, :r, :u, :c, :f, :s, 'new', :rule, :a, :evaluated, "
                        ":failed, :failed_keys, :sample, :last_interval, :last_interval, :now, :now, :due, NULL)"),
                        {**fields, "r": resource_code, "u": unit.code, "c": c["check_id"], "f": c["field"],
                         "s": c["severity"], "a": unit.contact_email, "now": now, "due": due.isoformat()})
                    _event(conn, tid, None, "new", interval, f"{c['failed']} of {c['evaluated']} rows fail", now)
                    counts["opened"] += 1
                elif t["state"] == "resolved":
                    due = interval.run_date + timedelta(days=DUE_DAYS.get(c["severity"], 7))
                    conn.execute(sa.text(
                        "UPDATE quality.tickets SET state = 'reopened', evaluated = :evaluated, failed = :failed, "
                        "failed_keys = :failed_keys, sample = :sample, last_interval = :last_interval, rule = :rule, "
                        "updated_at = :now, due_date = :due, closed_at = NULL WHERE ticket_id = :t"),
                        {**fields, "now": now, "due": due.isoformat()})
                    _event(conn, tid, "resolved", "reopened", interval, f"{c['failed']} rows fail again", now)
                    counts["reopened"] += 1
                elif (t["failed"], t["failed_keys"], t["last_interval"]) != (c["failed"], c["failed_keys"], interval.key):
                    conn.execute(sa.text(
                        "UPDATE quality.tickets SET evaluated = :evaluated, failed = :failed, failed_keys = :failed_keys, "
                        "sample = :sample, last_interval = :last_interval, rule = :rule, updated_at = :now "
                        "WHERE ticket_id = :t"), {**fields, "now": now})
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            elif t is not None and t["state"] in LIVE_STATES:
                conn.execute(sa.text(
                    "UPDATE quality.tickets SET state = 'resolved', evaluated = :evaluated, failed = 0, "
                    "failed_keys = '[]', sample = '[]', last_interval = :last_interval, updated_at = :now, "
                    "closed_at = :now WHERE ticket_id = :t"), {**fields, "now": now})
                _event(conn, tid, t["state"], "resolved", interval, "check passes: struck off (销号)", now)
                counts["resolved"] += 1
    log.info("tickets %s [%s]: %s", resource_code, interval.key, counts)
    return counts


def list_tickets(engine: sa.Engine, *, unit: str | None = None, state: str | None = None,
                 live_only: bool = False) -> list[dict]:
    """Tickets as dicts (failing keys and samples parsed), newest first. Samples are masked
    at creation; failing keys are personal data and are NOT included here -- use
    :func:`ticket_keys` inside the warehouse."""
    q = ("SELECT ticket_id, resource, unit, check_id, field, severity, state, rule, assignee, evaluated, failed, "
         "sample, opened_interval, last_interval, due_date, opened_at, closed_at FROM quality.tickets WHERE 1 = 1")
    params: dict = {}
    if unit:
        q += " AND unit = :u"
        params["u"] = unit
    if state:
        q += " AND state = :s"
        params["s"] = state
    if live_only:
        q += " AND state IN (" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"
    q += " ORDER BY unit, resource, check_id"
    with engine.connect() as conn:
        out = []
        for row in conn.execute(sa.text(q), params).mappings():
            d = dict(row)
            d["sample"] = json.loads(d["sample"])
            for k in ("opened_at", "closed_at"):
                d[k] = d[k].isoformat() if isinstance(d[k], datetime) else d[k]
            out.append(d)
        return out


def overdue(ticket: dict, today: date) -> bool:
    return ticket["state"] in LIVE_STATES and date.fromisoformat(ticket["due_date"]) < today
