"""SQL extractor and the shared staging writer, on SQLite files in tmp_path."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from catalog.models import Resource
from datarail.errors import ExtractError, SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo, extract_resource
from extractors.sql import build_select, engine_url, extract_sql
from extractors.staging import StagingWriter, WatermarkWindow, to_text

pytestmark = pytest.mark.unit

INTERVAL = Interval.daily(date(2026, 11, 22))  # [2026-11-22, 2026-11-23) UTC


def make_resource(*, mode: str = "watermark", lookback: int = 0, fields: list[dict] | None = None,
                  table: str = "t_hjrk") -> Resource:
    return Resource.model_validate({
        "code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍人口信息",
        "name_en": "Household register", "unit": "psb", "system": "huji",
        "location": {"table": table},
        "fields": fields or [
            {"name": "resident_id", "required": True, "source": "sfzh", "semantic": "resident_id"},
            {"name": "name", "source": "姓名", "semantic": "person_name"},
            {"name": "seq", "type": "integer", "source": "order"},
            {"name": "phone", "semantic": "phone"},  # not in the source table: null column
            {"name": "updated_at", "type": "datetime", "required": True},
        ],
        "primary_key": ["resident_id"],
        "change_tracking": ({"mode": "watermark", "column": "updated_at", "lookback_days": lookback}
                            if mode == "watermark" else {"mode": "snapshot"}),
        "update_cycle": "daily", "sharing": {"type": "unconditional"},
    })


ROWS = [  # deliberately not in primary-key order
    ("330102199001011235", "  张三 ", 3, "2026-11-22 08:30:00", "x"),
    ("330102198001011234", "李四", 1, "2026-11-20 10:00:00", "x"),
    ("330102198501011230", "", 2, "2026-11-21 12:00:00", "x"),
    ("330102199501011239", "王五", 4, "2026-11-23 00:00:00", "x"),   # exactly the interval end
    ("330102199901011238", "赵六", 5, "2026-11-23 09:00:00", "x"),   # after the interval
]


@pytest.fixture
def sqlite_conn(tmp_path):
    db = tmp_path / "huji.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        # Chinese and reserved-word column names prove identifiers are quoted, not formatted in.
        c.exec_driver_sql('CREATE TABLE t_hjrk (sfzh TEXT PRIMARY KEY, "姓名" TEXT, "order" INTEGER, '
                          'updated_at DATETIME, remark TEXT)')
        c.exec_driver_sql("INSERT INTO t_hjrk VALUES (?, ?, ?, ?, ?)", ROWS)
    engine.dispose()
    return ConnInfo(conn_type="sqlite", host=str(db))


def staged(result) -> list[dict]:
    rows: list[dict] = []
    for f in result.files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def run(resource, conn, out_dir, *, since=None, chunk_rows=1000):
    return extract_sql(resource, conn, INTERVAL, out_dir, since=since, chunk_rows=chunk_rows)


def test_snapshot_reads_every_row_in_primary_key_order(sqlite_conn, tmp_path):
    res = run(make_resource(mode="snapshot"), sqlite_conn, tmp_path / "out")
    rows = staged(res)
    assert [r["resident_id"] for r in rows] == sorted(r[0] for r in ROWS)
    assert [r["_row"] for r in rows] == [1, 2, 3, 4, 5]
    assert res.rows == 5 and res.watermark_before is None and res.watermark_after is None
    by_id = {r["resident_id"]: r for r in rows}
    assert by_id["330102199001011235"]["name"] == "张三"          # trimmed, Chinese intact
    assert by_id["330102198501011230"]["name"] is None            # '' -> null
    assert by_id["330102199001011235"]["seq"] == "3"              # integer -> text
    assert all(r["phone"] is None for r in rows)                  # optional column absent at source
    assert rows[0]["_source"] == "table t_hjrk"
    # schema_drift evolve (the default): the uncatalogued source column is staged beside the fields
    assert res.columns == ["resident_id", "name", "seq", "phone", "updated_at", "_new_remark", "_row", "_source"]
    assert {r["_new_remark"] for r in rows} == {"x"}
    assert res.drift["new"] == ["remark"] and res.drift["missing"] == ["phone"]
    schema = pq.read_schema(res.files[0])
    assert [str(schema.field(n).type) for n in res.columns] == ["string"] * 6 + ["int64", "string"]
    assert res.bytes == sum((tmp_path / "out" / f).stat().st_size for f in ["part-00000.parquet"])


@pytest.mark.parametrize(("since", "lookback", "expected", "after"), [
    (None, 0, ["330102198001011234", "330102198501011230", "330102199001011235"], "2026-11-22 08:30:00"),
    ("2026-11-21 12:00:00", 0, ["330102199001011235"], "2026-11-22 08:30:00"),
    ("2026-11-21T12:00:00", 1, ["330102198501011230", "330102199001011235"], "2026-11-22 08:30:00"),
    ("2026-11-22 08:30:00", 0, [], "2026-11-22 08:30:00"),
    # lookback re-reads an older row, but the watermark never moves backwards
    ("2026-11-22 09:00:00", 1, ["330102198501011230", "330102199001011235"], "2026-11-22 09:00:00"),
])
def test_watermark_window(sqlite_conn, tmp_path, since, lookback, expected, after):
    res = run(make_resource(lookback=lookback), sqlite_conn, tmp_path / "out", since=since)
    assert [r["resident_id"] for r in staged(res)] == expected
    assert res.watermark_before == since
    assert res.watermark_after == after


def test_source_time_zone_moves_the_interval_end(sqlite_conn, tmp_path):
    # 2026-11-23 00:00 UTC is 08:00 in Shanghai: the 00:00 row now belongs to this interval.
    conn = ConnInfo(conn_type="sqlite", host=sqlite_conn.host, extra={"source_tz": "Asia/Shanghai"})
    res = run(make_resource(), conn, tmp_path / "out", since="2026-11-22 08:30:00")
    assert [r["resident_id"] for r in staged(res)] == ["330102199501011239"]
    assert res.watermark_after == "2026-11-23 00:00:00"


def test_rerun_of_an_interval_stages_the_same_files(sqlite_conn, tmp_path):
    out = tmp_path / "staging" / "psb" / "household_register" / INTERVAL.key
    out.mkdir(parents=True)
    (out / "part-00007.parquet").write_bytes(b"stale")
    first = run(make_resource(), sqlite_conn, out, since="2026-11-20 00:00:00", chunk_rows=2)
    snapshot = {p.name: pq.read_table(p).to_pylist() for p in out.glob("*.parquet")}
    second = run(make_resource(), sqlite_conn, out, since="2026-11-20 00:00:00", chunk_rows=2)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]
    assert {p.name: pq.read_table(p).to_pylist() for p in out.glob("*.parquet")} == snapshot
    assert first.rows == second.rows == 3


def test_chunks_become_row_groups(sqlite_conn, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="extractors.staging")
    res = run(make_resource(mode="snapshot"), sqlite_conn, tmp_path / "out", chunk_rows=2)
    assert pq.ParquetFile(res.files[0]).num_row_groups == 3
    chunk_logs = [r.getMessage() for r in caplog.records if ": chunk " in r.getMessage()]
    assert len(chunk_logs) == 3 and "chunk 3, 1 rows, total 5" in chunk_logs[-1]
    assert not any("张三" in r.getMessage() or "330102" in r.getMessage() for r in caplog.records)


def test_missing_required_column_is_schema_drift(sqlite_conn, tmp_path):
    fields = [{"name": "resident_id", "required": True, "source": "sfzh"},
              {"name": "gender", "required": True, "source": "xb"},
              {"name": "updated_at", "type": "datetime"}]
    with pytest.raises(SchemaDriftError) as err:
        run(make_resource(fields=fields), sqlite_conn, tmp_path / "out")
    text = str(err.value)
    assert "xb" in text and "unit=psb" in text and "resource=RK-GA-0001" in text
    assert err.value.field == "gender"
    assert not list((tmp_path / "out").glob("*.parquet"))  # nothing half-staged


def test_missing_table_is_an_extract_error(sqlite_conn, tmp_path):
    with pytest.raises(ExtractError, match="table t_nope does not exist"):
        run(make_resource(table="t_nope"), sqlite_conn, tmp_path / "out")


def test_dispatch_through_extract_resource(sqlite_conn, tmp_path):
    from catalog.models import System
    system = System(code="huji", name="户籍系统", kind="sql", conn_id="sandbox_psb_huji")
    res = extract_resource(make_resource(mode="snapshot"), system, sqlite_conn, INTERVAL, tmp_path / "o")
    assert res.rows == 5


def test_build_select_binds_values_and_quotes_identifiers():
    stmt = build_select("t_hjrk", None, ["sfzh", "姓名", "order"], order_by=["sfzh"],
                        watermark="updated_at", lower="2026-11-21 12:00:00", upper="2026-11-23 00:00:00")
    t = sa.table("t_hjrk", sa.column("sfzh"), sa.column("姓名"), sa.column("order"), sa.column("updated_at"))
    expected = (sa.select(t.c.sfzh, t.c["姓名"], t.c["order"])
                .where(t.c.updated_at < sa.bindparam("wm_upper", "2026-11-23 00:00:00"))
                .where(t.c.updated_at > sa.bindparam("wm_lower", "2026-11-21 12:00:00"))
                .order_by(t.c.sfzh))
    assert stmt.compare(expected)
    compiled = stmt.compile(dialect=postgresql.dialect())
    sql = str(compiled)
    assert '"order"' in sql and "2026-11" not in sql and "ORDER BY t_hjrk.sfzh" in sql
    assert compiled.params == {"wm_upper": "2026-11-23 00:00:00", "wm_lower": "2026-11-21 12:00:00"}


@pytest.mark.parametrize(("conn", "driver", "query"), [
    (ConnInfo("sqlite", host="/data/huji.db"), "sqlite", {}),
    (ConnInfo("mysql", host="db", port=3306, login="u", password="p", schema="huji"), "mysql+pymysql",
     {"charset": "utf8mb4"}),
    (ConnInfo("postgres", host="db", login="u", password="p", schema="sis"), "postgresql+psycopg2", {}),
])
def test_engine_url(conn, driver, query):
    url = engine_url(conn)
    assert url.drivername == driver and dict(url.query) == query
    assert url.database == (conn.host if driver == "sqlite" else conn.schema)


def test_engine_url_rejects_other_kinds():
    with pytest.raises(ExtractError, match="not a SQL source"):
        engine_url(ConnInfo("http", host="x"))


@pytest.mark.parametrize(("value", "ftype", "expected"), [
    (None, "string", None),
    ("  a b  ", "string", "a b"),
    ("   ", "string", None),
    (date(2018, 5, 16), "date", "2018-05-16"),
    (datetime(2018, 5, 16, 8, 30), "datetime", "2018-05-16 08:30:00"),
    (datetime(2018, 5, 16), "date", "2018-05-16"),
    (datetime(2018, 5, 16), "datetime", "2018-05-16 00:00:00"),
    (datetime(2018, 5, 16, 0, 30, tzinfo=UTC), "datetime", "2018-05-16 00:30:00"),
    (12.0, "decimal", "12"),
    (12.5, "decimal", "12.5"),
    (Decimal("1234.50"), "decimal", "1234.50"),
    (True, "boolean", "true"),
    (7, "integer", "7"),
    (time(8, 30), "string", "08:30:00"),
    (timedelta(hours=8, minutes=30), "string", "08:30:00"),
    (float("nan"), "decimal", None),
])
def test_to_text(value, ftype, expected):
    assert to_text(value, ftype) == expected


def test_writer_rolls_files_and_aborts_cleanly(tmp_path):
    res_model = make_resource(mode="snapshot")
    with StagingWriter(tmp_path, res_model, chunk_rows=2, rows_per_file=4) as w:
        for i in range(9):
            w.append([f"id{i}", None, i, None, None], f"row {i}")
    assert [p.name for p in w.files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in w.files] == [4, 4, 1]
    assert pq.read_table(w.files[2]).column("_row").to_pylist() == [9]

    with pytest.raises(RuntimeError), StagingWriter(tmp_path, res_model, chunk_rows=2) as w2:
        for i in range(3):
            w2.append([f"id{i}", None, i, None, None], "x")
        raise RuntimeError("source died")
    assert list(tmp_path.iterdir()) == []  # stale files cleared, the failed run removed its own


def test_watermark_window_rejects_bad_since():
    with pytest.raises(ExtractError, match="not an ISO date"):
        WatermarkWindow.for_resource(make_resource(), INTERVAL, "yesterday")


def test_unreachable_database_is_an_extract_error(tmp_path):
    conn = ConnInfo(conn_type="sqlite", host=str(tmp_path / "no" / "such" / "dir.db"))
    with pytest.raises(ExtractError, match="the source database failed: OperationalError"):
        run(make_resource(), conn, tmp_path / "out")
