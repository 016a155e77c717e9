"""Base libraries on both engines: population merging five departments with per-attribute
provenance, legal entity + credit, licences with status, cross-source conflicts attributed
to the authoritative source, incremental builds equal to full ones, as-of and lineage."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from tests.warehouse_fixtures import D1, D2, D3, day, demo_catalog, load, rows
from warehouse.history import asof, checksums, lineage
from warehouse.models import base_models, build_base_libraries

pytestmark = pytest.mark.integration

P1, P2, P3 = "330102199001011234", "330102199202022345", "330102201503033456"  # values need not be valid here
CO, CO2 = "91330100MA2XXXXX1A", "91330100MA2YYYYY2B"


def res(table):
    return demo_catalog().resource_by_table(table)


def hr(rid, name, birth="1990-01-01", address="杭州市上城区解放路1号", gender="男"):
    return {"resident_id": rid, "name": name, "gender": gender, "birth_date": birth, "division_code": "330102",
            "address": address, "reg_status": "正常", "updated_at": "2026-11-19 08:00:00"}


def idc(rid, name, birth="1990-01-01", address="杭州市上城区解放路1号", valid_to="2040-01-01", gender="男"):
    return {"resident_id": rid, "name": name, "gender": gender, "birth_date": birth, "address": address,
            "issuing_authority": "杭州市公安局上城分局", "valid_from": "2020-01-01", "valid_to": valid_to,
            "updated_at": "2026-11-19 08:00:00"}


def marriage(cert, kind, male, male_name, female, female_name, on):
    return {"cert_no": cert, "reg_type": kind, "male_id": male, "male_name": male_name, "female_id": female,
            "female_name": female_name, "reg_date": on, "reg_division": "330102", "reg_office": "上城区婚姻登记处",
            "updated_at": "2026-11-19 08:00:00"}


def load_world(engine, interval=D1, *, p2_idc_birth="1992-02-02", p1_name="张三"):
    load(engine, res("household_register"), interval, [hr(P1, p1_name), hr(P2, "李四", "1992-02-02", gender="女")])
    load(engine, res("identity_card"), interval, [
        idc(P1, p1_name), idc(P2, "李四", p2_idc_birth, gender="女"),
        idc(P3, "王小五", "2015-03-03", valid_to="2020-06-01")])  # P3: no register row, card expired
    load(engine, res("marriage_registration"), interval, [
        marriage("J1", "结婚", P1, p1_name, P2, "李四", "2015-05-01"),
        marriage("L1", "离婚", P1, p1_name, P2, "李四", "2019-05-01"),
        marriage("J2", "结婚", P1, p1_name, P2, "李四", "2021-05-01")])
    load(engine, res("degree_certificate"), interval, [
        {"cert_no": "D1", "resident_id": P1, "name": p1_name, "school": "浙江大学", "major": "数学", "level": "本科",
         "degree": "学士", "graduation_date": "2012-06-30", "conclusion": "毕业"},
        {"cert_no": "D2", "resident_id": P1, "name": p1_name, "school": "浙江大学", "major": "数学",
         "level": "硕士研究生", "degree": "硕士", "graduation_date": "2010-06-30", "conclusion": "毕业"}])
    load(engine, res("social_insurance"), interval, [
        {"resident_id": P1, "name": p1_name, "insurance_type": t, "employer_uscc": CO, "start_date": "2012-07-01",
         "status": s, "division_code": "330102", "updated_at": "2026-11-19 08:00:00"}
        for t, s in (("城镇职工基本养老保险", "参保缴费"), ("失业保险", "暂停缴费"))])
    load(engine, res("provident_fund_account"), interval, [
        {"account_no": "F1", "resident_id": P2, "name": "李四", "employer_name": "某公司", "open_date": "2015-01-01",
         "status": "正常"}])
    load(engine, res("business_registration"), interval, [
        {"uscc": CO, "name": "杭州某某科技有限公司", "legal_rep_name": p1_name, "legal_rep_id": P1,
         "division_code": "330102", "address": "杭州市上城区1号", "established_date": "2012-01-01",
         "reg_authority": "上城区市场监督管理局", "status": "在业", "updated_at": "2026-11-19 08:00:00"},
        {"uscc": CO2, "name": "杭州某某贸易有限公司", "legal_rep_name": "李四", "legal_rep_id": P2,
         "division_code": "330102", "address": "杭州市上城区2号", "established_date": "2012-01-01",
         "reg_authority": "上城区市场监督管理局", "status": "吊销", "updated_at": "2026-11-19 08:00:00"}])
    load(engine, res("business_licence"), interval, [
        {"licence_no": "L-1", "uscc": CO, "name": "杭州某某科技有限公司", "legal_rep_name": p1_name,
         "address": "杭州市上城区1号", "issue_date": "2012-01-01", "valid_from": "2012-01-01",
         "issuing_authority": "上城区市场监督管理局", "updated_at": "2026-11-19 08:00:00"},
        {"licence_no": "L-2", "uscc": CO2, "name": "杭州某某贸易公司", "legal_rep_name": "李四",
         "address": "杭州市上城区2号", "issue_date": "2012-01-01", "valid_from": "2012-01-01",
         "issuing_authority": "上城区市场监督管理局", "updated_at": "2026-11-19 08:00:00"}])
    load(engine, res("provident_fund_loan"), interval, [
        {"contract_no": "C1", "resident_id": P2, "name": "李四", "loan_amount": 500000.0, "term_months": 240,
         "loan_date": "2016-01-01", "status": "逾期"}])


def by_id(engine, table, key):
    with engine.connect() as c:
        return {r[key]: dict(r) for r in c.execute(sa.text(f"SELECT * FROM {table}")).mappings()}


def test_population_merges_sources_with_provenance(warehouse_engine):
    load_world(warehouse_engine)
    out = build_base_libraries(warehouse_engine, demo_catalog(), D1)
    assert out["tables"]["base.population"] == 3
    pop = by_id(warehouse_engine, "base.population", "resident_id")
    p1 = pop[P1]
    assert (p1["name"], p1["name_src"], day(p1["name_src_at"])) == ("张三", "RK-GA-0001", "2026-11-20")
    assert (p1["marital_status"], day(p1["marital_status_since"]), p1["marital_status_src"]) == (
        "已婚", "2021-05-01", "RK-MZ-0001")
    assert (p1["highest_degree_level"], p1["highest_degree_src"]) == ("硕士研究生", "RK-JY-0001")  # highest, not latest
    assert (p1["insurance_types"], p1["insurance_paying"], p1["insurance_src"]) == (2, 1, "RK-RS-0001")
    assert p1["hpf_account_src"] is None
    assert (pop[P2]["hpf_account_status"], pop[P2]["hpf_account_src"]) == ("正常", "RK-GJJ-0001")
    # P3 has no household-register row: identity from the identity card, says so
    p3 = pop[P3]
    assert (p3["name"], p3["name_src"], p3["registration_src"], p3["marital_status"]) == (
        "王小五", "RK-GA-0002", None, "未登记")


def test_legal_entity_credit_and_licences(warehouse_engine):
    load_world(warehouse_engine)
    build_base_libraries(warehouse_engine, demo_catalog(), D3)
    le = by_id(warehouse_engine, "base.legal_entity", "uscc")
    assert (le[CO]["licence_no"], le[CO]["insured_employees"], le[CO]["credit_level"]) == ("L-1", 1, "良好")
    assert (le[CO2]["credit_level"], le[CO2]["negative_records"], le[CO2]["registration_src"]) == (
        "失信", 1, "FR-SC-0001")
    credit = by_id(warehouse_engine, "base.credit", "subject_id")
    assert (credit[P2]["subject_kind"], credit[P2]["overdue_loans"], credit[P2]["credit_level"]) == (
        "natural_person", 1, "关注")
    lic = {(r[0], r[1]): r[2] for r in rows(warehouse_engine,
                                             "SELECT licence_type, licence_no, status FROM base.licence "
                                             "WHERE holder_id IN (:a, :c) OR licence_no = 'L-2'", a=P1, c=P3)}
    assert lic[("结婚证", "J1")] == "失效"  # divorced in 2019
    assert lic[("结婚证", "J2")] == "有效"
    assert lic[("居民身份证", P3)] == "过期"
    assert lic[("居民身份证", P1)] == "有效"
    assert lic[("营业执照", "L-2")] == "吊销"
    assert lic[("学历学位证书", "D2")] == "有效"


def test_models_run_in_dependency_order():
    order = [m.target for m in base_models()]
    assert order.index("base.credit") < order.index("base.legal_entity")
    assert {m.ident for m in base_models()} >= {"base.population", "base.legal_entity", "base.credit", "base.licence",
                                                "quality.conflicts.population", "quality.conflicts.legal_entity"}


def conflicts(engine):
    return sorted(rows(engine, "SELECT library, subject_id, attribute, resource, unit, authority_value, "
                               "other_resource, other_value FROM quality.conflicts"))


def test_conflicts_are_attributed_to_the_authoritative_source(warehouse_engine):
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")
    # the marriage register spells P1's name differently
    load(warehouse_engine, res("marriage_registration"), D2, [
        marriage("J1", "结婚", P1, "张叁", P2, "李四", "2015-05-01"),
        marriage("L1", "离婚", P1, "张三", P2, "李四", "2019-05-01"),
        marriage("J2", "结婚", P1, "张三", P2, "李四", "2021-05-01")])
    build_base_libraries(warehouse_engine, demo_catalog(), D2)
    assert conflicts(warehouse_engine) == [
        ("legal_entity", CO2, "name", "FR-SC-0001", "amr", "杭州某某贸易有限公司", "FR-SC-0002", "杭州某某贸易公司"),
        ("population", P1, "name", "RK-GA-0001", "psb", "张三", "RK-MZ-0001", "张叁"),
        ("population", P2, "birth_date", "RK-GA-0001", "psb", "1992-02-02", "RK-GA-0002", "1992-12-02"),
    ]
    with warehouse_engine.connect() as c:  # the quality loop turns conflicts into tickets, not this build
        assert c.execute(sa.text("SELECT COUNT(*) FROM quality.tickets")).scalar() == 0


def test_catalog_declared_authority_wins(warehouse_engine):
    cat = demo_catalog()
    card = res("identity_card").model_copy(update={"authoritative_for": ("population.birth_date",)})
    cat = cat.model_copy(update={"resources": tuple(card if r.code == card.code else r for r in cat.resources)})
    assert cat.authority("population.birth_date").code == "RK-GA-0002"
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")
    build_base_libraries(warehouse_engine, cat, D1)
    got = [x for x in conflicts(warehouse_engine) if x[2] == "birth_date"]
    assert got == [("population", P2, "birth_date", "RK-GA-0002", "psb", "1992-12-02", "RK-GA-0001", "1992-02-02")]


def test_conflicts_keep_their_first_interval_and_resolve(warehouse_engine):
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")
    build_base_libraries(warehouse_engine, demo_catalog(), D1)
    load_world(warehouse_engine, D2, p2_idc_birth="1992-12-02")
    build_base_libraries(warehouse_engine, demo_catalog(), D2)
    assert rows(warehouse_engine, "SELECT first_interval, last_interval FROM quality.conflicts "
                                  "WHERE library = 'population'") == [(D1.key, D2.key)]
    load_world(warehouse_engine, D3)  # the identity card is corrected
    build_base_libraries(warehouse_engine, demo_catalog(), D3)
    assert rows(warehouse_engine, "SELECT COUNT(*) FROM quality.conflicts WHERE library = 'population'") == [(0,)]


def base_state(engine):
    return {k: v for k, v in checksums(engine, areas=("base", "quality")).items()
            if k.startswith("base.") or k == "quality.conflicts"}


def test_incremental_build_equals_full_build(warehouse_engine):
    cat = demo_catalog()
    load_world(warehouse_engine)
    first = build_base_libraries(warehouse_engine, cat, D1)
    assert {b["target"]: b["mode"] for b in first["builds"]}["base.population"] == "full"
    # D2: P1 renamed, P2's card changes birth date (a conflict), P3's card is gone (snapshot
    # delete), a new divorce for the couple; nothing else changes
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")])  # watermark: only the change
    load(warehouse_engine, res("identity_card"), D2, [idc(P1, "张三丰"), idc(P2, "李四", "1992-12-02", gender="女")])
    load(warehouse_engine, res("marriage_registration"), D2, [
        marriage("L2", "离婚", P1, "张三丰", P2, "李四", "2026-11-01")])
    inc = build_base_libraries(warehouse_engine, cat, D2)
    modes = {b["target"]: (b["mode"], b["scope_keys"]) for b in inc["builds"]}
    assert modes["base.population"] == ("incremental", 3)
    assert modes["quality.conflicts.population"] == ("incremental", 3)
    assert modes["base.licence"][0] == "full"
    incremental = base_state(warehouse_engine)
    pop = by_id(warehouse_engine, "base.population", "resident_id")
    assert set(pop) == {P1, P2}
    assert (pop[P1]["name"], pop[P1]["marital_status"], day(pop[P1]["name_src_at"])) == ("张三丰", "离婚", "2026-11-21")
    build_base_libraries(warehouse_engine, cat, D2, full=True)
    assert base_state(warehouse_engine) == incremental
    # nothing new loaded: the next build touches no subject and changes nothing
    again = build_base_libraries(warehouse_engine, cat, D2)
    assert {b["target"]: b["scope_keys"] for b in again["builds"]}["base.population"] == 0
    assert base_state(warehouse_engine) == incremental


def test_rebuild_of_the_same_interval_is_identical(warehouse_engine):
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")
    build_base_libraries(warehouse_engine, demo_catalog(), D1)
    first = base_state(warehouse_engine)
    build_base_libraries(warehouse_engine, demo_catalog(), D1, full=True)
    assert base_state(warehouse_engine) == first


def test_asof_base_library(warehouse_engine):
    cat = demo_catalog()
    load_world(warehouse_engine)
    load(warehouse_engine, res("household_register"), D3, [hr(P1, "张三丰")])
    build_base_libraries(warehouse_engine, cat, D3)
    name_on = lambda d: [(r["name"], r["name_src"]) for r in asof(warehouse_engine, cat, "base.population", P1, d)]  # noqa: E731
    assert name_on(date(2026, 11, 19)) == []
    assert name_on(date(2026, 11, 21)) == [("张三", "RK-GA-0001")]
    assert name_on(date(2026, 11, 22)) == [("张三丰", "RK-GA-0001")]
    # a base library reading another one (legal entity <- credit) is rebuilt as of the date too
    assert [r["credit_level"] for r in asof(warehouse_engine, cat, "base.legal_entity", CO2, date(2026, 11, 20))] == [
        "失信"]
    # licence status is evaluated on the as-of date: P3's card expired on 2020-06-01
    status = lambda d: {r["licence_no"]: r["status"] for r in asof(warehouse_engine, cat, "base.licence", P3, d)}  # noqa: E731
    assert status(date(2026, 11, 20)) == {P3: "过期"}


def test_lineage_names_resources_and_runs(warehouse_engine):
    cat = demo_catalog()
    load_world(warehouse_engine)
    build_base_libraries(warehouse_engine, cat, D1)
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")], run_id="second")
    build_base_libraries(warehouse_engine, cat, D2)
    info = lineage(warehouse_engine, cat, "base.population")
    assert {s["resource"] for s in info["sources"]} == {"RK-GA-0001", "RK-GA-0002", "RK-MZ-0001", "RK-JY-0001",
                                                       "RK-RS-0001", "RK-GJJ-0001"}
    psb = next(s for s in info["sources"] if s["resource"] == "RK-GA-0001")
    assert psb["interval_key"] == D2.key
    assert [run for _, run in psb["runs"]] == ["r-20261120", "second-20261121"]
    assert [b["mode"] for b in info["builds"]][:2] == ["incremental", "full"]
    le = lineage(warehouse_engine, cat, "base.legal_entity")
    assert "base.credit" in {s["resource"] for s in le["sources"]}


def test_parallel_partitioned_full_build_equals_serial(warehouse_engine, monkeypatch):
    """PostgreSQL builds big keyed models as hash partitions filled side by side; the result
    (and the incremental builds on it) must equal a one-statement build."""
    if warehouse_engine.dialect.name != "postgresql":
        pytest.skip("parallel partitioned builds are PostgreSQL's")
    from warehouse import models as models_module
    from warehouse.history import table_checksum

    cat = demo_catalog()
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")

    def population():
        with warehouse_engine.connect() as c:
            return table_checksum(c, "base", "population")
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 1)
    build_base_libraries(warehouse_engine, cat, D1, full=True)
    serial = population()
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 3)
    monkeypatch.setattr(models_module, "PARALLEL_MIN_ROWS", 0)
    out = build_base_libraries(warehouse_engine, cat, D1, full=True, only=["base.population", "base.credit"])
    assert {b["target"]: b["mode"] for b in out["builds"]} == {"base.population": "full", "base.credit": "full"}
    assert population() == serial
    assert rows(warehouse_engine, "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'base.population'::regclass") == [
        (3,)]
    # incremental on the partitioned table, then a serial full rebuild replaces it
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")])
    build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])
    incremental = population()
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 1)
    build_base_libraries(warehouse_engine, cat, D2, full=True, only=["base.population"])
    assert population() == incremental
