"""Schema drift on untyped sources (file drops and JSON APIs), on tiny inline sources:
new columns under every policy (``evolve`` stages them as ``_new_<name>``, even when a later
file or page brings them), and retyped columns judged on the delivered values
(``extractors.drift.RetypeWatch``) under every policy."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.models import Resource
from datarail.errors import SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo
from extractors.drift import RETYPE_SHARE, json_misfit, nonconforming
from extractors.files import extract_files
from extractors.http import extract_http
from extractors.run import reconcile
from tests.test_extract_http import serve  # noqa: F401 - the local JSON API fixture

pytestmark = pytest.mark.unit

INTERVAL = Interval.daily(date(2026, 11, 22))
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01}


def file_resource(policy: str = "evolve", pattern: str = "p_*.csv") -> Resource:
    return Resource.model_validate({
        "code": "RK-GA-0009", "table": "register", "name_zh": "户籍", "name_en": "Register", "unit": "psb",
        "system": "drop", "location": {"file": pattern},
        "fields": [{"name": "resident_id", "required": True, "source": "sfzh", "semantic": "resident_id"},
                   {"name": "name", "source": "xm", "semantic": "person_name"},
                   {"name": "birth_date", "type": "date", "source": "csrq"},
                   {"name": "children", "type": "integer", "source": "zn"}],
        "primary_key": ["resident_id"], "update_cycle": "daily", "sharing": {"type": "unconditional"},
        "schema_drift": policy})


def api_resource(policy: str = "evolve") -> Resource:
    return Resource.model_validate({
        "code": "FR-SC-0009", "table": "companies", "name_zh": "企业", "name_en": "Companies", "unit": "amr",
        "system": "api", "location": {"endpoint": "/api/companies", "pagination": "page"},
        "fields": [{"name": "uscc", "required": True, "semantic": "uscc"},
                   {"name": "name"},
                   {"name": "founded", "type": "date"}],
        "primary_key": ["uscc"], "update_cycle": "daily", "sharing": {"type": "unconditional"},
        "schema_drift": policy})


IDS = ["330102199001011235", "330102198001011234", "330102198501011230", "330102197001011238"]


def drop_with(tmp_path, files: dict[str, str]):
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    for name, text in files.items():
        (drop / name).write_text(text, encoding="utf-8")
    return ConnInfo("fs", extra={"path": str(drop)})


def extract(resource, conn, out, chunk_rows=10):
    return extract_files(resource, conn, INTERVAL, out, since=None, chunk_rows=chunk_rows)


def staged(res) -> list[dict]:
    return [r for f in res.files for r in pq.read_table(f).to_pylist()]


# ----------------------------------------------------------------------------- new columns: files


def test_evolve_stages_a_new_column_a_later_file_brings(tmp_path):
    conn = drop_with(tmp_path, {
        "p_1.csv": f"sfzh,xm,csrq,zn\n{IDS[0]},张三,1990-01-01,1\n{IDS[1]},李四,1980-01-01,0\n",
        "p_2.csv": f"sfzh,xm,csrq,zn,bz\n{IDS[2]},王五,1985-01-01,2,改名\n{IDS[3]},赵六,1970-01-01,,\n"})
    # chunk_rows=1: p_1's rows are written before p_2's header shows the new column
    res = extract(file_resource("evolve"), conn, tmp_path / "o", chunk_rows=1)
    assert res.drift["new"] == ["bz"] and res.rows == res.rows_read == 4
    assert res.columns == ["resident_id", "name", "birth_date", "children", "_new_bz", "_row", "_source"]
    assert [(r["_new_bz"], r["_row"]) for r in staged(res)] == [(None, 1), (None, 2), ("改名", 3), (None, 4)]
    # every part file has the delivery's columns (the earlier one was widened, row groups kept)
    assert len(res.files) == 2
    assert {tuple(pq.read_schema(f).names) for f in res.files} == {tuple(res.columns)}
    assert pq.ParquetFile(res.files[0]).num_row_groups == 2
    reconcile(file_resource("evolve"), res)


def test_evolve_stages_new_columns_of_xlsx_and_of_a_header_only_file(tmp_path):
    import openpyxl

    conn = drop_with(tmp_path, {"p_1.csv": "sfzh,xm,csrq,zn,lxdh\n"})  # header only: a column, no rows
    wb = openpyxl.Workbook()
    wb.active.append(["sfzh", "xm", "csrq", "zn", "bz"])
    wb.active.append([IDS[0], "张三", datetime(1990, 1, 1), 1, "备注"])
    wb.save(tmp_path / "drop" / "p_2.xlsx")
    res = extract(file_resource("evolve", "p_*.*"), conn, tmp_path / "o")
    assert res.drift["new"] == ["lxdh", "bz"]
    assert [(r["resident_id"], r["birth_date"], r["_new_lxdh"], r["_new_bz"]) for r in staged(res)] == [
        (IDS[0], "1990-01-01", None, "备注")]


def test_freeze_refuses_a_new_column_even_without_values_naming_the_header(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": f"sfzh,xm,csrq,zn,bz\n{IDS[0]},张三,1990-01-01,1,\n"})
    with pytest.raises(SchemaDriftError) as err:
        extract(file_resource("freeze"), conn, tmp_path / "o")
    text = str(err.value)
    assert "column bz is delivered by file p_1.csv" in text and "resource=RK-GA-0009" in text
    assert "offending row: p_1.csv:line 1 (the header" in text
    assert not list((tmp_path / "o").glob("*.parquet"))


def test_discard_value_drops_new_column_values_and_counts_them(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": f"sfzh,xm,csrq,zn,bz\n{IDS[0]},张三,1990-01-01,1,x\n"
                                           f"{IDS[1]},李四,1980-01-01,0,y\n{IDS[2]},王五,1985-01-01,0,\n"})
    res = extract(file_resource("discard_value"), conn, tmp_path / "o")
    assert res.rows == 3 and res.drift["discarded_values"] == 2 and "_new_bz" not in res.columns


# ----------------------------------------------------------------------------- retyped: files

RETYPED_CSV = ("sfzh,xm,csrq,zn\n"
               f"{IDS[0]},张三,1990-01-01,1\n"       # line 2: fits
               f"{IDS[1]},李四,张三的生日,2\n"         # line 3: csrq no longer a date
               f"{IDS[2]},王五,见附件,0\n"
               f"{IDS[3]},赵六,不详,\n")


def test_a_mostly_unparseable_date_column_is_retyped_and_evolve_keeps_the_text(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": RETYPED_CSV})
    res = extract(file_resource("evolve"), conn, tmp_path / "o", chunk_rows=2)
    assert res.drift["retyped"] == {"birth_date": "3 of 4 non-empty values do not fit catalog type date"}
    assert [r["birth_date"] for r in staged(res)] == ["1990-01-01", "张三的生日", "见附件", "不详"]
    assert not (tmp_path / "o" / ".drift-flags.parquet").exists()


def test_a_few_bad_values_are_data_defects_not_drift(tmp_path):
    rows = "".join(f"{IDS[i % 4][:-4]}{i:04d},某,19{60 + i}-01-01,{i}\n" for i in range(5))
    conn = drop_with(tmp_path, {"p_1.csv": "sfzh,xm,csrq,zn\n" + rows + f"{IDS[0]},张三,不详,两个\n"})
    res = extract(file_resource("freeze"), conn, tmp_path / "o")  # 1 of 6 bad: validation's business
    assert res.drift["retyped"] == {} and res.rows == 6


def test_freeze_refuses_a_retyped_column_naming_the_first_offending_line(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": RETYPED_CSV})
    with pytest.raises(SchemaDriftError) as err:
        extract(file_resource("freeze"), conn, tmp_path / "o", chunk_rows=2)
    text = str(err.value)
    assert "column csrq is retyped in files p_*.csv (3 of 4 non-empty values do not fit catalog type date)" in text
    assert "offending row: p_1.csv:line 3" in text and err.value.field == "birth_date"
    assert "张三的生日" not in text  # values never appear in errors
    assert not list((tmp_path / "o").glob("*parquet"))  # nothing staged


def test_discard_value_nulls_what_does_not_coerce_in_a_retyped_column(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": RETYPED_CSV})
    res = extract(file_resource("discard_value"), conn, tmp_path / "o", chunk_rows=2)
    assert list(res.drift["retyped"]) == ["birth_date"]
    assert [r["birth_date"] for r in staged(res)] == ["1990-01-01", None, None, None]
    assert [r["children"] for r in staged(res)] == ["1", "2", "0", None]  # other columns untouched
    assert res.drift["discarded_values"] == 3 and res.rows == res.rows_read == 4
    reconcile(file_resource("discard_value"), res)


def test_discard_row_sets_rows_of_a_retyped_column_aside_and_renumbers(tmp_path):
    conn = drop_with(tmp_path, {"p_1.csv": RETYPED_CSV})
    res = extract(file_resource("discard_row"), conn, tmp_path / "o", chunk_rows=2)
    rows = staged(res)
    assert [(r["resident_id"], r["_row"], r["_source"]) for r in rows] == [(IDS[0], 1, "p_1.csv:line 2")]
    assert res.rows == 1 and res.drift["discarded_rows"] == 3 and res.rows_read == 4
    rejects = pq.read_table(res.rejects_file).to_pylist()
    assert [(r["_source"], r["reason"]) for r in rejects] == [
        ("p_1.csv:line 3", "birth_date: not a date"), ("p_1.csv:line 4", "birth_date: not a date"),
        ("p_1.csv:line 5", "birth_date: not a date")]
    assert IDS[1] in rejects[0]["record"]  # kept whole inside staging, never lost
    assert res.source_files[0]["rows"] == 1
    reconcile(file_resource("discard_row"), res)


def test_freeze_with_state_rejects_the_file_holding_the_offending_row(tmp_path):
    from datarail.settings import load_settings
    from extractors.state import ExtractState
    from warehouse.engine import get_engine
    from warehouse.migrate import migrate

    engine = get_engine(load_settings({"DATARAIL_HOME": str(tmp_path / "home")}))
    migrate(engine)
    good = f"sfzh,xm,csrq,zn\n{IDS[0]},某,1990-01-01,1\n"  # the delivery: 4 of 5 dates do not parse
    conn = drop_with(tmp_path, {"p_1.csv": good, "p_2.csv": RETYPED_CSV.replace("1990-01-01", "不详")})
    with pytest.raises(SchemaDriftError, match="offending row: p_2.csv:line 2"):
        extract_files(file_resource("freeze"), conn, INTERVAL, tmp_path / "o", since=None, chunk_rows=10,
                      state=ExtractState(engine))
    rejected = tmp_path / "drop" / "_archive" / "rejected" / INTERVAL.key
    assert sorted(p.name for p in rejected.iterdir()) == ["p_2.csv", "p_2.csv.reason.txt"]
    assert "is retyped" in (rejected / "p_2.csv.reason.txt").read_text(encoding="utf-8")
    assert (tmp_path / "drop" / "p_1.csv").exists()  # the other file stays for the rerun
    engine.dispose()


# ----------------------------------------------------------------------------- JSON APIs


def pages_of(*pages):
    """An API answering ``page=N`` with the Nth list of records."""
    def respond(path, q, h):
        n = int(q.get("page", 1))
        return 200, {}, {"data": pages[n - 1] if n <= len(pages) else [], "total_pages": len(pages)}
    return respond


def company(i: int, **extra) -> dict:
    return {"uscc": f"91330100MA2{i:07d}", "name": f"示例{i}号有限公司", "founded": f"2020-01-{i + 10:02d}",
            **extra}


def api_extract(resource, api, out, chunk_rows=1):
    conn = ConnInfo("http", host="127.0.0.1", port=api.port, extra={**FAST, "page_size": 2})
    return extract_http(resource, conn, INTERVAL, out, since=None, chunk_rows=chunk_rows)


def test_api_evolve_stages_a_sparse_new_key_first_seen_on_a_later_page(serve, tmp_path):  # noqa: F811
    api = serve(pages_of([company(1), company(2)], [company(3, remark="改名"), company(4)]))
    res = api_extract(api_resource("evolve"), api, tmp_path / "o")
    assert res.drift["new"] == ["remark"]
    assert [(r["uscc"][-1], r["_new_remark"]) for r in staged(res)] == [
        ("1", None), ("2", None), ("3", "改名"), ("4", None)]
    assert {tuple(pq.read_schema(f).names) for f in res.files} == {tuple(res.columns)}
    reconcile(api_resource(), res)


@pytest.mark.parametrize(("policy", "rows", "discarded"), [("discard_row", 3, (1, 0)),
                                                           ("discard_value", 4, (0, 1))])
def test_api_discard_policies_on_a_late_new_key(serve, tmp_path, policy, rows, discarded):  # noqa: F811
    api = serve(pages_of([company(1), company(2)], [company(3, remark="改名"), company(4)]))
    res = api_extract(api_resource(policy), api, tmp_path / "o")
    assert res.rows == rows and (res.drift["discarded_rows"], res.drift["discarded_values"]) == discarded
    assert "_new_remark" not in res.columns and res.rows_read == 4


def test_api_freeze_names_the_record_carrying_a_new_key(serve, tmp_path):  # noqa: F811
    api = serve(pages_of([company(1), company(2)], [company(3), company(4, remark=None)]))
    with pytest.raises(SchemaDriftError, match=r"column remark is delivered by endpoint /api/companies .*"
                                               r"offending row: page 2, record 2 \(the first to carry the key"):
        api_extract(api_resource("freeze"), api, tmp_path / "o")


OBJECT_NAMES = [[company(1, name={"zh": "甲"}), company(2, name={"zh": "乙"})],
                [company(3), company(4, name=["丁"])]]


def test_api_field_arriving_as_object_is_retyped_and_evolve_stages_json_text(serve, tmp_path):  # noqa: F811
    api = serve(pages_of(*OBJECT_NAMES))
    res = api_extract(api_resource("evolve"), api, tmp_path / "o")
    assert res.drift["retyped"] == {
        "name": "3 of 4 non-empty values do not fit catalog type string (3 arrive as a JSON object, array or boolean)"}
    assert [r["name"] for r in staged(res)] == ['{"zh": "甲"}', '{"zh": "乙"}', "示例3号有限公司", '["丁"]']


def test_api_freeze_names_page_and_record_of_a_retyped_field(serve, tmp_path):  # noqa: F811
    api = serve(pages_of([company(1), company(2, founded=True)], [company(3, founded=False),
                                                                  company(4, founded={"y": 2020})]))
    with pytest.raises(SchemaDriftError) as err:
        api_extract(api_resource("freeze"), api, tmp_path / "o")
    assert "column founded is retyped in endpoint /api/companies (3 of 4" in str(err.value)
    assert "offending row: page 1, record 2" in str(err.value)


@pytest.mark.parametrize("policy", ["discard_row", "discard_value"])
def test_api_discard_policies_on_a_retyped_field(serve, tmp_path, policy):  # noqa: F811
    api = serve(pages_of(*OBJECT_NAMES))
    res = api_extract(api_resource(policy), api, tmp_path / "o")
    rows = staged(res)
    if policy == "discard_row":
        assert [(r["name"], r["_row"]) for r in rows] == [("示例3号有限公司", 1)]
        assert res.drift["discarded_rows"] == 3
        assert [r["_source"] for r in pq.read_table(res.rejects_file).to_pylist()] == ["page 1", "page 1", "page 2"]
    else:
        assert [r["name"] for r in rows] == [None, None, "示例3号有限公司", None]
        assert res.drift["discarded_values"] == 3
    reconcile(api_resource(policy), res)


# ----------------------------------------------------------------------------- the rules themselves


@pytest.mark.parametrize(("value", "ftype", "misfit"), [
    ({"a": 1}, "string", True), ([1], "date", True), (True, "integer", True), (True, "string", True),
    (True, "boolean", False), ("2020-01-01", "date", False), (3, "integer", False), (None, "date", False)])
def test_json_misfit(value, ftype, misfit):
    assert json_misfit(value, ftype) is misfit


def test_nonconforming_agrees_with_validation_coercion():
    from quality.coerce import coerce_series

    values = ["2018-05-16", "2019-02-30", "2018/5/16", "20180516", "2018年5月16日", "0000-01-01", None, "x",
              "2018-05-16 08:30:00", "12", "12.0", "1,234", "1e3", "inf", "是", "TRUE", "2"]
    arr = pa.array(values, pa.string())
    for ftype in ("date", "datetime", "integer", "decimal", "boolean", "string"):
        _, failed = coerce_series(arr.to_pandas(), ftype)
        assert nonconforming(arr, ftype).to_pylist() == failed.fillna(False).astype(bool).tolist(), ftype


def test_the_share_rule_is_strictly_more_than_half(tmp_path):
    assert RETYPE_SHARE == 0.5
    half = "sfzh,xm,csrq,zn\n" + f"{IDS[0]},张三,1990-01-01,1\n{IDS[1]},李四,不详,1\n"
    res = extract(file_resource("freeze"), drop_with(tmp_path, {"p_1.csv": half}), tmp_path / "o")
    assert res.drift["retyped"] == {}  # 1 of 2: not more than half


def test_api_keys_differing_only_by_spaces_share_one_staged_column(serve, tmp_path):  # noqa: F811
    api = serve(pages_of([company(1, remark="甲"), company(2, **{" remark ": "乙"})]))
    res = api_extract(api_resource("evolve"), api, tmp_path / "o")
    assert res.drift["new"] == ["remark", " remark "]
    assert [r["_new_remark"] for r in staged(res)] == ["甲", "乙"]
