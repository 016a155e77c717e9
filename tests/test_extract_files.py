"""File extractor: CSV (encodings, delimiters, headers, ragged rows) and XLSX, in tmp_path."""

from __future__ import annotations

from datetime import date, datetime

import openpyxl
import pyarrow.parquet as pq
import pytest

from catalog.models import Resource
from datarail.errors import DecodeError, ExtractError, SchemaDriftError
from datarail.interval import Interval
from extractors import files as files_mod
from extractors.base import ConnInfo
from extractors.files import extract_files

pytestmark = pytest.mark.unit

INTERVAL = Interval.daily(date(2026, 11, 1))
HEADER = "证书编号,姓名,学校,毕业日期\n"


def make_resource(*, file: str = "degree_*.csv", encoding: str | None = None, sheet: str | None = None,
                  fields: list[dict] | None = None, watermark: bool = False) -> Resource:
    key = fields[0]["name"] if fields else "cert_no"
    return Resource.model_validate({
        "code": "RK-JY-0001", "table": "degree_certificate", "name_zh": "学历学位信息",
        "name_en": "Degree certificates", "unit": "edu", "system": "drop",
        "location": {"file": file, "encoding": encoding, "sheet": sheet},
        "fields": fields or [
            {"name": "cert_no", "required": True, "source": "证书编号"},
            {"name": "name", "source": "姓名", "semantic": "person_name"},
            {"name": "school", "source": "学校"},
            {"name": "grad_date", "type": "date", "source": "毕业日期"},
        ],
        "primary_key": [key],
        "change_tracking": ({"mode": "watermark", "column": "grad_date"} if watermark
                            else {"mode": "snapshot"}),
        "update_cycle": "monthly", "sharing": {"type": "unconditional"},
    })


@pytest.fixture
def drop(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


def conn_for(folder) -> ConnInfo:
    return ConnInfo(conn_type="fs", extra={"path": str(folder)})


def run(resource, folder, out, *, since=None, chunk_rows=1000):
    return extract_files(resource, conn_for(folder), INTERVAL, out, since=since, chunk_rows=chunk_rows)


def staged(result) -> list[dict]:
    rows: list[dict] = []
    for f in result.files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def fields_of(rows, *names):
    return [tuple(r[n] for n in names) for r in rows]


# ----------------------------------------------------------------------------- encodings

BODY = HEADER + "D001,张三,浙江大学,2018-06-30\nD002,欧阳娜娜,杭州师范大学,2019-06-30\n"
GB18030_ONLY = "D003,𠮷祥,宁波大学,2020-06-30\n"  # U+20BB7: in GB18030, not in GBK


@pytest.mark.parametrize(("codec", "declared", "body"), [
    ("utf-8", None, BODY),
    ("utf-8-sig", None, BODY),          # BOM, detected
    ("utf-8-sig", "utf-8", BODY),       # BOM, declared plain utf-8
    ("gbk", "gbk", BODY),
    ("gbk", None, BODY),                # GBK detected as GB18030 (its superset)
    ("gb18030", None, BODY + GB18030_ONLY),
    ("gb18030", "gb18030", BODY + GB18030_ONLY),
])
def test_csv_encodings_round_trip_chinese(drop, tmp_path, codec, declared, body):
    (drop / "degree_2026.csv").write_bytes(body.encode(codec))
    res = run(make_resource(encoding=declared), drop, tmp_path / "out")
    rows = staged(res)
    expected = [tuple(line.split(",")) for line in body.strip().split("\n")[1:]]
    assert fields_of(rows, "cert_no", "name", "school", "grad_date") == expected
    assert [r["_source"] for r in rows][:2] == ["degree_2026.csv:line 2", "degree_2026.csv:line 3"]


def test_declared_gbk_rejects_gb18030_only_characters(drop, tmp_path):
    data = (BODY + GB18030_ONLY).encode("gb18030")
    (drop / "degree_2026.csv").write_bytes(data)
    with pytest.raises(DecodeError) as err:
        run(make_resource(encoding="gbk"), drop, tmp_path / "out")
    offset = len((BODY + "D003,").encode("gb18030"))
    assert f"degree_2026.csv does not decode as gbk at byte {offset} (line 4)" in str(err.value)


def test_latin1_file_is_a_decode_error_not_mojibake(drop, tmp_path):
    text = "证书编号,姓名,学校,毕业日期\nD001,José,Café,2018-06-30\n"
    data = text.replace("证书编号,姓名,学校,毕业日期", "cert,name,school,date").encode("latin-1")
    (drop / "degree_2026.csv").write_bytes(data)
    with pytest.raises(DecodeError) as err:
        run(make_resource(), drop, tmp_path / "out")
    msg = str(err.value)
    assert "degree_2026.csv is neither UTF-8" in msg and "GB18030" in msg
    assert f"byte {data.index(b'Jos') + 3}, line 2" in msg  # the é of José
    assert "resource=RK-JY-0001" in msg and not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.parametrize("block_bytes", [files_mod.BLOCK_BYTES, 5])
def test_invalid_byte_reports_offset_and_line(drop, tmp_path, monkeypatch, block_bytes):
    # Small blocks force reads to stop mid-line and mid-character; blocks must still split at line ends.
    monkeypatch.setattr(files_mod, "BLOCK_BYTES", block_bytes)
    good = (HEADER + "D001,张三,浙江大学,2018-06-30\n").encode("utf-8")
    data = good + b"D002,\xff\xfe,x,2019-06-30\n"
    (drop / "degree_2026.csv").write_bytes(data)
    with pytest.raises(DecodeError, match=rf"does not decode as utf-8 at byte {len(good) + 5} \(line 3\)"):
        run(make_resource(encoding="utf-8"), drop, tmp_path / "out")


def test_small_blocks_keep_multibyte_characters_whole(drop, tmp_path, monkeypatch):
    monkeypatch.setattr(files_mod, "BLOCK_BYTES", 3)
    (drop / "degree_2026.csv").write_bytes((BODY + GB18030_ONLY).encode("gb18030"))
    rows = staged(run(make_resource(), drop, tmp_path / "out", chunk_rows=1))
    assert [r["name"] for r in rows] == ["张三", "欧阳娜娜", "𠮷祥"]


# ----------------------------------------------------------------------------- CSV shape

def test_ragged_row_names_file_and_line(drop, tmp_path):
    (drop / "degree_2026.csv").write_text(HEADER + "D001,张三,浙江大学,2018-06-30\n\nD002,李四,2019-06-30\n",
                                          encoding="utf-8")
    with pytest.raises(ExtractError, match=r"degree_2026.csv line 4: 3 cells, the header \(line 1\) has 4"):
        run(make_resource(), drop, tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", HEADER.encode("utf-8"),
                                     "\ufeff".encode() + HEADER.encode()])
def test_empty_and_header_only_files_stage_zero_rows(drop, tmp_path, content):
    (drop / "degree_2026.csv").write_bytes(content)
    res = run(make_resource(), drop, tmp_path / "out")
    assert res.rows == 0 and len(res.files) == 1
    assert pq.read_schema(res.files[0]).names == ["cert_no", "name", "school", "grad_date", "_row", "_source"]


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
def test_title_rows_blank_rows_and_delimiters(drop, tmp_path, delimiter):
    lines = ["2026年11月 学历学位信息报送表", "报送单位：省教育厅", "",
             "证书编号{d}姓名{d}学校{d}毕业日期{d}备注", "D001{d} 张三 {d}浙江大学{d}2018-06-30{d}", "",
             "{d}{d}{d}{d}", 'D002{d}李四{d}"杭州,师范大学"{d}{d}"第一行', '第二行"',
             "D003{d}王五{d}宁波大学{d}2020-06-30{d}x"]
    text = "\r\n".join(line.format(d=delimiter) for line in lines) + "\r\n"
    (drop / "degree_2026.csv").write_text(text, encoding="utf-8")
    rows = staged(run(make_resource(), drop, tmp_path / "out"))
    assert fields_of(rows, "cert_no", "name", "school", "grad_date", "_row", "_source") == [
        ("D001", "张三", "浙江大学", "2018-06-30", 1, "degree_2026.csv:line 5"),
        ("D002", "李四", "杭州,师范大学", None, 2, "degree_2026.csv:line 8"),
        ("D003", "王五", "宁波大学", "2020-06-30", 3, "degree_2026.csv:line 10"),
    ]


def test_missing_required_column_is_schema_drift_and_extras_are_ignored(drop, tmp_path):
    (drop / "degree_2026.csv").write_text("编号,姓名,学校,毕业日期\nD001,张三,浙江大学,2018-06-30\n",
                                          encoding="utf-8")
    with pytest.raises(SchemaDriftError) as err:
        run(make_resource(), drop, tmp_path / "out")
    assert "证书编号" in str(err.value) and "unit=edu" in str(err.value) and err.value.field == "cert_no"
    assert "张三" not in str(err.value)


def test_optional_missing_column_is_null(drop, tmp_path):
    (drop / "degree_2026.csv").write_text("证书编号,姓名\nD001,张三\n", encoding="utf-8")
    rows = staged(run(make_resource(), drop, tmp_path / "out"))
    assert fields_of(rows, "cert_no", "name", "school", "grad_date") == [("D001", "张三", None, None)]


def test_files_read_in_name_order_with_running_row_numbers(drop, tmp_path):
    (drop / "degree_b.csv").write_text(HEADER + "D003,王五,宁波大学,2020-06-30\n", encoding="utf-8")
    (drop / "degree_a.csv").write_bytes((HEADER + "D001,张三,浙江大学,2018-06-30\n"
                                         "D002,李四,浙江大学,2018-06-30\n").encode("gbk"))
    (drop / "other.csv").write_text(HEADER + "X,X,X,X\n", encoding="utf-8")
    rows = staged(run(make_resource(), drop, tmp_path / "out", chunk_rows=2))
    assert fields_of(rows, "cert_no", "_row", "_source") == [
        ("D001", 1, "degree_a.csv:line 2"), ("D002", 2, "degree_a.csv:line 3"),
        ("D003", 3, "degree_b.csv:line 2")]


def test_no_matching_file_is_an_extract_error(drop, tmp_path):
    with pytest.raises(ExtractError, match="no file matching 'degree_\\*.csv'"):
        run(make_resource(), drop, tmp_path / "out")


def test_watermark_resource_keeps_rows_inside_the_window(drop, tmp_path):
    (drop / "degree_2026.csv").write_text(
        HEADER + "D001,a,s,2026-10-01\nD002,b,s,2026-10-20\nD003,c,s,2026-11-02\nD004,d,s,bad\n",
        encoding="utf-8")
    res = run(make_resource(watermark=True), drop, tmp_path / "out", since="2026-10-10")
    assert [r["cert_no"] for r in staged(res)] == ["D002", "D004"]  # unparseable kept for validation
    assert (res.watermark_before, res.watermark_after) == ("2026-10-10", "2026-10-20")


# ----------------------------------------------------------------------------- XLSX

def write_xlsx(path, sheets: dict[str, list[list]]):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for r in rows:
            ws.append(r)
    wb.save(path)


XLSX_FIELDS = [
    {"name": "account_no", "required": True, "source": "个人账号"},
    {"name": "name", "source": "姓名", "semantic": "person_name"},
    {"name": "open_date", "type": "date", "source": "开户日期"},
    {"name": "balance", "type": "decimal", "source": "余额"},
    {"name": "months", "type": "integer", "source": "缴存月数"},
    {"name": "paid_at", "type": "datetime", "source": "最近缴存时间"},
]
XLSX_HEADER = ["个人账号", "姓名", "开户日期", "余额", "缴存月数", "最近缴存时间"]


def test_xlsx_title_block_blank_rows_and_values(drop, tmp_path):
    write_xlsx(drop / "account_202611.xlsx", {
        "说明": [["本表说明"]],
        "缴存信息": [
            ["住房公积金缴存信息"], ["制表单位：省住房公积金管理中心", None, "2026-11"],
            XLSX_HEADER,
            ["A001", " 张三 ", datetime(2020, 1, 2), 1234.0, 12, datetime(2026, 10, 31, 8, 30)],
            [None, None, None, None, None, None],
            [],
            ["A002", "李四", date(2021, 3, 4), 12.5, 3.0, datetime(2026, 10, 31)],
        ]})
    res = run(make_resource(file="account_*.xlsx", sheet="缴存信息", fields=XLSX_FIELDS), drop, tmp_path / "o")
    rows = staged(res)
    cols = ("account_no", "name", "open_date", "balance", "months", "paid_at", "_row", "_source")
    assert fields_of(rows, *cols) == [
        ("A001", "张三", "2020-01-02", "1234", "12", "2026-10-31 08:30:00", 1,
         "account_202611.xlsx:缴存信息!row 4"),
        ("A002", "李四", "2021-03-04", "12.5", "3", "2026-10-31 00:00:00", 2,
         "account_202611.xlsx:缴存信息!row 7"),
    ]


def test_xlsx_defaults_to_the_first_sheet_and_names_a_missing_one(drop, tmp_path):
    write_xlsx(drop / "loan_1.xlsx", {"贷款": [XLSX_HEADER[:2], ["L1", "张三"]], "其他": [["x"]]})
    fields = XLSX_FIELDS[:2]
    rows = staged(run(make_resource(file="loan_*.xlsx", fields=fields), drop, tmp_path / "o"))
    assert fields_of(rows, "account_no", "name", "_source") == [("L1", "张三", "loan_1.xlsx:贷款!row 2")]
    with pytest.raises(ExtractError, match="has no sheet '缴存信息'"):
        run(make_resource(file="loan_*.xlsx", sheet="缴存信息", fields=fields), drop, tmp_path / "o")


def test_xlsx_value_beyond_the_header_is_an_error(drop, tmp_path):
    write_xlsx(drop / "loan_1.xlsx", {"贷款": [XLSX_HEADER[:2], ["L1", "张三", "stray"]]})
    with pytest.raises(ExtractError, match="row 2: a value right of the last header column"):
        run(make_resource(file="loan_*.xlsx", fields=XLSX_FIELDS[:2]), drop, tmp_path / "o")


def test_not_a_workbook_is_an_extract_error(drop, tmp_path):
    (drop / "loan_1.xlsx").write_bytes(b"not a zip")
    with pytest.raises(ExtractError, match="loan_1.xlsx is not a readable XLSX workbook"):
        run(make_resource(file="loan_*.xlsx", fields=XLSX_FIELDS[:2]), drop, tmp_path / "o")


def test_headerless_file_is_schema_drift_without_quoting_the_data(drop, tmp_path, caplog):
    (drop / "degree_2026.csv").write_text("D001,张三,330102199001011235,2018-06-30\n", encoding="utf-8")
    with pytest.raises(SchemaDriftError) as err:
        run(make_resource(), drop, tmp_path / "out")
    msg = str(err.value) + " ".join(r.getMessage() for r in caplog.records)
    assert "none of the first 20 non-blank rows names any catalog column" in msg
    assert "张三" not in msg and "330102199001011235" not in msg


@pytest.mark.parametrize(("body", "line"), [
    ('D001,张三,"浙江大学,2018-06-30\nD002,李四,浙江大学,2018-06-30\n', 2),  # unterminated quote
    ('D001,张三,"浙江"大学,2018-06-30\n', 2),
])
def test_malformed_csv_is_an_extract_error(drop, tmp_path, body, line):
    (drop / "degree_2026.csv").write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(ExtractError, match=f"degree_2026.csv line {line}: not valid CSV"):
        run(make_resource(), drop, tmp_path / "out")
