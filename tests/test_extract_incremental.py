"""The fast path's read plan for an incremental window, against the real MariaDB (throwaway
database): a window counted at most ``chunk_rows`` rows is read in one query without LIMIT,
a larger one in keyset pages, and both stage exactly the same rows."""

from __future__ import annotations

import logging
import random
from datetime import date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from catalog.models import Resource
from datarail.interval import Interval
from extractors.base import ConnInfo
from extractors.sql import KeyRange, extract_sql

pytestmark = pytest.mark.integration

INTERVAL = Interval.daily(date(2026, 11, 22))
SINCE = "2026-11-21 13:00:00"  # lookback 1 day: the window is 2026-11-20 13:00 < updated_at < 2026-11-23
WINDOW_IDS = list(range(10, 301, 10))  # 30 rows in the window, the other 270 months older


def resource() -> Resource:
    return Resource.model_validate({
        "code": "T-INC-1", "table": "people", "name_zh": "人员", "name_en": "People", "unit": "psb",
        "system": "huji", "location": {"table": "t_people"},
        "fields": [
            {"name": "id", "type": "integer", "required": True},
            {"name": "name"},
            {"name": "updated_at", "type": "datetime", "required": True},
        ],
        "primary_key": ["id"],
        "change_tracking": {"mode": "watermark", "column": "updated_at", "lookback_days": 1},
        "update_cycle": "daily", "sharing": {"type": "unconditional"},
    })


def updated_at(i: int) -> datetime:
    if i in WINDOW_IDS:
        return datetime(2026, 11, 20, 13, 0) + timedelta(minutes=11 * i)  # inside, up to 2026-11-22 20:00
    return datetime(2026, 9, 1) + timedelta(hours=i)


@pytest.fixture
def source(mariadb_url):
    """``t_people`` (id BIGINT PK, watermark index on updated_at), 300 rows inserted out of key
    order, 30 of them in the window; plus a row on each (excluded) bound of the window."""
    engine = sa.create_engine(mariadb_url)
    ids = list(range(1, 301))
    random.Random(7).shuffle(ids)
    rows = [{"id": i, "name": f"人员{i}", "updated_at": updated_at(i)} for i in ids]
    rows += [{"id": 1001, "name": "下界", "updated_at": datetime(2026, 11, 20, 13, 0)},
             {"id": 1002, "name": "上界", "updated_at": datetime(2026, 11, 23, 0, 0)}]
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_people (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(20), "
                          "updated_at DATETIME NOT NULL, KEY ix_people_updated_at (updated_at)) "
                          "DEFAULT CHARSET=utf8mb4")
        c.execute(sa.text("INSERT INTO t_people (id, name, updated_at) VALUES (:id, :name, :updated_at)"), rows)
    engine.dispose()
    u = sa.make_url(mariadb_url)
    yield ConnInfo(conn_type="mysql", host=u.host, port=u.port, login=u.username, password=u.password,
                   schema=u.database)


@pytest.fixture
def cx_queries(monkeypatch):
    """Every SQL text the fast path sends through connectorx, in order (calls pass through)."""
    import connectorx

    sent: list[str] = []
    real = connectorx.read_sql

    def spy(url, query, **kw):
        sent.append(query)
        return real(url, query, **kw)

    monkeypatch.setattr(connectorx, "read_sql", spy)
    return sent


@pytest.fixture
def counts():
    """Every COUNT statement run through SQLAlchemy, with its parameters."""
    seen: list[tuple[str, dict]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if "count(" in statement.lower():
            seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)


def staged(result) -> list[dict]:
    return [row for f in result.files for row in pq.read_table(f).to_pylist()]


def plans(caplog) -> list[str]:
    return [r.getMessage().split(": ", 1)[1] for r in caplog.records
            if r.name == "extractors.sql" and ("one query" in r.getMessage() or "keyset pages" in r.getMessage())]


def test_small_window_is_one_query_staging_what_keyset_pages_stage(source, tmp_path, caplog, cx_queries, counts):
    caplog.set_level(logging.INFO, logger="extractors.sql")
    one = extract_sql(resource(), source, INTERVAL, tmp_path / "one", since=SINCE, chunk_rows=50)
    assert plans(caplog) == ["window of 30 rows (chunk_rows 50): one query"]
    assert len(cx_queries) == 1 and "LIMIT" not in cx_queries[0] and "ORDER BY t_people.id" in cx_queries[0]
    (count_sql, params), = counts
    assert "count(*)" in count_sql and "t_people.updated_at >" in count_sql and "2026-11" not in count_sql  # values bound
    assert set(params.values()) == {datetime(2026, 11, 23), datetime(2026, 11, 20, 13, 0)}

    caplog.clear()
    cx_queries.clear()
    pages = extract_sql(resource(), source, INTERVAL, tmp_path / "pages", since=SINCE, chunk_rows=7)
    assert plans(caplog) == ["window of 30 rows (chunk_rows 7): keyset pages"]
    assert len(cx_queries) == 5 and all("LIMIT 7" in q for q in cx_queries)  # 7 + 7 + 7 + 7 + 2

    portable = ConnInfo(**{**source.to_dict(), "extra": {"sql_engine": "sqlalchemy"}})
    slow = extract_sql(resource(), portable, INTERVAL, tmp_path / "slow", since=SINCE, chunk_rows=7)

    rows = staged(one)
    assert [int(r["id"]) for r in rows] == WINDOW_IDS  # key order, bounds excluded
    assert rows[0] == {"id": "10", "name": "人员10", "updated_at": "2026-11-20 14:50:00", "_row": 1,
                       "_source": "table t_people"}
    assert rows == staged(pages) == staged(slow)
    assert one.rows == pages.rows == 30
    assert one.watermark_after == pages.watermark_after == slow.watermark_after == "2026-11-22 20:00:00"


@pytest.mark.parametrize(("chunk_rows", "plan"), [(30, "one query"), (29, "keyset pages")])
def test_window_of_exactly_chunk_rows_is_one_query(source, tmp_path, caplog, cx_queries, chunk_rows, plan):
    caplog.set_level(logging.INFO, logger="extractors.sql")
    res = extract_sql(resource(), source, INTERVAL, tmp_path / "o", since=SINCE, chunk_rows=chunk_rows)
    assert plans(caplog) == [f"window of 30 rows (chunk_rows {chunk_rows}): {plan}"]
    assert [int(r["id"]) for r in staged(res)] == WINDOW_IDS
    assert all(("LIMIT" in q) == (plan == "keyset pages") for q in cx_queries)


def test_full_extraction_keeps_keyset_pages(source, tmp_path, caplog, cx_queries, counts):
    caplog.set_level(logging.INFO, logger="extractors.sql")
    res = extract_sql(resource(), source, INTERVAL, tmp_path / "o", since=None, chunk_rows=1000)
    assert plans(caplog) == ["no lower watermark bound: keyset pages"]
    assert counts == []  # no count on a first extraction
    assert len(cx_queries) == 1 and "t_people.id >= 1" in cx_queries[0] and "LIMIT 1000" in cx_queries[0]
    assert res.rows == 301  # everything before the interval end


def test_rows_entering_the_window_after_the_count_are_read(source, tmp_path, caplog, monkeypatch, mariadb_url):
    # 30 rows counted, then 5 more arrive before the read: the one query has no LIMIT, so it
    # stages all 35 (written as row groups of at most chunk_rows).
    import connectorx

    caplog.set_level(logging.INFO, logger="extractors.sql")
    real = connectorx.read_sql

    def late_rows_then_read(url, query, **kw):
        engine = sa.create_engine(mariadb_url)
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO t_people (id, name, updated_at) VALUES (:id, '迟到', :at)"),
                      [{"id": i, "at": datetime(2026, 11, 22, 12, 0)} for i in range(2001, 2006)])
        engine.dispose()
        monkeypatch.setattr(connectorx, "read_sql", real)
        return real(url, query, **kw)

    monkeypatch.setattr(connectorx, "read_sql", late_rows_then_read)
    res = extract_sql(resource(), source, INTERVAL, tmp_path / "o", since=SINCE, chunk_rows=30)
    assert plans(caplog) == ["window of 30 rows (chunk_rows 30): one query"]
    assert [int(r["id"]) for r in staged(res)] == WINDOW_IDS + list(range(2001, 2006))
    assert res.rows == 35
    groups = [md.row_group(i).num_rows for md in (pq.ParquetFile(f).metadata for f in res.files)
              for i in range(md.num_row_groups)]
    assert sum(groups) == 35 and max(groups) <= 30


def test_count_honours_the_key_range(source, tmp_path, caplog):
    # The whole window (30) exceeds chunk_rows, the key range's part of it (10) does not.
    caplog.set_level(logging.INFO, logger="extractors.sql")
    part = KeyRange(column="id", lo=1, hi=101, index=0, count=3)
    one = extract_sql(resource(), source, INTERVAL, tmp_path / "one", since=SINCE, chunk_rows=15, key_range=part)
    pages = extract_sql(resource(), source, INTERVAL, tmp_path / "pages", since=SINCE, chunk_rows=4, key_range=part)
    assert plans(caplog) == ["window of 10 rows (chunk_rows 15): one query",
                             "window of 10 rows (chunk_rows 4): keyset pages"]
    assert [int(r["id"]) for r in staged(one)] == list(range(10, 101, 10))
    assert staged(one) == staged(pages)
