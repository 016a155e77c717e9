"""Schema drift policies (evolve, freeze, discard_row, discard_value), legacy XLS, merged
cells, vectorised Arrow rendering and key ranges, on tiny inline sources in tmp_path."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from catalog.models import Resource
from datarail.errors import SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo
from extractors.files import extract_files, xlsx_merged_ranges
from extractors.sql import KeyRange, build_select, extract_sql
from extractors.staging import arrow_text, to_text

pytestmark = pytest.mark.unit

INTERVAL = Interval.daily(date(2026, 11, 22))


def resource(policy: str = "evolve", *, location: dict | None = None, fields: list[dict] | None = None) -> Resource:
    return Resource.model_validate({
        "code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍", "name_en": "Register",
        "unit": "psb", "system": "huji", "location": location or {"table": "t_hjrk"},
        "fields": fields or [{"name": "resident_id", "required": True, "source": "sfzh", "semantic": "resident_id"},
                             {"name": "name", "source": "xm"},
                             {"name": "birth_date", "type": "date", "source": "csrq"}],
        "primary_key": ["resident_id"], "update_cycle": "daily", "sharing": {"type": "unconditional"},
        "schema_drift": policy})


ROWS = [("330102199001011235", "张三", "1990-01-01", None),
        ("330102198001011234", "李四", "19800101", "改名"),
        ("330102198501011230", "王五", "not a date", None)]


@pytest.fixture
def source(tmp_path):
    """A SQLite table with one column the catalog does not know (bz) and a TEXT date column."""
    db = tmp_path / "src.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_hjrk (sfzh TEXT PRIMARY KEY, xm TEXT, csrq TEXT, bz TEXT)")
        c.exec_driver_sql("INSERT INTO t_hjrk VALUES (?, ?, ?, ?)", ROWS)
    engine.dispose()
    return ConnInfo(conn_type="sqlite", host=str(db))


def staged(res) -> list[dict]:
    return [r for f in res.files for r in pq.read_table(f).to_pylist()]


def test_evolve_stages_the_new_column_and_records_it(source, tmp_path):
    res = extract_sql(resource("evolve"), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    assert res.drift["new"] == ["bz"] and res.drift["policy"] == "evolve"
    assert [r["_new_bz"] for r in staged(res)] == ["改名", None, None]  # key order: ...234 first
    assert res.rows == res.rows_read == 3


def test_freeze_names_resource_column_and_an_offending_row(source, tmp_path):
    with pytest.raises(SchemaDriftError) as err:
        extract_sql(resource("freeze"), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    text = str(err.value)
    assert "column bz" in text and "resource=RK-GA-0001" in text
    assert "offending row: key 330102********1234" in text  # the key is a resident ID: masked
    assert not list((tmp_path / "o").glob("*.parquet")) if (tmp_path / "o").exists() else True


def test_freeze_refuses_a_missing_optional_column(tmp_path):
    db = tmp_path / "src.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_hjrk (sfzh TEXT PRIMARY KEY, xm TEXT)")
    engine.dispose()
    with pytest.raises(SchemaDriftError, match="column csrq is missing"):
        extract_sql(resource("freeze"), ConnInfo("sqlite", host=str(db)), INTERVAL, tmp_path / "o", since=None,
                    chunk_rows=10)


def test_discard_row_sets_rows_aside_with_the_reason(source, tmp_path):
    res = extract_sql(resource("discard_row"), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    assert [r["resident_id"] for r in staged(res)] == ["330102198501011230", "330102199001011235"]
    assert res.drift["discarded_rows"] == 1 and res.rows_read == 3 and res.rows == 2
    rejects = pq.read_table(res.rejects_file).to_pylist()
    assert len(rejects) == 1 and "new column(s) bz" in rejects[0]["reason"]
    assert "330102198001011234" in rejects[0]["record"]  # kept whole (inside staging), never lost
    assert "_new_bz" not in res.columns


def test_discard_value_drops_new_values_and_counts_them(source, tmp_path):
    res = extract_sql(resource("discard_value"), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    assert res.rows == 3 and "_new_bz" not in res.columns and res.rejects_file is None


def test_retyped_column_is_detected_and_handled(tmp_path):
    db = tmp_path / "src.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:  # birth date now an INTEGER column: cannot hold a date
        c.exec_driver_sql("CREATE TABLE t_hjrk (sfzh TEXT PRIMARY KEY, xm TEXT, csrq INTEGER)")
        c.exec_driver_sql("INSERT INTO t_hjrk VALUES ('330102199001011235', '张三', 19900101), "
                          "('330102198001011234', '李四', 123)")
    engine.dispose()
    conn = ConnInfo("sqlite", host=str(db))
    evolve = extract_sql(resource("evolve"), conn, INTERVAL, tmp_path / "e", since=None, chunk_rows=10)
    assert evolve.drift["retyped"] == {"birth_date": "source type integer cannot hold catalog type date"}
    assert [r["birth_date"] for r in staged(evolve)] == ["123", "19900101"]  # validation types them
    value = extract_sql(resource("discard_value"), conn, INTERVAL, tmp_path / "v", since=None, chunk_rows=10)
    assert [r["birth_date"] for r in staged(value)] == [None, "19900101"]  # 123 is no date: nulled
    assert value.drift["discarded_values"] == 1
    row = extract_sql(resource("discard_row"), conn, INTERVAL, tmp_path / "r", since=None, chunk_rows=10)
    assert [r["resident_id"] for r in staged(row)] == ["330102199001011235"]
    assert "birth_date: not a date" in pq.read_table(row.rejects_file).to_pylist()[0]["reason"]
    with pytest.raises(SchemaDriftError, match=r"column csrq is retyped .*offending row: key 330102\*"):
        extract_sql(resource("freeze"), conn, INTERVAL, tmp_path / "f", since=None, chunk_rows=10)


def test_a_type_change_since_the_last_delivery_is_retyped(source, tmp_path):
    res = extract_sql(resource("evolve"), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=10,
                      previous_schema={"birth_date": "date", "name": "text", "resident_id": "text"})
    assert res.drift["retyped"] == {"birth_date": "source type changed from date to text"}
    assert res.source_schema == {"resident_id": "text", "name": "text", "birth_date": "text"}


def test_csv_freeze_names_the_file_line(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "p_1.csv").write_text("sfzh,xm,csrq,bz\n330102199001011235,张三,1990-01-01,\n"
                                  "330102198001011234,李四,1980-01-01,备注\n", encoding="utf-8")
    res = resource("freeze", location={"file": "p_*.csv"})
    with pytest.raises(SchemaDriftError, match=r"column bz is delivered by file p_1.csv .*offending row: p_1.csv:line 3"):
        extract_files(res, ConnInfo("fs", extra={"path": str(drop)}), INTERVAL, tmp_path / "o", since=None,
                      chunk_rows=10)
    rows = extract_files(resource("discard_row", location={"file": "p_*.csv"}), ConnInfo("fs", extra={"path": str(drop)}),
                         INTERVAL, tmp_path / "o2", since=None, chunk_rows=10)
    assert rows.rows == 1 and rows.drift["discarded_rows"] == 1 and rows.rows_read == 2


def test_legacy_xls_with_title_block_and_merged_cells(tmp_path):
    xlwt = pytest.importorskip("xlwt")
    drop = tmp_path / "drop"
    drop.mkdir()
    wb = xlwt.Workbook(encoding="utf-8")
    ws = wb.add_sheet("缴存信息")
    ws.write_merge(0, 0, 0, 3, "住房公积金缴存明细（2026年11月）")  # title block over the header
    for c, h in enumerate(["单位", "sfzh", "xm", "csrq"]):
        ws.write(2, c, h)
    ws.write_merge(3, 4, 0, 0, "杭州市某局")  # one unit for two people: vertically merged
    date_style = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    ws.write(3, 1, "330102199001011235")
    ws.write(3, 2, "张三")
    ws.write(3, 3, datetime(1990, 1, 1), date_style)
    ws.write(4, 1, "330102198001011234")
    ws.write(4, 2, "李四")
    ws.write(4, 3, 19800101)
    wb.save(str(drop / "acc_1.xls"))
    fields = [{"name": "employer", "source": "单位"}, {"name": "resident_id", "required": True, "source": "sfzh"},
              {"name": "name", "source": "xm"}, {"name": "birth_date", "type": "date", "source": "csrq"}]
    res = extract_files(resource(location={"file": "acc_*.xls"}, fields=fields), ConnInfo("fs", extra={"path": str(drop)}),
                        INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    rows = staged(res)
    assert [(r["employer"], r["resident_id"], r["name"], r["birth_date"]) for r in rows] == [
        ("杭州市某局", "330102199001011235", "张三", "1990-01-01"),
        ("杭州市某局", "330102198001011234", "李四", "19800101")]
    assert rows[0]["_source"] == "acc_1.xls:缴存信息!row 4"


def test_xlsx_merged_cells_fill_the_range(tmp_path):
    import openpyxl

    drop = tmp_path / "drop"
    drop.mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    ws.append(["标题"])
    ws.merge_cells("A1:C1")
    ws.append(["单位", "sfzh", "xm"])
    ws.append(["某局", "330102199001011235", "张三"])
    ws.append([None, "330102198001011234", "李四"])
    ws.merge_cells("A3:A4")
    wb.save(drop / "x_1.xlsx")
    assert xlsx_merged_ranges(drop / "x_1.xlsx", "xl/worksheets/sheet1.xml") == [(1, 1, 0, 2), (3, 4, 0, 0)]
    fields = [{"name": "employer", "source": "单位"}, {"name": "resident_id", "required": True, "source": "sfzh"},
              {"name": "name", "source": "xm"}]
    res = extract_files(resource(location={"file": "x_*.xlsx"}, fields=fields), ConnInfo("fs", extra={"path": str(drop)}),
                        INTERVAL, tmp_path / "o", since=None, chunk_rows=10)
    assert [r["employer"] for r in staged(res)] == ["某局", "某局"]


VALUES = [
    (pa.array([" a ", "", None, "\u3000中文"]), "string"),
    (pa.array([1234.0, 1.5, 1e20, 1e17, float("nan"), None, -3.0]), "decimal"),
    (pa.array([Decimal("1234.50"), None], pa.decimal128(10, 2)), "decimal"),
    (pa.array([True, False, None]), "boolean"),
    (pa.array([7, None], pa.int16()), "integer"),
    (pa.array([date(2018, 5, 16), None]), "date"),
    (pa.array([datetime(2018, 5, 16, 8, 30), datetime(2018, 5, 16), datetime(1969, 12, 31, 23, 59, 59, 1)],
              pa.timestamp("us")), "datetime"),
    (pa.array([datetime(2018, 5, 16), datetime(2018, 5, 16, 1)], pa.timestamp("ms")), "date"),
]


@pytest.mark.parametrize(("array", "ftype"), VALUES)
def test_arrow_rendering_matches_value_rendering(array, ftype):
    assert arrow_text(array, ftype).to_pylist() == [to_text(v, ftype) for v in array.to_pylist()]


def test_key_range_bounds_are_bound_parameters():
    stmt = build_select("t", None, ["id", "x"], order_by=["id"], key_range=KeyRange("id", 10, 20),
                        key_column="id")
    sql = str(stmt)
    assert "t.id >= :key_lo" in sql and "t.id < :key_hi" in sql
    assert stmt.compile().params == {"key_lo": 10, "key_hi": 20}
