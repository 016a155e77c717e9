"""SQL extractor against the real MariaDB and PostgreSQL on this machine (throwaway databases)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from catalog.models import Resource
from datarail.interval import Interval
from extractors.base import ConnInfo
from extractors.sql import extract_sql

pytestmark = pytest.mark.integration

INTERVAL = Interval.daily(date(2026, 11, 22))

PEOPLE = [  # (resident_id, name, birth_date, salary, updated_at); inserted out of key order
    ("330102199001011235", "张三", date(1990, 1, 1), Decimal("1234.50"), datetime(2026, 11, 22, 8, 30)),
    ("330102198001011234", "欧阳娜娜", date(1980, 1, 1), Decimal("88.00"), datetime(2026, 11, 20, 10, 0)),
    ("330102198501011230", "李𠮷", date(1985, 1, 1), None, datetime(2026, 11, 21, 12, 0)),
    ("330102197001011231", "王五", date(1970, 1, 1), Decimal("7.25"), datetime(2026, 11, 22, 23, 59, 59)),
    ("330102199901011238", "赵六", date(1999, 1, 1), Decimal("1.00"), datetime(2026, 11, 23, 0, 0)),
]


def resource(table: str) -> Resource:
    return Resource.model_validate({
        "code": "RK-GA-0001", "table": "household_register", "name_zh": "户籍人口信息",
        "name_en": "Household register", "unit": "psb", "system": "huji", "location": {"table": table},
        "fields": [
            {"name": "resident_id", "required": True, "semantic": "resident_id", "source": "SFZH"},
            {"name": "name", "semantic": "person_name", "source": "xm"},
            {"name": "birth_date", "type": "date"},
            {"name": "salary", "type": "decimal"},
            {"name": "updated_at", "type": "datetime", "required": True},
        ],
        "primary_key": ["resident_id"],
        "change_tracking": {"mode": "watermark", "column": "updated_at", "lookback_days": 1},
        "update_cycle": "daily", "sharing": {"type": "unconditional"},
    })


def make_source(url: str, schema: str | None = None, tz_aware: bool = False) -> ConnInfo:
    engine = sa.create_engine(url)
    try:
        if schema:
            with engine.begin() as c:
                c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        md = sa.MetaData(schema=schema)
        t = sa.Table("t_hjrk", md,
                     sa.Column("SFZH", sa.String(18), primary_key=True),
                     sa.Column("xm", sa.Unicode(50)),
                     sa.Column("birth_date", sa.Date),
                     sa.Column("salary", sa.Numeric(10, 2)),
                     sa.Column("updated_at", sa.DateTime(timezone=tz_aware)),
                     sa.Column("note", sa.Text))
        md.create_all(engine)
        with engine.begin() as c:
            c.execute(t.insert(), [
                {"SFZH": p[0], "xm": p[1], "birth_date": p[2], "salary": p[3],
                 "updated_at": p[4].replace(tzinfo=UTC) if tz_aware else p[4], "note": "x"}
                for p in PEOPLE])
    finally:
        engine.dispose()
    u = sa.make_url(url)
    kind = "mysql" if u.drivername.startswith("mysql") else "postgres"
    return ConnInfo(conn_type=kind, host=u.host, port=u.port, login=u.username, password=u.password,
                    schema=u.database)


@pytest.fixture
def cursor_log():
    """Record which DB-API cursor ran each SELECT: proves the read is server-side."""
    seen: list[tuple[str, str, str | None]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "SFZH" in statement:  # our query only
            seen.append((statement, type(cursor).__name__, getattr(cursor, "name", None)))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)


def check(result, *, server_cursor):
    rows = [r for f in result.files for r in pq.read_table(f).to_pylist()]
    # since 2026-11-21 13:00 minus 1 day lookback, before 2026-11-23: three rows, key order
    assert [r["resident_id"] for r in rows] == [
        "330102197001011231", "330102198501011230", "330102199001011235"]
    by_id = {r["resident_id"]: r for r in rows}
    assert by_id["330102198501011230"]["name"] == "李𠮷"  # 4-byte UTF-8 survives utf8mb4
    assert by_id["330102199001011235"] == {
        "resident_id": "330102199001011235", "name": "张三", "birth_date": "1990-01-01", "salary": "1234.50",
        "updated_at": "2026-11-22 08:30:00", "_new_note": "x", "_row": 3, "_source": "table " + result_table(result)}
    assert by_id["330102198501011230"]["salary"] is None
    assert result.watermark_before == "2026-11-21 13:00:00"
    assert result.watermark_after == "2026-11-22 23:59:59"
    assert pq.ParquetFile(result.files[0]).num_row_groups == 2  # chunk_rows=2: streamed in chunks
    assert server_cursor


def result_table(result) -> str:
    return pq.read_table(result.files[0]).column("_source")[0].as_py().removeprefix("table ")


def portable(conn: ConnInfo) -> ConnInfo:
    """The same connection forced onto the portable SQLAlchemy path."""
    return ConnInfo(**{**conn.to_dict(), "extra": {**conn.extra, "sql_engine": "sqlalchemy"}})


def test_mariadb_watermark_extract_streams_server_side(mariadb_url, tmp_path, cursor_log):
    conn = portable(make_source(mariadb_url))
    res = extract_sql(resource("t_hjrk"), conn, INTERVAL, tmp_path / "out", since="2026-11-21 13:00:00",
                      chunk_rows=2)
    assert len(cursor_log) == 1 and "`SFZH`" in cursor_log[0][0]
    check(res, server_cursor=cursor_log[0][1] == "SSCursor")


def test_postgres_watermark_extract_streams_server_side(pg_url, tmp_path, cursor_log):
    conn = portable(make_source(pg_url, schema="huji"))
    res = extract_sql(resource("huji.t_hjrk"), conn, INTERVAL, tmp_path / "out", since="2026-11-21 13:00:00",
                      chunk_rows=2)
    assert len(cursor_log) == 1 and 'huji.t_hjrk."SFZH"' in cursor_log[0][0]
    check(res, server_cursor=cursor_log[0][2] is not None)  # psycopg2 named cursor = server-side


def test_postgres_timestamptz_watermark(pg_url, tmp_path):
    # An aware column: bounds are bound as aware values and values staged as UTC wall-clock text.
    conn = make_source(pg_url, tz_aware=True)
    res = extract_sql(resource("t_hjrk"), conn, INTERVAL, tmp_path / "out", since="2026-11-21 13:00:00",
                      chunk_rows=100)
    rows = [r for f in res.files for r in pq.read_table(f).to_pylist()]
    assert [r["updated_at"] for r in rows] == ["2026-11-22 23:59:59", "2026-11-21 12:00:00",
                                               "2026-11-22 08:30:00"]
    assert res.watermark_after == "2026-11-22 23:59:59"


@pytest.mark.parametrize("server", ["mariadb", "postgres"])
def test_fast_path_streams_the_same_contract(server, request, tmp_path):
    # connectorx -> Arrow -> vectorised text must stage exactly what the portable path stages.
    url = request.getfixturevalue("mariadb_url" if server == "mariadb" else "pg_url")
    conn = make_source(url, schema="huji" if server == "postgres" else None)
    table = "huji.t_hjrk" if server == "postgres" else "t_hjrk"
    fast = extract_sql(resource(table), conn, INTERVAL, tmp_path / "fast", since="2026-11-21 13:00:00",
                       chunk_rows=2)
    assert fast.engine == "connectorx"
    check(fast, server_cursor=True)
    slow = extract_sql(resource(table), portable(conn), INTERVAL, tmp_path / "slow", since="2026-11-21 13:00:00",
                       chunk_rows=2)
    assert slow.engine == "sqlalchemy"
    read = lambda r: [row for f in r.files for row in pq.read_table(f).to_pylist()]  # noqa: E731
    assert read(fast) == read(slow)
    assert (fast.watermark_after, fast.rows) == (slow.watermark_after, slow.rows)


TYPED = {  # column -> (MariaDB type, PostgreSQL type, value); a wide mix of source types
    "k": ("INT", "INT", 1),
    "amt": ("DECIMAL(12,3)", "NUMERIC(12,3)", Decimal("-1234.500")),
    "flt": ("DOUBLE", "DOUBLE PRECISION", 3.0),
    "flt2": ("DOUBLE", "DOUBLE PRECISION", 0.1),
    "big": ("BIGINT", "BIGINT", 9007199254740993),
    "small": ("TINYINT(1)", "BOOLEAN", 1),
    "d": ("DATE", "DATE", date(1960, 2, 29)),
    "ts": ("DATETIME(6)", "TIMESTAMP(6)", datetime(1969, 12, 31, 23, 59, 59, 500000)),
    "ts0": ("DATETIME", "TIMESTAMP", datetime(2026, 11, 22, 0, 0)),
    "tm": ("TIME", "TIME", "08:30:05"),
    "txt": ("VARCHAR(40)", "VARCHAR(40)", "  𠮷 中文 "),
    "blank": ("VARCHAR(40)", "VARCHAR(40)", ""),
    "nul": ("VARCHAR(40)", "VARCHAR(40)", None),
}


@pytest.mark.parametrize("server", ["mariadb", "postgres"])
def test_fast_and_portable_paths_render_every_type_alike(server, request, tmp_path):
    url = request.getfixturevalue("mariadb_url" if server == "mariadb" else "pg_url")
    pos = 0 if server == "mariadb" else 1
    engine = sa.create_engine(url)
    with engine.begin() as c:
        cols = ", ".join(f"{n} {t[pos]}" + (" PRIMARY KEY" if n == "k" else "") for n, t in TYPED.items())
        c.exec_driver_sql(f"CREATE TABLE typed ({cols})")
        row = {n: (bool(t[2]) if server == "postgres" and n == "small" else t[2]) for n, t in TYPED.items()}
        c.execute(sa.text(f"INSERT INTO typed VALUES ({', '.join(':' + n for n in TYPED)})"), row)
    engine.dispose()
    u = sa.make_url(url)
    conn = ConnInfo(conn_type="mysql" if server == "mariadb" else "postgres", host=u.host, port=u.port,
                    login=u.username, password=u.password, schema=u.database)
    types = {"d": "date", "ts": "datetime", "ts0": "date", "amt": "decimal", "flt": "decimal", "k": "integer"}
    res = Resource.model_validate({
        "code": "T-TYPED-1", "table": "typed", "name_zh": "类型", "name_en": "Typed", "unit": "psb",
        "system": "huji", "location": {"table": "typed"},
        "fields": [{"name": n, "type": types.get(n, "string")} for n in TYPED],
        "primary_key": ["k"], "update_cycle": "daily", "sharing": {"type": "unconditional"}})
    fast = extract_sql(res, conn, INTERVAL, tmp_path / "fast", since=None, chunk_rows=10)
    slow = extract_sql(res, portable(conn), INTERVAL, tmp_path / "slow", since=None, chunk_rows=10)
    assert fast.engine == "connectorx" and slow.engine == "sqlalchemy"
    fast_row, slow_row = (pq.read_table(r.files[0]).to_pylist()[0] for r in (fast, slow))
    assert fast_row == slow_row
    assert fast_row["amt"] == "-1234.500" and fast_row["flt"] == "3" and fast_row["flt2"] == "0.1"
    assert fast_row["ts"] == "1969-12-31 23:59:59.500000" and fast_row["ts0"] == "2026-11-22"
    assert fast_row["txt"] == "𠮷 中文" and fast_row["blank"] is None and fast_row["nul"] is None
    assert fast_row["tm"] == "08:30:05" and fast_row["big"] == "9007199254740993"
