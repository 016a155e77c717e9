"""Feedback tickets over runs, on both warehouses: each interval goes through the real steps
(validate with Great Expectations -> load -> evidence -> tickets), and people act through
the ticket API: a ticket's whole life (opened, acknowledged, the source fixed, re-run,
struck off, reopened), a dispute accepted (its rows waived, the next run resolves it) and
one rejected, an overdue escalation onto the supervision list and off it again, every change
recorded; reruns change nothing."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
from stdnum.cn import ric

from catalog.models import Resource
from datarail.interval import Interval
from datarail.privacy import find_unmasked
from quality.divisions import load_divisions
from quality.evidence import check_dicts, failing_rows, load_history, record_evidence
from quality.tickets import (
    TicketError,
    accept_dispute,
    acknowledge,
    comment,
    dispute,
    escalate_overdue,
    get_ticket,
    list_tickets,
    overdue,
    rectify,
    reject_dispute,
    supervision_list,
    ticket_id,
    update_tickets,
)
from quality.validate import validate
from tests.helpers import tiny_catalog
from warehouse.load import load_delivery

pytestmark = pytest.mark.integration

D1, D2, D3, D4 = (Interval.daily(date(2026, 11, d)) for d in (20, 21, 22, 23))
DIVS = load_divisions()


def rid(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


def people_resource() -> Resource:
    return Resource.model_validate({
        "code": "RK-T-0001", "table": "person", "name_zh": "人口", "name_en": "Person", "unit": "psb",
        "system": "huji", "location": {"table": "t_person"}, "primary_key": ["resident_id"], "update_cycle": "daily",
        "sharing": {"type": "conditional", "condition": "办事需要", "granted_to": ["zwfw"]},
        "base_library": "population",
        "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
                   {"name": "name", "semantic": "person_name", "required": True},
                   {"name": "gender", "semantic": "gender", "values": ["男", "女"]},
                   {"name": "phone", "semantic": "phone"}]})


RES = people_resource()
CAT = tiny_catalog(RES)
MEN = [rid(f"33010219900101{n:03d}") for n in (1, 3, 5, 7)]  # odd sequence: men


def person(i: int, **kw) -> dict:
    return {"resident_id": MEN[i], "name": "张三", "gender": "男", "phone": "13812345678", **kw}


def run_interval(engine, interval: Interval, rows: list[dict]) -> dict:
    """One interval through the pipeline's steps: validate -> load -> evidence -> tickets."""
    raw = pd.DataFrame(rows).astype("str")
    raw.insert(0, "_row", pd.Series(range(1, len(rows) + 1), dtype="int64"))
    outcome = validate(RES, raw, run_date=interval.run_date, divisions=DIVS,
                       history=load_history(engine, RES, interval))
    checks = check_dicts(outcome.checks)
    load_delivery(engine, RES, interval=interval, run_id="t", passed=outcome.passed,
                  quarantined=outcome.quarantined, checks=checks, extracted=outcome.evaluated,
                  extract_summary={"bytes": 1}, latest_update=outcome.latest_update)
    record_evidence(engine, RES, interval, checks, outcome.failures)
    return update_tickets(engine, CAT, RES.code, interval)


def events(engine, tid: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT action, from_state, to_state, actor FROM quality.ticket_events WHERE ticket_id = :t ORDER BY seq"),
            {"t": tid})]


GENDER = "id_gender:resident_id"
TID = ticket_id(RES.code, GENDER)


def test_ticket_whole_life(warehouse_engine):
    eng = warehouse_engine
    # D1: two rows whose declared gender contradicts the ID: a blocking ticket opens
    assert run_interval(eng, D1, [person(0, gender="女"), person(1, gender="女"), person(2)])["opened"] == 1
    [t] = list_tickets(eng)
    assert (t["ticket_id"], t["state"], t["failed"], t["unit"], t["assignee"], t["due_date"]) == (
        TID, "new", 2, "psb", "psb@example.gov.cn", "2026-11-27")  # blocking: due 7 days after the run date
    # the evidence: every failing row's raw key, and the query that reproduces them
    rows = failing_rows(eng, RES.code, D1.key, GENDER)
    assert [(r["row_num"], json.loads(r["row_key"])) for r in rows] == [(1, [MEN[0]]), (2, [MEN[1]])]
    assert all(r["record"] for r in rows)  # blocking: the quarantined record is there
    shown = get_ticket(eng, TID)
    assert "quality.check_failures" in shown["last_run"]["reproduce_sql"] and D1.key in shown["last_run"]["reproduce_sql"]
    with eng.connect() as c:
        assert len(c.execute(sa.text(shown["last_run"]["reproduce_sql"])).all()) == 2

    # rerun of the same interval: nothing changes, no event
    before = events(eng, TID)
    assert run_interval(eng, D1, [person(0, gender="女"), person(1, gender="女"), person(2)]) == {
        "opened": 0, "updated": 0, "resolved": 0, "reopened": 0, "unchanged": 1}
    assert events(eng, TID) == before

    # the unit acknowledges; a person cannot resolve it
    assert acknowledge(eng, TID, "psb-zhang", "seen")["state"] == "acknowledged"
    with pytest.raises(TicketError, match="cannot acknowledge"):
        acknowledge(eng, TID, "psb-zhang")
    # D2: one fixed at the source; the same ticket is updated, not a new one
    assert run_interval(eng, D2, [person(0, gender="女"), person(1), person(2)])["updated"] == 1
    assert rectify(eng, TID, "psb-zhang", "fixing the last one")["state"] == "rectifying"
    assert [(x["state"], x["failed"]) for x in list_tickets(eng)] == [("rectifying", 1)]
    # D3: the source fixed it; the passing run strikes it off (销号)
    assert run_interval(eng, D3, [person(0), person(1), person(2)])["resolved"] == 1
    assert list_tickets(eng, live_only=True) == []
    assert comment(eng, TID, "centre-li", "verified")["state"] == "resolved"
    # a backfill of an older failing interval does not override newer evidence
    assert update_tickets(eng, CAT, RES.code, D1)["unchanged"] >= 1
    # D4: it breaks again: reopened, due again
    assert run_interval(eng, D4, [person(0, gender="女"), person(1), person(2)])["reopened"] == 1
    [t] = list_tickets(eng)
    assert (t["state"], t["due_date"]) == ("reopened", "2026-11-30")
    assert overdue(t, date(2026, 12, 1)) and not overdue(t, date(2026, 11, 24))
    assert [(a, f, to) for a, f, to, _ in events(eng, TID)] == [
        ("opened", None, "new"), ("acknowledge", "new", "acknowledged"), ("updated", "acknowledged", "acknowledged"),
        ("rectify", "acknowledged", "rectifying"), ("resolved", "rectifying", "resolved"),
        ("comment", "resolved", "resolved"), ("reopened", "resolved", "reopened")]
    who = {a: actor for a, _, _, actor in events(eng, TID)}
    assert who["acknowledge"] == "psb-zhang" and who["resolved"] == "datarail" and who["comment"] == "centre-li"


def test_dispute_accepted_waives_the_rows_and_the_next_run_resolves(warehouse_engine):
    eng = warehouse_engine
    rows = [person(0, gender="女"), person(1)]  # a legacy record the unit says is right
    run_interval(eng, D1, rows)
    with pytest.raises(TicketError, match="unknown dispute reason"):
        dispute(eng, TID, "psb-zhang", "because", "x")
    with pytest.raises(TicketError, match="needs a comment"):
        dispute(eng, TID, "psb-zhang", "legacy_record", " ")
    t = dispute(eng, TID, "psb-zhang", "legacy_record", f"户籍原始登记如此，见 {MEN[0]}")
    assert (t["state"], t["dispute_status"]) == ("disputed", "pending")
    assert find_unmasked(get_ticket(eng, TID)["dispute_comment"]) == []  # scrubbed before it is stored
    t = accept_dispute(eng, TID, "centre-li", "confirmed with the 1990 register")
    assert (t["state"], t["dispute_status"]) == ("disputed", "accepted")  # a run resolves it, not a person
    with pytest.raises(TicketError, match="already accepted"):
        reject_dispute(eng, TID, "centre-li", "changed my mind")
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT check_id, row_key FROM quality.waivers")).all() == [
            (GENDER, json.dumps([MEN[0]]))]
    # a rerun of the interval the dispute was raised on keeps it as it is
    assert update_tickets(eng, CAT, RES.code, D1)["unchanged"] >= 1
    # D2: the same data; the waived key no longer fails, so the check passes: struck off
    assert run_interval(eng, D2, rows)["resolved"] == 1
    [t] = list_tickets(eng)
    assert t["state"] == "resolved"
    with eng.connect() as c:
        waived = c.execute(sa.text("SELECT waived FROM quality.check_runs WHERE interval_key = :k AND check_id = :c"),
                           {"k": D2.key, "c": GENDER}).scalar_one()
    assert waived == 1
    assert [a for a, *_ in events(eng, TID)] == ["opened", "dispute", "accept_dispute", "resolved"]
    # D3: another row breaks the same way: the waiver covered only the disputed row
    assert run_interval(eng, D3, [*rows, person(2, gender="女")])["reopened"] == 1


def test_dispute_rejected_sends_the_ticket_back_to_rectification(warehouse_engine):
    eng = warehouse_engine
    run_interval(eng, D1, [person(0, gender="女")])
    acknowledge(eng, TID, "psb-zhang")
    dispute(eng, TID, "psb-zhang", "false_positive", "the gender is right")
    with pytest.raises(TicketError, match="needs a comment"):
        reject_dispute(eng, TID, "centre-li", "")
    t = reject_dispute(eng, TID, "centre-li", "the ID's sex digit is authoritative")
    assert (t["state"], t["dispute_status"]) == ("rectifying", "rejected")
    with pytest.raises(TicketError, match="cannot accept-dispute"):
        accept_dispute(eng, TID, "centre-li", "no")
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM quality.waivers")).scalar_one() == 0
    run_interval(eng, D2, [person(0, gender="女")])  # still failing: still rectifying, same evidence, no event
    assert list_tickets(eng)[0]["state"] == "rectifying"
    assert [(a, f, to) for a, f, to, _ in events(eng, TID)] == [
        ("opened", None, "new"), ("acknowledge", "new", "acknowledged"), ("dispute", "acknowledged", "disputed"),
        ("reject_dispute", "disputed", "rectifying")]


def test_overdue_tickets_escalate_onto_the_supervision_list(warehouse_engine):
    eng = warehouse_engine
    run_interval(eng, D1, [person(0, gender="女"), person(1, phone="12345")])  # blocking (due 11-27) + warning (12-20)
    phone = ticket_id(RES.code, "phone:phone")
    assert escalate_overdue(eng, date(2026, 11, 27)) == []  # due today: not yet overdue
    assert escalate_overdue(eng, date(2026, 11, 28)) == [TID]
    assert escalate_overdue(eng, date(2026, 11, 29)) == []  # listed once
    [s] = supervision_list(eng)
    assert (s["ticket_id"], s["listed_on"], s["due_date"], s["state"]) == (TID, "2026-11-28", "2026-11-27", "new")
    assert [t["ticket_id"] for t in list_tickets(eng, supervised=True)] == [TID]
    assert {t["ticket_id"] for t in list_tickets(eng, overdue_on=date(2026, 12, 25))} == {TID, phone}
    # a dispute awaiting the data centre's decision does not escalate
    dispute(eng, phone, "psb-zhang", "source_correct", "it is a landline with an extension")
    assert escalate_overdue(eng, date(2026, 12, 25)) == []
    assert ("escalated", "new", "new") in [(a, f, to) for a, f, to, _ in events(eng, TID)]
    # fixed: the passing run strikes it off the list (销号)
    run_interval(eng, D2, [person(0), person(1, phone="12345")])
    assert supervision_list(eng) == []
    [s] = supervision_list(eng, current_only=False)
    assert s["delisted_on"] == D2.run_date.isoformat() and s["state"] == "resolved"


def test_a_truncated_snapshot_is_refused_and_the_previous_rows_stay(warehouse_engine):
    eng = warehouse_engine
    full = [person(i) for i in range(4)]
    for interval in (D1, D2, D3):
        run_interval(eng, interval, full)
    # D4 delivers a quarter of the usual rows: the volume check (blocking) refuses the delivery
    assert run_interval(eng, D4, full[:1])["opened"] == 1
    with eng.connect() as c:
        ods = c.execute(sa.text("SELECT COUNT(*) FROM ods.person")).scalar_one()
        run = c.execute(sa.text("SELECT extracted, loaded, quarantined FROM meta.runs WHERE interval_key = :k"),
                        {"k": D4.key}).one()
        volume = c.execute(sa.text("SELECT evaluated, failed, severity FROM quality.check_results "
                                   "WHERE interval_key = :k AND check_id = 'volume:rows'"), {"k": D4.key}).one()
    assert tuple(run) == (1, 0, 1) and tuple(volume) == (1, 1, "blocking")
    assert ods == 4  # the snapshot did not close the three keys the truncated delivery lacked
    [t] = list_tickets(eng, live_only=True)
    assert t["check_id"] == "volume:rows" and "median" in t["rule"]
