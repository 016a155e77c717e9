"""Base libraries on both engines: population merging five departments with per-attribute
provenance, legal entity + credit, licences with status, cross-source conflicts attributed
to the authoritative source, incremental builds equal to full ones, as-of and lineage."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from tests.warehouse_fixtures import D1, D2, D3, D4, day, demo_catalog, load, rows
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


def credit(no, uscc, kind, on, until, name="杭州某某科技有限公司", content=None):
    return {"decision_no": no, "uscc": uscc, "entity_name": name, "legal_rep_name": "张三", "record_type": kind,
            "content": content, "authority": "杭州市市场监督管理局", "authority_division": "330100",
            "decision_date": on, "valid_until": until, "updated_at": "2026-11-19 08:00:00"}


CO3 = "91330100MA2ZZZZZ3C"  # known to the credit platform only


def test_credit_platform_records_feed_credit_legal_entity_and_licences(warehouse_engine):
    load_world(warehouse_engine)
    load(warehouse_engine, res("public_credit_record"), D3, [
        credit("许1", CO, "行政许可", "2025-01-02", "2030-01-01", content="准予食品经营许可"),
        credit("许0", CO, "行政许可", "2015-01-02", "2020-01-01", content="准予食品经营许可"),  # expired
        credit("罚1", CO, "行政处罚", "2026-03-01", "2027-03-01"),
        credit("罚0", CO, "行政处罚", "2020-03-01", "2021-03-01"),  # publicity ended
        credit("黑1", CO2, "黑名单", "2025-06-01", "2028-06-01", name="杭州某某贸易有限公司"),
        credit("红1", CO3, "红名单", "2026-04-01", "2027-12-31", name="杭州某某网络有限公司")])
    build_base_libraries(warehouse_engine, demo_catalog(), D3)
    c = by_id(warehouse_engine, "base.credit", "subject_id")
    assert (c[CO]["credit_records"], c[CO]["licences_in_force"], c[CO]["penalties_in_force"], c[CO]["black_list"],
            c[CO]["negative_records"], c[CO]["credit_level"]) == (4, 1, 1, 0, 1, "关注")
    assert (c[CO]["credit_records_src"], day(c[CO]["credit_records_src_at"]), c[CO]["subject_name_src"]) == (
        "FR-FG-0001", "2026-11-22", "FR-SC-0001")
    assert (c[CO2]["black_list"], c[CO2]["negative_records"], c[CO2]["credit_level"]) == (1, 2, "失信")  # + revoked
    assert (c[CO3]["subject_name"], c[CO3]["subject_name_src"], c[CO3]["registration_status"],
            c[CO3]["credit_level"]) == ("杭州某某网络有限公司", "FR-FG-0001", None, "守信")
    le = by_id(warehouse_engine, "base.legal_entity", "uscc")
    assert CO3 not in le  # one row per registered entity
    assert (le[CO]["credit_level"], le[CO]["penalties_in_force"], le[CO]["credit_src"], day(le[CO]["credit_src_at"]),
            day(le[CO]["last_credit_decision_date"])) == ("关注", 1, "FR-FG-0001", "2026-11-22", "2026-03-01")
    assert (le[CO2]["credit_level"], le[CO2]["black_list"]) == ("失信", 1)
    lic = {r[0]: r[1:] for r in rows(warehouse_engine, "SELECT licence_no, licence_type, holder_id, status, "
                                                       "licence_src FROM base.licence WHERE licence_no LIKE '许%'")}
    assert lic == {"许1": ("食品经营许可", CO, "有效", "FR-FG-0001"), "许0": ("食品经营许可", CO, "过期", "FR-FG-0001")}


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
    assert cat.authority("population.birth_date").code == "RK-GA-0001"  # the demo catalog declares the register
    # the catalog moves birth dates to the identity card (one authority per attribute)
    card = res("identity_card").model_copy(update={"authoritative_for": ("population.birth_date",)})
    register = res("household_register")
    register = register.model_copy(update={"authoritative_for": tuple(
        a for a in register.authoritative_for if a != "population.birth_date")})
    moved = {card.code: card, register.code: register}
    cat = cat.model_copy(update={"resources": tuple(moved.get(r.code, r) for r in cat.resources)})
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


def test_change_capture_sees_new_keys_reruns_and_first_loads(warehouse_engine):
    """Incremental builds find their subjects in the change journal (new keys, updates, and a
    rerun that replaces a version in place, which leaves no history row) and in history
    (closed versions); a first load into an empty table journals nothing and counts whole."""
    cat = demo_catalog()
    pop = ["base.population"]

    def build(interval):
        out = build_base_libraries(warehouse_engine, cat, interval, only=pop)["builds"][0]
        got = population_state(warehouse_engine)
        build_base_libraries(warehouse_engine, cat, interval, full=True, only=pop)
        assert population_state(warehouse_engine) == got  # incremental == full
        return out["mode"], out["scope_keys"]

    load(warehouse_engine, res("household_register"), D1, [hr(P1, "张三"), hr(P2, "李四", gender="女")])
    load(warehouse_engine, res("identity_card"), D1, [idc(P1, "张三"), idc(P2, "李四", gender="女")])
    load(warehouse_engine, res("marriage_registration"), D1, [marriage("J1", "结婚", P1, "张三", P2, "李四", "2015-05-01")])
    assert build(D1)[0] == "full"
    journal = lambda: sorted(r[0] for r in rows(  # noqa: E731
        warehouse_engine, "SELECT resident_id FROM ods.household_register_changes"))
    # D2: a new resident and a changed one. D1 was a first load (nothing journaled); D2 wrote
    # P3 (P1's previous version is in history, closed by D2)
    load(warehouse_engine, res("household_register"), D2, [hr(P3, "王小五"), hr(P1, "张三丰")])
    assert journal() == [P3]
    assert build(D2) == ("incremental", 2)
    assert journal() == []  # consumed by the only reader built so far: pruned
    # D2 again with P3's name corrected: replaced in place, no history row; only the journal has it
    load(warehouse_engine, res("household_register"), D2, [hr(P3, "王晓武"), hr(P1, "张三丰")])
    assert journal() == [P3]
    assert build(D2) == ("incremental", 1)
    assert by_id(warehouse_engine, "base.population", "resident_id")[P3]["name"] == "王晓武"
    # D3: the degree register's first load (straight into its empty table): every row counts
    load(warehouse_engine, res("degree_certificate"), D3, [
        {"cert_no": "D1", "resident_id": P1, "name": "张三丰", "school": "浙江大学", "major": "数学", "level": "本科",
         "degree": "学士", "graduation_date": "2012-06-30", "conclusion": "毕业"}])
    assert rows(warehouse_engine, "SELECT COUNT(*) FROM ods.degree_certificate_changes") == [(0,)]
    assert build(D3) == ("incremental", 1)
    assert by_id(warehouse_engine, "base.population", "resident_id")[P1]["highest_degree"] == "学士"
    # D4: the marriage record corrected to another husband: the subject column changed, so both
    # the old husband (history) and the new one (the current row of a key history closed) count
    load(warehouse_engine, res("marriage_registration"), D4, [marriage("J1", "结婚", P3, "王晓武", P2, "李四", "2015-05-01")])
    assert build(D4) == ("incremental", 3)
    people = by_id(warehouse_engine, "base.population", "resident_id")
    assert (people[P1]["marital_status"], people[P3]["marital_status"]) == ("未登记", "已婚")
    # D1 again, later intervals loaded (a backfill: PostgreSQL's all-cases statement): P1's D1
    # version is known and unchanged; a resident D1 lacked is new, and journaled
    p4 = "330102198804044567"
    load(warehouse_engine, res("household_register"), D1, [hr(P1, "张三"), hr(p4, "赵六")])
    assert build(D4) == ("incremental", 1)
    assert by_id(warehouse_engine, "base.population", "resident_id")[p4]["name"] == "赵六"


def test_change_journal_keeps_entries_until_every_reader_consumed_them(warehouse_engine):
    """Journal retention: a build deletes the journal entries of loads that every incremental
    model reading the table has consumed, and keeps those a built reader has not (here the
    conflict model, which reads the same registers); a reader never built holds nothing back
    (its first build is full)."""
    cat = demo_catalog()
    pop, conflicts = "base.population", "quality.conflicts.population"
    journal = lambda: sorted(r[0] for r in rows(  # noqa: E731
        warehouse_engine, "SELECT resident_id FROM ods.household_register_changes"))

    def build(target, interval):
        return build_base_libraries(warehouse_engine, cat, interval, only=[target])["builds"][0]

    load_world(warehouse_engine)
    assert build(pop, D1)["mode"] == "full"
    load(warehouse_engine, res("household_register"), D2, [hr(P3, "王小五")])
    assert journal() == [P3]
    # the conflict model was never built: its first build will be full, so it holds nothing back
    assert build(pop, D2)["journal_pruned"] == {"household_register_changes": 1}
    assert journal() == []
    assert build(conflicts, D2)["mode"] == "full"

    # from now on both readers are built: an entry stays until both consumed its load
    p4 = "330102198804044567"
    load(warehouse_engine, res("household_register"), D3, [hr(p4, "赵六")])
    b = build(pop, D3)
    assert (b["mode"], b["scope_keys"], b["journal_pruned"]) == ("incremental", 1, {})
    assert journal() == [p4]  # the conflict model has not read it yet
    b = build(conflicts, D3)
    assert (b["mode"], b["scope_keys"]) == ("incremental", 1)  # it found p4 in the journal
    assert journal() == []
    # a load pending for one reader keeps its entries even when the other builds again
    load(warehouse_engine, res("household_register"), D4, [hr(P3, "王晓武"), hr(p4, "赵六", gender="女")])
    load(warehouse_engine, res("identity_card"), D4, [  # a snapshot: the cards of D1 and a new one
        idc(P1, "张三"), idc(P2, "李四", "1992-02-02", gender="女"),
        idc(P3, "王小五", "2015-03-03", valid_to="2020-06-01"), idc("330102197707077777", "钱七")])
    assert journal() == []  # updates go to history, not to the journal
    assert build(conflicts, D4)["journal_pruned"] == {}
    assert rows(warehouse_engine, "SELECT resident_id FROM ods.identity_card_changes") == [("330102197707077777",)]
    got = build(pop, D4)
    assert got["journal_pruned"] == {"identity_card_changes": 1}
    people = by_id(warehouse_engine, "base.population", "resident_id")
    assert people["330102197707077777"]["name"] == "钱七" and people[p4]["gender"] == "女"
    state = population_state(warehouse_engine)
    build_base_libraries(warehouse_engine, cat, D4, full=True, only=[pop])
    assert population_state(warehouse_engine) == state  # nothing was lost to the pruning


def test_journals_are_pruned_in_one_order_whatever_the_model_lists(warehouse_engine):
    """Two builds pruning at once lock journal rows in the same order (by table name), so
    they wait for each other instead of deadlocking: the licence model lists its sources as
    identity card, degree, marriage, ..., the population model as register, card, marriage,
    degree, ..."""
    cat = demo_catalog()
    load_world(warehouse_engine)
    deletes = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("DELETE FROM ods."):
            deletes.append(statement.split()[2].split(".")[1].strip('"'))

    sa.event.listen(warehouse_engine, "before_cursor_execute", seen)
    try:
        for target in ("base.licence", "base.population"):
            deletes.clear()
            build_base_libraries(warehouse_engine, cat, D1, only=[target])
            model = next(m for m in base_models() if m.target == target)
            assert deletes == sorted(f"{s.table}_changes" for s in model.sources if not s.is_base)
            assert deletes != [f"{s.table}_changes" for s in model.sources if not s.is_base]  # reordered
    finally:
        sa.event.remove(warehouse_engine, "before_cursor_execute", seen)


def population_state(engine):
    return base_state(engine)["base.population"]


def test_incremental_build_plans_probes_for_few_subjects_and_falls_back(warehouse_engine, monkeypatch):
    """On PostgreSQL a scoped build of few subjects plans index probes only (enable_seqscan
    off, for its transaction only); with many subjects, or when it turns into a full build,
    the server's defaults. Every variant gives the full build's result (SQLite: no settings)."""
    from warehouse import models as models_module

    pg = warehouse_engine.dialect.name == "postgresql"
    seen = []
    monkeypatch.setitem(models_module.HOOKS, "built", lambda conn: seen.append(
        conn.exec_driver_sql("SHOW enable_seqscan").scalar() if pg else None))
    cat = demo_catalog()
    load_world(warehouse_engine)
    build_base_libraries(warehouse_engine, cat, D1, only=["base.population"])

    def step(interval, name):
        seen.clear()
        load(warehouse_engine, res("household_register"), interval, [hr(P1, name)])
        out = build_base_libraries(warehouse_engine, cat, interval, only=["base.population"])["builds"][0]
        got = population_state(warehouse_engine)
        build_base_libraries(warehouse_engine, cat, interval, full=True, only=["base.population"])
        assert population_state(warehouse_engine) == got
        assert by_id(warehouse_engine, "base.population", "resident_id")[P1]["name"] == name
        return out["mode"], out["scope_keys"], seen[0]

    assert step(D2, "张三丰") == ("incremental", 1, "off" if pg else None)
    monkeypatch.setattr(models_module, "INCREMENTAL_MIN_KEYS", 0)
    monkeypatch.setattr(models_module, "INCREMENTAL_MAX_SHARE", 1.0)  # 1 of 3 subjects: still incremental
    monkeypatch.setattr(models_module, "PROBE_MAX_SHARE", 0.0)
    assert step(D3, "张三") == ("incremental", 1, "on" if pg else None)
    monkeypatch.setattr(models_module, "INCREMENTAL_MAX_SHARE", 0.0)
    assert step(D4, "张三丰") == ("full", 1, "on" if pg else None)
    if pg:  # SET LOCAL: nothing leaks into the pooled connection
        with warehouse_engine.connect() as c:
            assert c.exec_driver_sql("SHOW enable_seqscan").scalar() == "on"


def test_failed_incremental_build_keeps_the_library_and_its_pending_loads(warehouse_engine, monkeypatch):
    from warehouse import models as models_module

    cat = demo_catalog()
    load_world(warehouse_engine)
    build_base_libraries(warehouse_engine, cat, D1)
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")])
    before = checksums(warehouse_engine, areas=("base", "meta"))

    def boom(conn):
        raise RuntimeError("killed half way through the build")
    monkeypatch.setitem(models_module.HOOKS, "built", boom)
    with pytest.raises(RuntimeError):
        build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])
    assert checksums(warehouse_engine, areas=("base", "meta")) == before
    monkeypatch.delitem(models_module.HOOKS, "built")
    out = build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])["builds"][0]
    assert (out["mode"], out["scope_keys"]) == ("incremental", 1)  # the load is still pending
    assert by_id(warehouse_engine, "base.population", "resident_id")[P1]["name"] == "张三丰"


def test_parallel_incremental_build_equals_full_and_leaves_nothing_behind(warehouse_engine, monkeypatch):
    """PostgreSQL: many subjects are computed by parallel connections into unlogged tables
    while the build deletes; same result as a full build, the tables dropped after the
    build's transaction, also when it fails."""
    if warehouse_engine.dialect.name != "postgresql":
        pytest.skip("parallel incremental builds are PostgreSQL's")
    from warehouse import models as models_module

    cat = demo_catalog()
    monkeypatch.setattr(models_module, "PARALLEL_MIN_KEYS", 0)
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 2)
    leftovers = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'base' AND tablename LIKE '%scope_rows%'"
    load_world(warehouse_engine, p2_idc_birth="1992-12-02")
    build_base_libraries(warehouse_engine, cat, D1, only=["base.population"])
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰"), hr(P2, "李四", "1992-02-03", gender="女")])
    before = checksums(warehouse_engine, areas=("base", "meta"))

    def boom(conn):
        raise RuntimeError("killed half way through the build")
    monkeypatch.setitem(models_module.HOOKS, "built", boom)
    with pytest.raises(RuntimeError):
        build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])
    assert checksums(warehouse_engine, areas=("base", "meta")) == before
    assert rows(warehouse_engine, leftovers) == [(0,)]
    monkeypatch.delitem(models_module.HOOKS, "built")
    out = build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])["builds"][0]
    assert (out["mode"], out["scope_keys"], out["rows"]) == ("incremental", 2, 3)
    assert rows(warehouse_engine, leftovers) == [(0,)]
    incremental = population_state(warehouse_engine)
    pop = by_id(warehouse_engine, "base.population", "resident_id")
    assert (pop[P1]["name"], day(pop[P2]["birth_date"])) == ("张三丰", "1992-02-03")
    build_base_libraries(warehouse_engine, cat, D2, full=True, only=["base.population"])
    assert population_state(warehouse_engine) == incremental


def test_full_builds_leave_key_statistics_for_the_next_incremental_one(warehouse_engine, monkeypatch):
    """PostgreSQL: a CREATE TABLE AS has no statistics; without them the next incremental
    build's DELETE would scan the whole table. Serial and parallel full builds analyze the key."""
    if warehouse_engine.dialect.name != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's")
    from warehouse import models as models_module

    load_world(warehouse_engine)
    key_stats = ("SELECT n_distinct FROM pg_stats WHERE schemaname = 'base' AND tablename = 'population' "
                 "AND attname = 'resident_id'")
    for parallel in (1, 2):
        monkeypatch.setattr(models_module, "BUILD_PARALLEL", parallel)
        monkeypatch.setattr(models_module, "PARALLEL_MIN_ROWS", 0)
        build_base_libraries(warehouse_engine, demo_catalog(), D1, full=True, only=["base.population"])
        assert rows(warehouse_engine, key_stats) == [(-1.0,)]  # every key distinct


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
    assert lineage(warehouse_engine, cat, "base.population")["pending"] == []
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")], run_id="second")
    for target in ("base.population", "quality.conflicts.population"):
        pending = lineage(warehouse_engine, cat, target)["pending"]  # what the next build reads
        assert [(ld["resource"], ld["interval_key"], ld["updated"]) for ld in pending] == [("RK-GA-0001", D2.key, 1)]
    for target in ("base.licence", "base.credit"):  # they do not read the register
        assert lineage(warehouse_engine, cat, target)["pending"] == []
    build_base_libraries(warehouse_engine, cat, D2)
    info = lineage(warehouse_engine, cat, "base.population")
    assert info["pending"] == []
    assert {s["resource"] for s in info["sources"]} == {"RK-GA-0001", "RK-GA-0002", "RK-MZ-0001", "RK-JY-0001",
                                                       "RK-RS-0001", "RK-GJJ-0001"}
    psb = next(s for s in info["sources"] if s["resource"] == "RK-GA-0001")
    assert psb["interval_key"] == D2.key
    assert [run for _, run in psb["runs"]] == ["r-20261120", "second-20261121"]
    assert [b["mode"] for b in info["builds"]][:2] == ["incremental", "full"]
    le = lineage(warehouse_engine, cat, "base.legal_entity")
    assert "base.credit" in {s["resource"] for s in le["sources"]}


def test_parallel_partitioned_full_build_equals_serial(warehouse_engine, monkeypatch):
    """PostgreSQL builds big keyed models as key ranges computed side by side; the result
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
        (3,)]  # the register's two keys cut the subjects into three ranges
    assert rows(warehouse_engine, "SELECT partstrat FROM pg_partitioned_table "
                                  "WHERE partrelid = 'base.population'::regclass") == [("r",)]
    # incremental on the partitioned table, then a serial full rebuild replaces it
    load(warehouse_engine, res("household_register"), D2, [hr(P1, "张三丰")])
    build_base_libraries(warehouse_engine, cat, D2, only=["base.population"])
    incremental = population()
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 1)
    build_base_libraries(warehouse_engine, cat, D2, full=True, only=["base.population"])
    assert population() == incremental


def test_full_builds_of_merge_models_plan_merges_and_a_failed_part_leaves_the_live_table(warehouse_engine,
                                                                                        monkeypatch):
    """PostgreSQL: a full build of a ``plan: merge`` model (population) runs with hash joins
    and hash aggregation off, serial or in parallel parts; other models keep the defaults.
    A part failing half way fails the build, leaves the live table and the build records as
    they were, and no part table behind."""
    if warehouse_engine.dialect.name != "postgresql":
        pytest.skip("planner settings and parallel partitioned builds are PostgreSQL's")
    from warehouse import models as models_module

    cat = demo_catalog()
    load_world(warehouse_engine)
    seen: list[tuple] = []

    def planner(conn):
        return tuple(conn.exec_driver_sql(f"SHOW {s}").scalar()
                     for s in ("enable_hashjoin", "enable_hashagg", "synchronous_commit"))
    monkeypatch.setitem(models_module.HOOKS, "built", lambda conn: seen.append(planner(conn)))
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 1)
    build_base_libraries(warehouse_engine, cat, D1, full=True, only=["base.population", "base.credit"])
    assert seen == [("off", "off", "off"), ("on", "on", "off")]  # population, then credit

    monkeypatch.delitem(models_module.HOOKS, "built")
    monkeypatch.setattr(models_module, "BUILD_PARALLEL", 2)
    monkeypatch.setattr(models_module, "PARALLEL_MIN_ROWS", 0)
    parts: list[tuple] = []
    monkeypatch.setitem(models_module.HOOKS, "part_built", lambda conn, k: parts.append(planner(conn)))
    build_base_libraries(warehouse_engine, cat, D1, full=True, only=["base.population"])
    assert len(parts) > 1 and set(parts) == {("off", "off", "off")}  # every key range, merge plan
    before = checksums(warehouse_engine, areas=("base", "meta"))

    def boom(conn, k):
        if k == 1:
            raise RuntimeError("part 1 killed half way")  # the others may be built, attached or queued
    monkeypatch.setitem(models_module.HOOKS, "part_built", boom)
    with pytest.raises(RuntimeError, match="part 1 killed"):
        build_base_libraries(warehouse_engine, cat, D1, full=True, only=["base.population"])
    leftovers = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'base' AND tablename LIKE '\\_next\\_%'"
    assert checksums(warehouse_engine, areas=("base", "meta")) == before
    assert rows(warehouse_engine, leftovers) == [(0,)]
    # every range built, the build's own transaction (the swap) fails: same
    monkeypatch.delitem(models_module.HOOKS, "part_built")

    def swap_fails(conn):
        raise RuntimeError("killed after the swap, before the commit")
    monkeypatch.setitem(models_module.HOOKS, "built", swap_fails)
    with pytest.raises(RuntimeError, match="before the commit"):
        build_base_libraries(warehouse_engine, cat, D1, full=True, only=["base.population"])
    assert checksums(warehouse_engine, areas=("base", "meta")) == before
    assert rows(warehouse_engine, leftovers) == [(0,)]
