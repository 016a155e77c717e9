"""Feedback tickets (数据质量问题反馈) to source units, and the supervision list (挂牌督办).

One live ticket per (resource, check), reused while live, assigned to the source unit's
contact, due by severity (blocking 7 days, warning 30 days after the run date).

States::

    new ──ack──▶ acknowledged ──rectify──▶ rectifying ──(a later run passes)──▶ resolved
     │                │                        │                                   │
     └────dispute─────┴────────dispute─────────┘                      (fails again) ▼
                      ▼                                                          reopened
                  disputed ──accept-dispute──▶ disputed (accepted: the disputed keys are waived)
                      └──reject-dispute──▶ rectifying

- **Run-driven** (:func:`update_tickets`, after every load, and after the cross-resource
  checks): a failing check opens the ticket or updates its evidence; a later run in which
  the check passes resolves it (销号) -- a person can never resolve one; a resolved ticket
  whose check fails again is reopened, and so is an accepted dispute when rows beyond the
  waived ones fail. Backfills of older intervals never override newer evidence.
- **People** (:func:`acknowledge`, :func:`rectify`, :func:`dispute`, :func:`comment` for the
  source unit; :func:`accept_dispute`, :func:`reject_dispute` for the data centre). Accepting a
  dispute waives the ticket's current failing keys for that check (``quality.waivers``), so
  the next run passes and resolves it.
- **Escalation** (:func:`escalate_overdue`, once per run date): a live ticket past its due
  date goes onto the supervision list; a dispute awaiting the data centre's decision does not
  (the ball is not in the unit's court). Resolution takes it off (销号).

Every change is an event in ``quality.ticket_events``: who, when, action, from, to, comment.
Comments and actors are scrubbed of resident IDs and mobiles before they are stored. Rerunning
an interval changes nothing: same tickets, no new event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from catalog.models import Catalog
from datarail.errors import DatarailError
from datarail.interval import Interval
from datarail.privacy import scrub_text

log = logging.getLogger(__name__)

LIVE_STATES = ("new", "acknowledged", "rectifying", "disputed", "reopened")
STATES = (*LIVE_STATES, "resolved")
DUE_DAYS = {"blocking": 7, "warning": 30}
SYSTEM_ACTOR = "datarail"
DISPUTE_REASONS = {
    "false_positive": "规则误报，数据正确 / the rule flags correct data",
    "source_correct": "已在源头核实，数据无误 / verified correct at the source",
    "rule_not_applicable": "规则不适用于本资源 / the rule does not apply to this resource",
    "legacy_record": "历史遗留数据（如早期颁发的证照号码）/ legacy data issued before the standard",
    "other": "其他（见说明）/ other (see the comment)",
}
# action: (states it may start from, state it leads to); None keeps the state.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "acknowledge": (("new", "reopened"), "acknowledged"),
    "rectify": (("new", "acknowledged", "reopened"), "rectifying"),
    "dispute": (("new", "acknowledged", "rectifying", "reopened"), "disputed"),
    "accept_dispute": (("disputed",), None),
    "reject_dispute": (("disputed",), "rectifying"),
    "comment": (STATES, None),
}


class TicketError(DatarailError):
    """A ticket action that the workflow does not allow (or an unknown ticket)."""


def ticket_id(resource: str, check_id: str) -> str:
    """Stable id per (resource, check), so reruns and backfills address the same ticket."""
    return "DQ-" + hashlib.sha1(f"{resource}|{check_id}".encode()).hexdigest()[:10].upper()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _event(conn: sa.Connection, tid: str, from_state: str | None, to_state: str, *, action: str,
           comment: str, at: datetime, actor: str = SYSTEM_ACTOR, interval_key: str | None = None) -> None:
    seq = conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) + 1 FROM quality.ticket_events WHERE ticket_id = :t"),
                       {"t": tid}).scalar_one()
    conn.execute(sa.text(
        "INSERT INTO quality.ticket_events (ticket_id, seq, at, actor, from_state, to_state, interval_key, comment, "
        "action) VALUES (:t, :seq, :at, :actor, :f, :to, :k, :c, :a)"),
        {"t": tid, "seq": seq, "at": at, "actor": scrub_text(actor)[:64], "f": from_state, "to": to_state,
         "k": interval_key, "c": scrub_text(comment), "a": action})


def _due(run_date: date, severity: str) -> str:
    return (run_date + timedelta(days=DUE_DAYS.get(severity, 7))).isoformat()


# --- run-driven ---------------------------------------------------------------------------------

def update_tickets(engine: sa.Engine, catalog: Catalog, resource_code: str, interval: Interval,
                   check_ids: list[str] | None = None) -> dict:
    """Open, update, resolve or reopen the resource's tickets from this interval's check
    results (``check_ids``: only those checks; default every check of the interval)."""
    resource = catalog.resource(resource_code)
    unit = catalog.unit(resource.unit)
    now = _now()
    run_date = interval.run_date
    counts = {"opened": 0, "updated": 0, "resolved": 0, "reopened": 0, "unchanged": 0}
    with engine.begin() as conn:
        checks = conn.execute(sa.text(
            "SELECT check_id, field, severity, rule, evaluated, failed, failed_keys, sample "
            "FROM quality.check_results WHERE resource = :r AND interval_key = :k ORDER BY check_id"),
            {"r": resource_code, "k": interval.key}).mappings().all()
        if check_ids is not None:
            checks = [c for c in checks if c["check_id"] in set(check_ids)]
        existing = {row["check_id"]: dict(row) for row in conn.execute(sa.text(
            "SELECT ticket_id, check_id, state, last_interval, failed, failed_keys, dispute_status "
            "FROM quality.tickets WHERE resource = :r"), {"r": resource_code}).mappings()}
        for c in checks:
            t = existing.get(c["check_id"])
            if t is not None and t["last_interval"] > interval.key:
                counts["unchanged"] += 1  # a backfill of an older interval never overrides newer evidence
                continue
            tid = ticket_id(resource_code, c["check_id"])
            fields = {"evaluated": c["evaluated"], "failed": c["failed"], "failed_keys": c["failed_keys"],
                      "sample": c["sample"], "last_interval": interval.key, "rule": c["rule"], "t": tid,
                      "now": now}
            if c["failed"] > 0:
                if t is None:
                    conn.execute(sa.text(
                        "INSERT INTO quality.tickets (ticket_id, resource, unit, check_id, field, severity, state, rule, "
                        "assignee, evaluated, failed, failed_keys, sample, opened_interval, last_interval, opened_at, "
                        "updated_at, due_date, closed_at) VALUES (:t, :r, :u, :c, :f, :s, 'new', :rule, :a, :evaluated, "
                        ":failed, :failed_keys, :sample, :last_interval, :last_interval, :now, :now, :due, NULL)"),
                        {**fields, "r": resource_code, "u": unit.code, "c": c["check_id"], "f": c["field"],
                         "s": c["severity"], "a": unit.contact_email, "due": _due(run_date, c["severity"])})
                    _event(conn, tid, None, "new", action="opened", at=now, interval_key=interval.key,
                           comment=f"{c['failed']} of {c['evaluated']} fail")
                    counts["opened"] += 1
                elif t["state"] == "resolved" or (t["state"] == "disputed" and t["dispute_status"] == "accepted"
                                                  and interval.key > t["last_interval"]):
                    # (An accepted dispute is judged by a later run: the run it was raised on
                    # still counts the rows it waived.)
                    why = ("fails again after being struck off" if t["state"] == "resolved"
                           else "rows beyond those of the accepted dispute fail")
                    conn.execute(sa.text(
                        "UPDATE quality.tickets SET state = 'reopened', evaluated = :evaluated, failed = :failed, "
                        "failed_keys = :failed_keys, sample = :sample, last_interval = :last_interval, rule = :rule, "
                        "updated_at = :now, due_date = :due, closed_at = NULL, escalated_on = NULL, "
                        "dispute_status = NULL WHERE ticket_id = :t"),
                        {**fields, "due": _due(run_date, c["severity"])})
                    _event(conn, tid, t["state"], "reopened", action="reopened", at=now, interval_key=interval.key,
                           comment=f"{c['failed']} of {c['evaluated']} {why}")
                    counts["reopened"] += 1
                elif (t["failed"], t["failed_keys"], t["last_interval"]) != (c["failed"], c["failed_keys"], interval.key):
                    conn.execute(sa.text(
                        "UPDATE quality.tickets SET evaluated = :evaluated, failed = :failed, failed_keys = :failed_keys, "
                        "sample = :sample, last_interval = :last_interval, rule = :rule, updated_at = :now "
                        "WHERE ticket_id = :t"), fields)
                    if (t["failed"], t["failed_keys"]) != (c["failed"], c["failed_keys"]):
                        _event(conn, tid, t["state"], t["state"], action="updated", at=now, interval_key=interval.key,
                               comment=f"failing {t['failed']} -> {c['failed']} of {c['evaluated']}")
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            elif t is not None and t["state"] in LIVE_STATES:
                conn.execute(sa.text(
                    "UPDATE quality.tickets SET state = 'resolved', evaluated = :evaluated, failed = 0, "
                    "failed_keys = '[]', sample = '[]', last_interval = :last_interval, updated_at = :now, "
                    "closed_at = :now WHERE ticket_id = :t"), fields)
                _event(conn, tid, t["state"], "resolved", action="resolved", at=now, interval_key=interval.key,
                       comment="check passes: struck off (销号)")
                conn.execute(sa.text("UPDATE quality.supervision SET delisted_on = :d WHERE ticket_id = :t "
                                     "AND delisted_on IS NULL"), {"d": run_date.isoformat(), "t": tid})
                counts["resolved"] += 1
    log.info("tickets %s [%s]: %s", resource_code, interval.key, counts)
    return counts


def escalate_overdue(engine: sa.Engine, run_date: date) -> list[str]:
    """Put every live ticket past its due date on the supervision list (once); a dispute
    awaiting the data centre's decision waits. Returns the ticket ids listed now."""
    now = _now()
    day = run_date.isoformat()
    listed = []
    with engine.begin() as conn:
        rows = conn.execute(sa.text(
            "SELECT ticket_id, unit, resource, check_id, severity, state, due_date, dispute_status "
            "FROM quality.tickets WHERE escalated_on IS NULL AND due_date < :d AND state IN ("
            + ", ".join(f"'{s}'" for s in LIVE_STATES) + ") ORDER BY ticket_id"), {"d": day}).mappings().all()
        for t in rows:
            if t["state"] == "disputed" and t["dispute_status"] in (None, "pending"):
                continue
            conn.execute(sa.text("UPDATE quality.tickets SET escalated_on = :d, updated_at = :now WHERE ticket_id = :t"),
                         {"d": day, "now": now, "t": t["ticket_id"]})
            conn.execute(sa.text("DELETE FROM quality.supervision WHERE ticket_id = :t"), {"t": t["ticket_id"]})
            conn.execute(sa.text(
                "INSERT INTO quality.supervision (ticket_id, unit, resource, check_id, severity, due_date, listed_on, "
                "delisted_on) VALUES (:t, :u, :r, :c, :s, :due, :d, NULL)"),
                {"t": t["ticket_id"], "u": t["unit"], "r": t["resource"], "c": t["check_id"], "s": t["severity"],
                 "due": t["due_date"], "d": day})
            _event(conn, t["ticket_id"], t["state"], t["state"], action="escalated", at=now,
                   comment=f"overdue since {t['due_date']}: listed for supervision (挂牌督办) on {day}")
            listed.append(t["ticket_id"])
    if listed:
        log.info("escalated %d overdue tickets onto the supervision list on %s", len(listed), day)
    return listed


# --- people ------------------------------------------------------------------------------------

def _load(conn: sa.Connection, tid: str) -> dict:
    row = conn.execute(sa.text("SELECT * FROM quality.tickets WHERE ticket_id = :t"), {"t": tid}).mappings().first()
    if row is None:
        raise TicketError(f"no ticket {tid}", hint="list them with `datarail tickets list`")
    return dict(row)


def _transition(engine: sa.Engine, tid: str, action: str, actor: str, comment: str, *,
                extra: dict[str, Any] | None = None, require_comment: bool = False,
                check: Any = None) -> dict:
    allowed, target = TRANSITIONS[action]
    if not actor or not actor.strip():
        raise TicketError("who is acting? give --by", hint="every change records who made it")
    if require_comment and not (comment or "").strip():
        raise TicketError(f"{action.replace('_', '-')} needs a comment", hint="say why, for the record")
    now = _now()
    with engine.begin() as conn:
        t = _load(conn, tid)
        if t["state"] not in allowed:
            raise TicketError(f"cannot {action.replace('_', '-')} ticket {tid} in state {t['state']}",
                              resource=t["resource"], hint=f"allowed from: {', '.join(allowed)}")
        if check is not None:
            check(t)
        new_state = target or t["state"]
        sets = {"state": new_state, "updated_at": now, **(extra or {})}
        conn.execute(sa.text("UPDATE quality.tickets SET " + ", ".join(f"{k} = :{k}" for k in sets)
                             + " WHERE ticket_id = :tid"), {**sets, "tid": tid})
        _event(conn, tid, t["state"], new_state, action=action, at=now, actor=actor, comment=comment or "",
               interval_key=t["last_interval"])
        if action == "accept_dispute":
            _waive(conn, t, actor, now)
        return {**t, **sets}


def acknowledge(engine: sa.Engine, tid: str, actor: str, comment: str = "") -> dict:
    """The source unit has seen the ticket (new / reopened -> acknowledged)."""
    return _transition(engine, tid, "acknowledge", actor, comment)


def rectify(engine: sa.Engine, tid: str, actor: str, comment: str = "") -> dict:
    """The source unit is fixing the data at the source (-> rectifying). Only a later
    passing run resolves the ticket."""
    return _transition(engine, tid, "rectify", actor, comment)


def dispute(engine: sa.Engine, tid: str, actor: str, reason: str, comment: str) -> dict:
    """The source unit says the check is a false positive (reason code + comment); the data
    centre then accepts or rejects the dispute."""
    if reason not in DISPUTE_REASONS:
        raise TicketError(f"unknown dispute reason {reason!r}", hint=f"one of: {', '.join(DISPUTE_REASONS)}")
    return _transition(engine, tid, "dispute", actor, comment, require_comment=True,
                       extra={"dispute_reason": reason, "dispute_comment": scrub_text(comment),
                              "dispute_status": "pending"})


def _pending(t: dict) -> None:
    if t.get("dispute_status") not in (None, "pending"):
        raise TicketError(f"the dispute of {t['ticket_id']} was already {t['dispute_status']}",
                          resource=t["resource"])


def accept_dispute(engine: sa.Engine, tid: str, actor: str, comment: str = "") -> dict:
    """The data centre agrees the disputed rows are correct: their keys are waived for this
    check, so the next run passes and resolves the ticket. The state stays ``disputed``
    (accepted) until then: resolution is always a run's."""
    return _transition(engine, tid, "accept_dispute", actor, comment, require_comment=True,
                       extra={"dispute_status": "accepted"}, check=_pending)


def reject_dispute(engine: sa.Engine, tid: str, actor: str, comment: str) -> dict:
    """The data centre upholds the check: the unit must rectify (-> rectifying); the due date
    stands (a dispute does not stop the clock)."""
    return _transition(engine, tid, "reject_dispute", actor, comment, require_comment=True,
                       extra={"dispute_status": "rejected"}, check=_pending)


def comment(engine: sa.Engine, tid: str, actor: str, text: str) -> dict:
    """Add a comment (any state); recorded as an event."""
    return _transition(engine, tid, "comment", actor, text, require_comment=True)


def _waive(conn: sa.Connection, t: dict, actor: str, now: datetime) -> int:
    """Waive the ticket's failing keys of its latest run (``quality.check_failures``)."""
    keys = [r[0] for r in conn.execute(sa.text(
        "SELECT DISTINCT row_key FROM quality.check_failures WHERE resource = :r AND interval_key = :k "
        "AND check_id = :c"), {"r": t["resource"], "k": t["last_interval"], "c": t["check_id"]})]
    for key in keys:
        conn.execute(sa.text("DELETE FROM quality.waivers WHERE resource = :r AND check_id = :c AND row_key = :key"),
                     {"r": t["resource"], "c": t["check_id"], "key": key})
    if keys:
        conn.execute(sa.text(
            "INSERT INTO quality.waivers (resource, check_id, row_key, ticket_id, reason_code, accepted_by, "
            "accepted_at) VALUES (:r, :c, :key, :t, :reason, :by, :at)"),
            [{"r": t["resource"], "c": t["check_id"], "key": k, "t": t["ticket_id"],
              "reason": t.get("dispute_reason") or "other", "by": scrub_text(actor)[:200], "at": now} for k in keys])
    log.info("ticket %s: dispute accepted, %d keys waived for %s", t["ticket_id"], len(keys), t["check_id"])
    return len(keys)


# --- reading -----------------------------------------------------------------------------------

_COLUMNS = ("ticket_id, resource, unit, check_id, field, severity, state, rule, assignee, evaluated, failed, sample, "
            "opened_interval, last_interval, due_date, opened_at, updated_at, closed_at, dispute_reason, "
            "dispute_comment, dispute_status, escalated_on")


def _plain(d: dict) -> dict:
    d = dict(d)
    if "sample" in d and isinstance(d["sample"], str):
        d["sample"] = json.loads(d["sample"])
    for k, v in list(d.items()):
        if isinstance(v, datetime):
            d[k] = v.isoformat()
    return d


def overdue(ticket: dict, today: date) -> bool:
    """Live and past its due date."""
    return ticket["state"] in LIVE_STATES and date.fromisoformat(ticket["due_date"]) < today


def list_tickets(engine: sa.Engine, *, unit: str | None = None, state: str | None = None,
                 live_only: bool = False, overdue_on: date | None = None, supervised: bool = False) -> list[dict]:
    """Tickets as dicts (samples parsed), ordered by unit, resource, check. Samples are
    masked at creation; raw failing keys are never included (see :mod:`quality.evidence`).
    ``overdue_on``: only tickets overdue on that date; ``supervised``: only those on the
    supervision list now."""
    q = f"SELECT {_COLUMNS} FROM quality.tickets WHERE 1 = 1"
    params: dict = {}
    if unit:
        q += " AND unit = :u"
        params["u"] = unit
    if state:
        q += " AND state = :s"
        params["s"] = state
    if live_only or overdue_on or supervised:
        q += " AND state IN (" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"
    if overdue_on:
        q += " AND due_date < :d"
        params["d"] = overdue_on.isoformat()
    if supervised:
        q += " AND escalated_on IS NOT NULL"
    q += " ORDER BY unit, resource, check_id"
    with engine.connect() as conn:
        return [_plain(dict(row)) for row in conn.execute(sa.text(q), params).mappings()]


def get_ticket(engine: sa.Engine, tid: str) -> dict:
    """One ticket with its events, its supervision entry and the query that reproduces its
    failing rows (from the latest run)."""
    with engine.connect() as conn:
        t = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM quality.tickets WHERE ticket_id = :t"),
                         {"t": tid}).mappings().first()
        if t is None:
            raise TicketError(f"no ticket {tid}", hint="list them with `datarail tickets list`")
        t = _plain(dict(t))
        t["events"] = [_plain(dict(e)) for e in conn.execute(sa.text(
            "SELECT seq, at, actor, action, from_state, to_state, interval_key, comment FROM quality.ticket_events "
            "WHERE ticket_id = :t ORDER BY seq"), {"t": tid}).mappings()]
        sup = conn.execute(sa.text("SELECT listed_on, delisted_on, due_date FROM quality.supervision "
                                   "WHERE ticket_id = :t"), {"t": tid}).mappings().first()
        t["supervision"] = dict(sup) if sup else None
        run = conn.execute(sa.text("SELECT scope, expectation, waived, observed, reproduce_sql FROM quality.check_runs "
                                   "WHERE resource = :r AND interval_key = :k AND check_id = :c"),
                           {"r": t["resource"], "k": t["last_interval"], "c": t["check_id"]}).mappings().first()
        t["last_run"] = dict(run) if run else None
        t["waived_keys"] = conn.execute(sa.text(
            "SELECT COUNT(*) FROM quality.waivers WHERE resource = :r AND check_id = :c"),
            {"r": t["resource"], "c": t["check_id"]}).scalar_one()
    return t


def supervision_list(engine: sa.Engine, *, current_only: bool = True) -> list[dict]:
    """The supervision list (挂牌督办): tickets listed for being overdue, with their state."""
    q = ("SELECT s.ticket_id, s.unit, s.resource, s.check_id, s.severity, s.due_date, s.listed_on, s.delisted_on, "
         "t.state, t.failed, t.evaluated FROM quality.supervision s JOIN quality.tickets t ON t.ticket_id = s.ticket_id")
    if current_only:
        q += " WHERE s.delisted_on IS NULL"
    q += " ORDER BY s.listed_on, s.unit, s.ticket_id"
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(q)).mappings()]
