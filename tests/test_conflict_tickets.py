"""Cross-source conflicts reach the authoritative unit as feedback tickets (quality/conflicts.py),
on both engines: one warning check per compared attribute of the authoritative resource, masked
keys and samples, the reproducing query, idempotent reruns, resolution once the sources agree."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from datarail.privacy import find_unmasked
from quality.conflicts import conflict_checks, run_conflict_checks
from quality.tickets import list_tickets, ticket_id
from tests.warehouse_fixtures import D1, D2, D3, demo_catalog, load, rows
from warehouse.models import build_base_libraries

pytestmark = pytest.mark.integration

P1, P2 = "330102199001011234", "330102199202022345"
CO = "91330100MA2XXXXX1A"


def res(table):
    return demo_catalog().resource_by_table(table)


def world(engine, interval, *, wife="李肆", credit_name="杭州某某科技有限责任公司"):
    """The register says 李四 and 杭州某某科技有限公司; the marriage record and the credit
    platform say otherwise (unless told to agree)."""
    stamp = "2026-11-19 08:00:00"
    load(engine, res("household_register"), interval, [
        {"resident_id": P1, "name": "张三", "gender": "男", "birth_date": "1990-01-01", "division_code": "330102",
         "address": "杭州市上城区解放路1号", "reg_status": "正常", "updated_at": stamp},
        {"resident_id": P2, "name": "李四", "gender": "女", "birth_date": "1992-02-02", "division_code": "330102",
         "address": "杭州市上城区解放路1号", "reg_status": "正常", "updated_at": stamp}])
    load(engine, res("marriage_registration"), interval, [
        {"cert_no": "J1", "reg_type": "结婚", "male_id": P1, "male_name": "张三", "female_id": P2, "female_name": wife,
         "reg_date": "2015-05-01", "reg_division": "330102", "reg_office": "上城区婚姻登记处", "updated_at": stamp}])
    load(engine, res("business_registration"), interval, [
        {"uscc": CO, "name": "杭州某某科技有限公司", "legal_rep_name": "张三", "legal_rep_id": P1,
         "division_code": "330102", "address": "杭州市上城区1号", "established_date": "2012-01-01",
         "reg_authority": "上城区市场监督管理局", "status": "在业", "updated_at": stamp}])
    load(engine, res("public_credit_record"), interval, [
        {"decision_no": "杭市监许〔2025〕1号", "uscc": CO, "entity_name": credit_name, "legal_rep_name": "张三",
         "record_type": "行政许可", "content": "准予食品经营许可", "authority": "杭州市市场监督管理局",
         "authority_division": "330100", "decision_date": "2025-01-02", "valid_until": "2030-01-01",
         "updated_at": stamp}])


def test_every_compared_attribute_has_its_authority():
    checks = {(c.library, c.attribute): c.authority.code for c in conflict_checks(demo_catalog())}
    assert checks == {("population", a): "RK-GA-0001" for a in ("name", "gender", "birth_date", "address")} | {
        ("legal_entity", a): "FR-SC-0001" for a in ("name", "legal_rep_name", "address")}


def test_conflicts_become_tickets_of_the_authoritative_unit_and_resolve(warehouse_engine):
    eng, cat = warehouse_engine, demo_catalog()
    world(eng, D1)
    build_base_libraries(eng, cat, D1)
    out = run_conflict_checks(eng, cat, D1)
    assert out == {
        "RK-GA-0001": {"conflict:population.name": 1, "conflict:population.gender": 0,
                       "conflict:population.birth_date": 0, "conflict:population.address": 0},
        "FR-SC-0001": {"conflict:legal_entity.name": 1, "conflict:legal_entity.legal_rep_name": 0,
                       "conflict:legal_entity.address": 0}}
    tickets = {t["ticket_id"]: t for t in list_tickets(eng)}
    name = tickets[ticket_id("RK-GA-0001", "conflict:population.name")]
    entity = tickets[ticket_id("FR-SC-0001", "conflict:legal_entity.name")]
    assert len(tickets) == 2
    assert (name["unit"], name["severity"], name["state"], name["failed"], name["evaluated"]) == (
        "psb", "warning", "new", 1, 2)
    assert (entity["unit"], entity["failed"], entity["field"]) == ("amr", 1, "name")
    # masked on the way out: the subject's ID and both spellings of the name
    with eng.connect() as c:
        stored = c.execute(sa.text("SELECT failed_keys, sample FROM quality.tickets WHERE ticket_id = :t"),
                           {"t": name["ticket_id"]}).one()
        sql = c.execute(sa.text("SELECT reproduce_sql FROM quality.check_runs WHERE resource = 'RK-GA-0001' "
                                "AND check_id = 'conflict:population.name'")).scalar_one()
        reproduced = [tuple(r) for r in c.execute(sa.text(sql))]
        evidence = c.execute(sa.text("SELECT row_key FROM quality.check_failures WHERE resource = 'RK-GA-0001' "
                                     "AND check_id = 'conflict:population.name'")).scalars().all()
    assert find_unmasked(stored.failed_keys + stored.sample) == []
    assert json.loads(stored.failed_keys) == [json.dumps(["330102********2345"])]
    assert json.loads(stored.sample) == [{"resident_id": "330102********2345", "name": "李*",
                                          "other_resource": "RK-MZ-0001", "other_value": "李*"}]
    assert [r[:4] for r in reproduced] == [(P2, "RK-MZ-0001", "李肆", "李四")]
    assert evidence == [json.dumps([P2])]  # raw keys stay inside the warehouse

    # a rerun of the interval changes nothing
    events = rows(eng, "SELECT COUNT(*) FROM quality.ticket_events")
    assert run_conflict_checks(eng, cat, D1) == out
    assert rows(eng, "SELECT COUNT(*) FROM quality.ticket_events") == events

    # the sources agree again: the next run strikes both tickets off (销号)
    world(eng, D2, wife="李四", credit_name="杭州某某科技有限公司")
    build_base_libraries(eng, cat, D2)
    run_conflict_checks(eng, cat, D2)
    assert {t["state"] for t in list_tickets(eng)} == {"resolved"}


def test_no_results_without_a_run_of_the_authority(warehouse_engine):
    eng, cat = warehouse_engine, demo_catalog()
    world(eng, D1)
    build_base_libraries(eng, cat, D1)
    load(eng, res("marriage_registration"), D3, [])  # only the marriage register delivers in D3
    assert run_conflict_checks(eng, cat, D3) == {}
    assert rows(eng, "SELECT COUNT(*) FROM quality.check_results WHERE interval_key = :k", k=D3.key) == [(0,)]
