"""Cross-resource checks in the warehouse (GX's SQL engine on SQLite with attached areas and
on PostgreSQL): every ID of a marriage record exists in the household register, a licence
holder exists in the population library; results, uncapped evidence with the reproducing
query, tickets, waivers; and the row-level flags those tickets put on the share area."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
from stdnum.cn import ric

from catalog.models import Catalog, Resource, Unit
from datarail.interval import Interval
from quality.crosscheck import run_cross_checks
from quality.evidence import failing_rows
from quality.suite import warehouse_specs
from quality.tickets import accept_dispute, dispute, list_tickets, ticket_id
from sharing.publish import publish
from tests.helpers import CONSUMER, UNIT
from warehouse.load import load_delivery

pytestmark = pytest.mark.integration

D1, D2 = Interval.daily(date(2026, 11, 21)), Interval.daily(date(2026, 11, 22))


def rid(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


A, B, C, GHOST = (rid(f"33010219900101{n:03d}") for n in (1, 2, 3, 5))

SHARE = {"type": "unconditional"}
HOUSEHOLD = Resource.model_validate({
    "code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍", "name_en": "Household", "unit": "psb",
    "system": "huji", "location": {"table": "t_hjrk"}, "primary_key": ["resident_id"], "update_cycle": "daily",
    "sharing": SHARE, "base_library": "population",
    "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
               {"name": "name", "semantic": "person_name"}]})
MARRIAGE = Resource.model_validate({
    "code": "RK-MZ-0001", "table": "marriage_registration", "name_zh": "婚姻", "name_en": "Marriage", "unit": "psb",
    "system": "huji", "location": {"table": "hy"}, "primary_key": ["cert_no"], "update_cycle": "daily",
    "sharing": SHARE, "base_library": "population",
    "fields": [{"name": "cert_no", "required": True}, {"name": "male_id", "semantic": "resident_id"},
               {"name": "female_id", "semantic": "resident_id"}],
    "quality": {"checks": [{"kind": "exists", "field": "male_id", "ref": "RK-GA-0001"},
                           {"kind": "exists", "field": "female_id", "ref": "RK-GA-0001"}]}})
CARDS = Resource.model_validate({  # a licence: its holder must be in the population library (automatic)
    "code": "RK-GA-0002", "table": "identity_card", "name_zh": "身份证", "name_en": "ID cards", "unit": "psb",
    "system": "huji", "location": {"table": "sfz"}, "primary_key": ["resident_id"], "update_cycle": "daily",
    "sharing": SHARE, "base_library": "licence",
    "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True}, {"name": "issuer"}]})
CAT = Catalog(units=(Unit.model_validate(UNIT), Unit.model_validate(CONSUMER)),
              resources=(HOUSEHOLD, MARRIAGE, CARDS), responsibilities=(), items=())


def load(engine, resource: Resource, interval: Interval, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    frame["_row"] = range(1, len(rows) + 1)
    load_delivery(engine, resource, interval=interval, run_id="t", passed=frame,
                  quarantined=pd.DataFrame(columns=["_row", "key", "reasons", "record"]), checks=[],
                  extracted=len(rows), extract_summary={"bytes": 1}, latest_update=None)


def world(engine, interval: Interval, marriages: list[dict]) -> None:
    load(engine, HOUSEHOLD, interval, [{"resident_id": p, "name": "某"} for p in (A, B, C)])
    load(engine, MARRIAGE, interval, marriages)
    load(engine, CARDS, interval, [{"resident_id": A, "issuer": "x"}, {"resident_id": GHOST, "issuer": "y"}])
    with engine.begin() as c:  # the population library, as warehouse_sql/base builds it
        c.execute(sa.text("DROP TABLE IF EXISTS base.population"))
        c.execute(sa.text("CREATE TABLE base.population AS SELECT resident_id, name FROM ods.household_register"))


def test_specs_resolve_references():
    specs = {s.check_id: s.params for s in warehouse_specs(MARRIAGE, CAT) + warehouse_specs(CARDS, CAT)}
    assert specs["exists:male_id"]["ref_table"] == "household_register"
    assert (specs["exists:resident_id"]["ref_schema"], specs["exists:resident_id"]["ref_table"]) == (
        "base", "population")
    bad = MARRIAGE.model_copy(update={"quality": MARRIAGE.quality.model_copy(update={"checks": (
        MARRIAGE.quality.checks[0].model_copy(update={"ref": "RK-NOPE"}),)})})
    with pytest.raises(Exception, match="unknown 'RK-NOPE'"):
        warehouse_specs(bad, CAT)


def test_cross_checks_results_evidence_tickets_and_flags(warehouse_engine):
    eng = warehouse_engine
    marriages = [{"cert_no": "J1", "male_id": A, "female_id": B}, {"cert_no": "J2", "male_id": GHOST, "female_id": C},
                 {"cert_no": "J3", "male_id": None, "female_id": C}]
    world(eng, D1, marriages)
    out = run_cross_checks(eng, CAT, D1)
    assert out == {"RK-MZ-0001": {"exists:male_id": 1, "exists:female_id": 0},
                   "RK-GA-0002": {"exists:resident_id": 1}}
    with eng.connect() as c:
        res = {tuple(r[:2]): r[2:] for r in c.execute(sa.text(
            "SELECT resource, check_id, evaluated, failed, severity, failed_keys FROM quality.check_results"))}
        run = c.execute(sa.text("SELECT scope, expectation, observed, reproduce_sql FROM quality.check_runs "
                                "WHERE check_id = 'exists:male_id'")).one()
    assert res[("RK-MZ-0001", "exists:male_id")][:3] == (3, 1, "warning")
    assert json.loads(res[("RK-MZ-0001", "exists:male_id")][3]) == ['["J2"]']  # masked key texts
    assert (run.scope, run.expectation, run.observed) == ("warehouse", "unexpected_rows_expectation", "1")
    with eng.connect() as c:  # the stored query reproduces the failing rows
        assert [tuple(r) for r in c.execute(sa.text(run.reproduce_sql))] == [("J2", GHOST)]
    assert [json.loads(r["row_key"]) for r in failing_rows(eng, "RK-MZ-0001", D1.key, "exists:male_id")] == [["J2"]]
    tickets = {(t["resource"], t["check_id"]): t for t in list_tickets(eng)}
    assert set(tickets) == {("RK-MZ-0001", "exists:male_id"), ("RK-GA-0002", "exists:resident_id")}
    assert tickets[("RK-MZ-0001", "exists:male_id")]["severity"] == "warning"
    # the rows stay published, flagged: consumers see they are under rectification
    publish(eng, CAT, D1, threshold=0.95)
    with eng.connect() as c:
        flags = dict(c.execute(sa.text("SELECT cert_no, _quality_status FROM share.marriage_registration")).all())
        cards = dict(c.execute(sa.text("SELECT resident_id, _quality_status FROM share.identity_card")).all())
    assert flags == {"J1": "ok", "J2": "under_rectification", "J3": "ok"}
    assert cards == {A: "ok", GHOST: "under_rectification"}
    # rerun: same results, no new ticket event
    with eng.connect() as c:
        n_events = c.execute(sa.text("SELECT COUNT(*) FROM quality.ticket_events")).scalar_one()
    assert run_cross_checks(eng, CAT, D1) == out
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM quality.ticket_events")).scalar_one() == n_events

    # the unit disputes the card holder (moved in, not registered yet): flagged disputed, then accepted
    tid = ticket_id("RK-GA-0002", "exists:resident_id")
    dispute(eng, tid, "psb-wang", "source_correct", "registered in another province")
    publish(eng, CAT, D1, threshold=0.95)
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT _quality_status FROM share.identity_card WHERE resident_id = :r"),
                         {"r": GHOST}).scalar_one() == "disputed"
    accept_dispute(eng, tid, "centre-li", "confirmed")
    # D2: the marriage fixed at the source; the waived holder passes: both struck off
    world(eng, D2, [{"cert_no": "J1", "male_id": A, "female_id": B}, {"cert_no": "J2", "male_id": C, "female_id": B}])
    assert run_cross_checks(eng, CAT, D2) == {"RK-MZ-0001": {"exists:male_id": 0, "exists:female_id": 0},
                                              "RK-GA-0002": {"exists:resident_id": 0}}
    assert list_tickets(eng, live_only=True) == []
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT waived FROM quality.check_runs WHERE interval_key = :k "
                                 "AND resource = 'RK-GA-0002'"), {"k": D2.key}).scalar_one() == 1


def test_a_missing_reference_table_is_not_checked(warehouse_engine):
    eng = warehouse_engine
    load(eng, MARRIAGE, D1, [{"cert_no": "J1", "male_id": A, "female_id": B}])
    assert run_cross_checks(eng, CAT, D1) == {}  # no household register and no population library yet
