"""The outputs people read: per-unit quality reports (HTML), the leadership export (CSV +
XLSX bulletin) and the sharing list export (JSON + CSV), each built from a throwaway
embedded warehouse holding a few inline rows. Every file is scanned for unmasked personal data."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from catalog.models import Catalog
from datarail.privacy import find_unmasked
from datarail.settings import load_settings
from metrics.export import metrics_table, write_leadership_export
from quality.reports import FIX_HINTS, MAX_KEYS, mask_key, write_unit_reports
from sharing.export import write_sharing_list
from warehouse.engine import get_engine
from warehouse.migrate import migrate

pytestmark = pytest.mark.unit

RUN_DATE = "2026-11-22"
# Valid-looking resident IDs and a mobile: none of them may leave the warehouse unmasked.
IDS = ["330102199001011234", "11010519491231002X", "44030419850607891X"]
MOBILE = "13812345678"

CATALOG = Catalog.model_validate({
    "units": [
        {"code": "psb", "name_zh": "省公安厅", "name_en": "Provincial Public Security Department",
         "contact_email": "data-psb@example.gov.cn", "region": "330000",
         "systems": [{"code": "huji", "name": "户籍系统", "kind": "sql", "conn_id": "sandbox_psb_huji"}]},
        {"code": "amr", "name_zh": "省市场监督管理局", "name_en": "Administration for Market Regulation",
         "contact_email": "data-amr@example.gov.cn", "region": "330000",
         "systems": [{"code": "api", "name": "企业登记", "kind": "http", "conn_id": "sandbox_amr_api"}]},
        {"code": "zwfw", "name_zh": "省政务服务中心", "name_en": "Government Service Centre",
         "contact_email": "data-zwfw@example.gov.cn", "region": "330000"},
    ],
    "resources": [
        {"code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍人口信息",
         "name_en": "Household register", "unit": "psb", "system": "huji", "location": {"table": "t_hjrk"},
         "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
                    {"name": "name", "semantic": "person_name"},
                    {"name": "phone", "semantic": "phone"},
                    {"name": "remark"}],
         "primary_key": ["resident_id"], "update_cycle": "daily",
         "sharing": {"type": "conditional", "condition": "仅用于政务服务办理", "granted_to": ["zwfw"]}},
        {"code": "FR-SC-0001", "table": "business_registration", "name_zh": "企业登记信息",
         "name_en": "Business registration", "unit": "amr", "system": "api",
         "location": {"endpoint": "/api/v1/enterprises"},
         "fields": [{"name": "uscc", "semantic": "uscc", "required": True}, {"name": "name"}],
         "primary_key": ["uscc"], "update_cycle": "daily", "sharing": {"type": "unconditional"}},
    ],
    "responsibilities": [{"unit": "psb", "resource": "RK-GA-0001", "cycle": "daily"},
                         {"unit": "amr", "resource": "FR-SC-0001", "cycle": "daily"}],
    "items": [],
})


def _insert(conn: sa.Connection, table: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                 rows)


def _ticket(tid: str, check_id: str, severity: str, state: str, keys: list[str], sample: list[dict],
            due: str, failed: int, evaluated: int = 100) -> dict:
    now = datetime(2026, 11, 23, 1, 0)
    return {"ticket_id": tid, "resource": "RK-GA-0001", "unit": "psb", "check_id": check_id,
            "field": check_id.split(":")[1], "severity": severity, "state": state,
            "rule": f"{check_id} rule text", "assignee": "data-psb@example.gov.cn", "evaluated": evaluated,
            "failed": failed, "failed_keys": json.dumps(keys), "sample": json.dumps(sample, ensure_ascii=False),
            "opened_interval": "20261121T000000Z_20261122T000000Z",
            "last_interval": "20261122T000000Z_20261123T000000Z", "opened_at": now, "updated_at": now,
            "due_date": due, "closed_at": None}


def _run(interval_start: datetime, interval_end: datetime, extracted: int, loaded: int) -> dict:
    key = f"{interval_start:%Y%m%dT%H%M%SZ}_{interval_end:%Y%m%dT%H%M%SZ}"
    return {"resource": "RK-GA-0001", "interval_key": key, "unit": "psb", "interval_start": interval_start,
            "interval_end": interval_end, "status": "loaded", "extracted": extracted, "loaded": loaded,
            "quarantined": extracted - loaded, "warned": 1}


@pytest.fixture
def engine(tmp_path):
    """A fresh embedded warehouse (own tmp_path: get_engine caches per URL) with a few rows."""
    eng = get_engine(load_settings({"DATARAIL_HOME": str(tmp_path)}))
    migrate(eng)
    fill(eng)
    return eng


def fill(eng: sa.Engine) -> None:
    """Insert the inline rows every test reads (tickets, runs, catalog, needs, metrics, list)."""
    # 60 failing keys: the report lists MAX_KEYS of them; one malformed (17-digit) ID the
    # text scrubber cannot recognise, so only semantic masking protects it.
    keys = [json.dumps([IDS[i % 3][:-3] + f"{i:03d}"]) for i in range(59)] + [json.dumps(["33010219900101123"])]
    sample = [{"resident_id": "330102********1234", "name": "张*", "phone": "138****5678",
               "remark": f"联系 {MOBILE} 身份证 {IDS[1]}"}]  # remark left unmasked on purpose
    with eng.begin() as conn:
        _insert(conn, "quality.tickets", [
            _ticket("DQ-AAA", "resident_id:resident_id", "blocking", "new", keys, sample, "2026-11-29", 60),
            _ticket("DQ-BBB", "phone:phone", "warning", "acknowledged", [json.dumps([IDS[2]])], [], "2026-11-20", 1),
            _ticket("DQ-CCC", "unique:resident_id", "blocking", "resolved", [], [], "2026-11-10", 0),
        ])
        _insert(conn, "meta.runs", [
            _run(datetime(2026, 11, 21), datetime(2026, 11, 22), 10, 10),
            _run(datetime(2026, 11, 22), datetime(2026, 11, 23), 100, 94),
            _run(datetime(2026, 11, 23), datetime(2026, 11, 24), 999, 999),  # after the run date
        ])
        _insert(conn, "meta.catalog_units", [
            {"code": "psb", "name_zh": "省公安厅", "name_en": "Provincial Public Security Department",
             "contact_email": "data-psb@example.gov.cn", "region": "330000"},
            {"code": "zwfw", "name_zh": "省政务服务中心", "name_en": "Government Service Centre",
             "contact_email": "data-zwfw@example.gov.cn", "region": "330000"},
        ])
        _insert(conn, "meta.catalog_resources", [
            {"code": "RK-GA-0001", "table_name": "household_register", "name_zh": "户籍人口信息",
             "name_en": "Household register", "unit": "psb", "system_kind": "sql", "sharing_type": "conditional",
             "sharing_condition": "仅用于政务服务办理", "base_library": "population", "update_cycle": "daily",
             "cycle_days": 1, "status": "active"},
        ])
        _insert(conn, "meta.catalog_items", [
            {"code": "ITEM-A", "name_zh": "新生儿出生一件事", "name_en": "Newborn", "handling_unit": "zwfw"},
            {"code": "ITEM-B", "name_zh": "不动产登记", "name_en": "Real estate", "handling_unit": "zwfw"},
        ])
        _insert(conn, "meta.catalog_needs", [
            {"item": "ITEM-A", "need": "A1", "material_zh": "户口簿"},
            {"item": "ITEM-A", "need": "A2", "material_zh": "出生医学证明"},
            {"item": "ITEM-B", "need": "B1", "material_zh": "不动产权证书"},
            {"item": "ITEM-B", "need": "B2", "material_zh": "户口簿"},
        ])
        ns = {"run_date": RUN_DATE, "handling_unit": "zwfw"}
        _insert(conn, "meta.need_status", [
            {**ns, "item": "ITEM-A", "need": "A1", "met": 1, "reason": None, "resource": "RK-GA-0001"},
            {**ns, "item": "ITEM-A", "need": "A2", "met": 1, "reason": None, "resource": "RK-GA-0001"},
            {**ns, "item": "ITEM-B", "need": "B1", "met": 0, "reason": "no_resource", "resource": None},
            {**ns, "item": "ITEM-B", "need": "B2", "met": 0, "reason": "failing_quality", "resource": "RK-GA-0001"},
        ])
        snap = [("sharing_ratio", "overall", "all", 2, 4, 0.5), ("sharing_ratio", "item", "ITEM-A", 2, 2, 1.0),
                ("sharing_ratio", "item", "ITEM-B", 0, 2, 0.0), ("sharing_ratio", "region", "330000", 2, 4, 0.5),
                ("sharing_ratio", "consumer_unit", "zwfw", 2, 4, 0.5),
                ("items_fully_served", "overall", "all", 1, 2, 0.5), ("needs_met", "overall", "all", 2, 4, 2),
                ("provision_rate", "unit", "psb", 1, 2, 0.5), ("structuring_rate", "unit", "psb", 1, 1, 1.0),
                ("open_tickets", "unit", "psb", 2, None, 2), ("overdue_tickets", "unit", "psb", 1, None, 1),
                ("exchange_rows_in", "overall", "all", 1234, None, 1234),
                ("exchange_rows_out", "overall", "all", 567, None, 567)]
        _insert(conn, "meta.metric_snapshots", [
            {"run_date": RUN_DATE, "metric": m, "scope_type": t, "scope": s, "numerator": n, "denominator": d,
             "value": v} for m, t, s, n, d, v in snap])
        fields = [{"name": "resident_id", "type": "string", "semantic": "resident_id", "description": "公民身份号码",
                   "personal": True}, {"name": "name", "type": "string", "semantic": "person_name",
                                       "description": "姓名", "personal": True}]
        _insert(conn, "share.sharing_list", [
            {"run_date": RUN_DATE, "resource": "RK-GA-0001", "table_name": "share.household_register",
             "name_zh": "户籍人口信息", "name_en": "Household register", "provider_unit": "psb",
             "sharing_type": "conditional", "sharing_condition": "仅用于政务服务办理",
             "granted_to": json.dumps(["mca", "zwfw"]), "update_cycle": "daily", "base_library": "population",
             "fields": json.dumps(fields, ensure_ascii=False), "shared_rows": 94,
             "latest_update": "2026-11-22 08:30:00", "pass_rate": 0.94, "quality_status": "under_rectification"},
            {"run_date": "2026-11-21", "resource": "RK-GA-0001", "table_name": "share.household_register",
             "name_zh": "旧的", "name_en": "old", "provider_unit": "psb", "sharing_type": "conditional",
             "sharing_condition": "x", "granted_to": "[]", "update_cycle": "daily", "base_library": "population",
             "fields": "[]", "shared_rows": 1, "latest_update": None, "pass_rate": None, "quality_status": "ok"},
        ])


def test_unit_reports(engine, tmp_path):
    paths = write_unit_reports(engine, CATALOG, RUN_DATE, tmp_path / "reports")
    assert set(paths) == {"psb", "amr", "psb.xlsx", "amr.xlsx", "supervision", "index"}
    assert paths["psb"].name == "quality_psb.html" and paths["index"].name == "index.html"
    psb = paths["psb"].read_text(encoding="utf-8")
    assert find_unmasked(psb) == []
    assert "33010219900101123" not in psb  # malformed ID key masked by its semantic type
    assert "省公安厅" in psb and "户籍人口信息" in psb and "<style>" in psb and "http" not in psb.split("<body>")[0]
    # live tickets only, with counts, percent, the rule, due/overdue and a fix per kind
    open_part, struck = psb.split('id="resolved"')
    assert "DQ-AAA" in open_part and "DQ-BBB" in open_part and "DQ-CCC" not in open_part
    assert "DQ-CCC" in struck  # resolved by this run's check: listed as struck off (销号)
    assert "60/100 (60.00%)" in psb and "resident_id:resident_id rule text" in psb
    assert FIX_HINTS["resident_id"][1] in psb and FIX_HINTS["phone"][0] in psb
    # DQ-BBB is past its due date (badge in the list and on its card), DQ-AAA is not
    assert psb.count('class="badge overdue"') == 2
    card = psb.split('id="DQ-AAA"')[1].split('id="DQ-BBB"')[0]
    assert "badge overdue" not in card and "badge overdue" in psb.split('id="DQ-BBB"')[1]
    # 60 failing keys: the full count, and only MAX_KEYS of them listed, masked
    assert "Failing keys</strong>: 60" in card
    assert len(re.findall(r"<li>\d{6}\*+\w{4}</li>", card)) == MAX_KEYS
    assert "张*" in psb and "138****5678" in psb
    # the latest run as of the run date, not the later one
    runs = psb.split("Latest runs")[1].split("Open tickets")[0]
    assert "2026-11-22 ~ 2026-11-23" in runs and ">94<" in runs and ">6<" in runs and "999" not in runs
    amr = paths["amr"].read_text(encoding="utf-8")
    assert 'id="no-tickets"' in amr and "尚无运行记录" in amr
    index = paths["index"].read_text(encoding="utf-8")
    assert 'href="quality_psb.html"' in index and 'href="quality_amr.html"' in index
    assert re.search(r"<code>psb</code>.*?<td class=\"num\">2</td>", index, re.S)
    assert re.search(r"<code>amr</code>.*?<td class=\"num\">0</td>", index, re.S)


@pytest.mark.parametrize("key, expected", [
    (json.dumps(["330102199001011234"]), "330102********1234"),
    (json.dumps({"resident_id": "33010219900101123"}), "330102*******1123"),
    (["11010519491231002X"], "110105********002X"),
])
def test_mask_key(key, expected):
    assert mask_key(key, CATALOG.resource("RK-GA-0001")) == expected


def test_mask_key_without_resource_scrubs_text():
    assert mask_key(json.dumps([IDS[0], MOBILE]), None) == "330102********1234 + 138****5678"


def test_leadership_export(engine, tmp_path):
    out = tmp_path / "exports"
    paths = write_leadership_export(engine, RUN_DATE, out)
    assert paths["csv"].name == f"metrics_{RUN_DATE}.csv" and paths["xlsx"].name == f"bulletin_{RUN_DATE}.xlsx"
    text = paths["csv"].read_text(encoding="utf-8")
    assert find_unmasked(text) == []
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["metric", "scope_type", "scope", "numerator", "denominator", "value"]
    assert {"metric": "sharing_ratio", "scope_type": "overall", "scope": "all", "numerator": "2",
            "denominator": "4", "value": "0.5"} in rows
    assert len(rows) == 13 == len(metrics_table(engine, RUN_DATE))

    wb = load_workbook(paths["xlsx"])
    assert wb.sheetnames == ["总览 Summary", "事项 Items", "单位 Units", "未满足需求 Unmet needs"]
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            for v in row:
                assert find_unmasked(str(v)) == [], v
    summary = {r[0]: r[1:] for r in wb["总览 Summary"].iter_rows(min_row=5, values_only=True) if r[0]}
    assert summary["数据共享比例 Sharing ratio"][:2] == (0.5, "2/4")
    assert wb["总览 Summary"]["B5"].number_format == "0.00%"
    assert summary["事项全部满足 Items fully served"][:2] == (0.5, "1/2")
    assert summary["已满足需求 Needs met"][:2] == (2, "2/4")
    assert summary["数据交换量（合计）Exchange volume"][0] == 1234 + 567
    items = [r for r in wb["事项 Items"].iter_rows(min_row=2, values_only=True)]
    assert items == [("ITEM-A", "新生儿出生一件事", "Newborn", "zwfw", 2, 2, 1.0, "是 yes"),
                     ("ITEM-B", "不动产登记", "Real estate", "zwfw", 2, 0, 0.0, "否 no")]
    units = {r[0]: r for r in wb["单位 Units"].iter_rows(min_row=2, values_only=True)}
    assert units["psb"][3:9] == (0.5, "1/2", 1.0, "1/1", 2, 1)
    unmet = [r for r in wb["未满足需求 Unmet needs"].iter_rows(min_row=2, values_only=True)]
    assert [(r[2], r[3], r[4], r[5], r[7]) for r in unmet] == [
        ("B1", "不动产权证书", "无数据资源", "no_resource", None),
        ("B2", "户口簿", "质量不达标", "failing_quality", "RK-GA-0001")]
    assert wb.properties.created == wb.properties.modified == datetime(2026, 11, 22)

    first = paths["xlsx"].read_bytes()
    again = write_leadership_export(engine, RUN_DATE, out)
    assert again["xlsx"].read_bytes() == first  # same run date, same bytes
    assert again["csv"].read_text(encoding="utf-8") == text


def test_sharing_list_export(engine, tmp_path):
    paths = write_sharing_list(engine, RUN_DATE, tmp_path / "exports")
    assert paths["json"].name == f"sharing_list_{RUN_DATE}.json"
    raw = paths["json"].read_text(encoding="utf-8")
    assert "户籍人口信息" in raw and find_unmasked(raw) == []  # ensure_ascii off: Chinese as is
    entries = json.loads(raw)
    assert [e["resource"] for e in entries] == ["RK-GA-0001"] and entries[0]["run_date"] == RUN_DATE
    assert entries[0]["granted_to"] == ["mca", "zwfw"]
    assert [f["name"] for f in entries[0]["fields"]] == ["resident_id", "name"]
    assert entries[0]["shared_rows"] == 94 and entries[0]["pass_rate"] == 0.94

    data = paths["csv"].read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens it as UTF-8
    text = data.decode("utf-8-sig")
    assert find_unmasked(text) == []
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    assert rows[0]["name_zh"] == "户籍人口信息" and rows[0]["granted_to"] == "mca;zwfw"
    assert rows[0]["field_count"] == "2" and rows[0]["fields"] == "resident_id:string;name:string"


def test_exports_of_a_date_without_data_are_empty(engine, tmp_path):
    paths = write_sharing_list(engine, "2020-01-01", tmp_path / "x")
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == []
    lead = write_leadership_export(engine, "2020-01-01", tmp_path / "x")
    assert lead["csv"].read_text(encoding="utf-8").strip() == "metric,scope_type,scope,numerator,denominator,value"


def test_supervision_list_and_xlsx(engine, tmp_path):
    from quality.tickets import escalate_overdue

    assert escalate_overdue(engine, datetime(2026, 11, 22).date()) == ["DQ-BBB"]  # due 11-20, live
    paths = write_unit_reports(engine, CATALOG, RUN_DATE, tmp_path / "reports")
    sup = paths["supervision"].read_text(encoding="utf-8")
    assert "DQ-BBB" in sup and "DQ-AAA" not in sup and ">2<" in sup  # two days overdue
    psb = paths["psb"].read_text(encoding="utf-8")
    assert "badge supervised" in psb.split('id="DQ-BBB"')[1]
    wb = load_workbook(paths["psb.xlsx"])
    assert wb.sheetnames == ["工单 Tickets", "不合格主键 Failing keys"]
    tickets = list(wb["工单 Tickets"].iter_rows(min_row=2, values_only=True))
    assert [t[0] for t in tickets] == ["DQ-AAA", "DQ-BBB"] and tickets[1][10] == "2026-11-22"
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            assert find_unmasked(" ".join(str(v) for v in row if v is not None)) == []
