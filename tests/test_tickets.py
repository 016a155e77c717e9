"""Feedback tickets over runs: opened, reused while open, resolved by a passing run,
reopened; reruns change nothing. On both warehouses."""

from __future__ import annotations

import json
from datetime import date

import pytest
import sqlalchemy as sa

from datarail.interval import Interval
from quality.tickets import list_tickets, overdue, ticket_id, update_tickets
from tests.helpers import tiny_catalog

pytestmark = pytest.mark.integration

D1, D2, D3, D4 = (Interval.daily(date(2026, 11, d)) for d in (20, 21, 22, 23))


def record_checks(engine, interval, failed: int, keys=None):
    keys = keys if keys is not None else [json.dumps([f"k{i}"]) for i in range(failed)]
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM quality.check_results WHERE interval_key = :k"), {"k": interval.key})
        c.execute(sa.text(
            "INSERT INTO quality.check_results (resource, interval_key, check_id, field, severity, rule, evaluated, "
            "failed, failed_keys, sample) VALUES ('RK-T-0001', :k, 'resident_id:resident_id', 'resident_id', "
            "'blocking', 'GB 11643', 10, :f, :keys, '[]')"), {"k": interval.key, "f": failed, "keys": json.dumps(keys)})


def events(engine):
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT from_state, to_state FROM quality.ticket_events ORDER BY seq"))]


def test_ticket_life(warehouse_engine):
    cat = tiny_catalog()
    record_checks(warehouse_engine, D1, 2)
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D1)["opened"] == 1
    [t] = list_tickets(warehouse_engine)
    assert (t["ticket_id"], t["state"], t["failed"], t["unit"], t["assignee"]) == (
        ticket_id("RK-T-0001", "resident_id:resident_id"), "new", 2, "psb", "psb@example.gov.cn")
    assert t["due_date"] == "2026-11-27"  # blocking: 7 days after the run date
    # rerun of the same interval: nothing changes
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D1) == {
        "opened": 0, "updated": 0, "resolved": 0, "reopened": 0, "unchanged": 1}
    # next day fewer failures: the same ticket is updated, not a new one
    record_checks(warehouse_engine, D2, 1)
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D2)["updated"] == 1
    assert [(x["state"], x["failed"]) for x in list_tickets(warehouse_engine)] == [("new", 1)]
    # the source fixed it: the passing run strikes it off
    record_checks(warehouse_engine, D3, 0)
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D3)["resolved"] == 1
    assert list_tickets(warehouse_engine, live_only=True) == []
    # a backfill of an older failing interval does not override newer evidence
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D1)["unchanged"] == 1
    # it breaks again: the ticket is reopened
    record_checks(warehouse_engine, D4, 3)
    assert update_tickets(warehouse_engine, cat, "RK-T-0001", D4)["reopened"] == 1
    assert events(warehouse_engine) == [(None, "new"), ("new", "resolved"), ("resolved", "reopened")]
    [t] = list_tickets(warehouse_engine)
    assert overdue(t, date(2026, 12, 1)) and not overdue(t, date(2026, 11, 24))
