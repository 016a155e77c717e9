"""Streaming loads: a delivery read batch by batch from Parquet, the first load written
straight into the current table, and an error in a later batch rolling everything back; on
both engines."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from datarail.errors import WarehouseError
from datarail.interval import Interval
from tests.helpers import person_resource
from warehouse import merge as merge_mod
from warehouse import rows as rows_mod
from warehouse.history import table_checksum
from warehouse.load import load_delivery
from warehouse.rows import Delivery
from warehouse.tables import ensure_ods

pytestmark = pytest.mark.integration

DAY1 = Interval.daily(date(2026, 11, 21))
DAY2 = Interval.daily(date(2026, 11, 22))
# Wall-clock load metadata differs between two loads of the same rows.
VOLATILE = ("_loaded_at", "_run_id")


def people(n: int, first: int = 0, name: str = "张三") -> pa.Table:
    ids = [f"1101011990030{i:05d}" for i in range(first, first + n)]
    return pa.table({
        "resident_id": ids, "name": [f"{name}{i}" for i in range(first, first + n)],
        "birth_date": pa.array([pd.Timestamp("1990-03-07")] * n, pa.timestamp("us")),
        "updated_at": pa.array([pd.Timestamp("2026-11-21 08:00:00")] * n, pa.timestamp("us")),
        "_row": list(range(first, first + n)),
    })


def write_parts(folder, table: pa.Table, parts: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(table) // parts)
    paths = []
    for i in range(parts):
        path = folder / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(i * step, step), path, row_group_size=5)
        paths.append(path)
    return paths


def load(engine, resource, interval, passed, run_id="r1"):
    return load_delivery(engine, resource, interval=interval, run_id=run_id, passed=passed,
                         quarantined=pd.DataFrame({"_row": [], "key": [], "reasons": [], "record": []}),
                         checks=[], extracted=len(passed), extract_summary={}, latest_update=None)


def current(engine) -> str:
    with engine.connect() as c:
        return table_checksum(c, "ods", "person", VOLATILE)


def methods(engine) -> list[str]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(sa.text("SELECT method FROM meta.loads ORDER BY loaded_at"))]


def test_parquet_delivery_in_small_batches_loads_every_row_like_a_frame(warehouse_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(rows_mod, "CHUNK_ROWS", 7)  # 3 files x row groups of 5 -> many batches
    r = person_resource()
    table = people(53)
    out = load(warehouse_engine, r, DAY1, Delivery(write_parts(tmp_path / "d", table, 3),
                                                   columns=[f.name for f in r.fields]))
    assert (out["loaded"], out["inserted"]) == (53, 53)
    streamed = current(warehouse_engine)
    with warehouse_engine.begin() as c:
        c.execute(sa.text("DELETE FROM ods.person"))
    load(warehouse_engine, r, DAY1, table.to_pandas())
    assert current(warehouse_engine) == streamed


def test_first_load_goes_straight_to_the_current_table_and_matches_the_merge(warehouse_engine, tmp_path, monkeypatch):
    r = person_resource()
    table = people(40)
    load(warehouse_engine, r, DAY1, Delivery(write_parts(tmp_path / "a", table, 2)))
    direct = current(warehouse_engine)
    assert methods(warehouse_engine)[-1].endswith("-direct")
    # The same delivery through staging + the set-based merge gives the same current table.
    with warehouse_engine.begin() as c:
        c.execute(sa.text("DELETE FROM ods.person"))
    monkeypatch.setattr(merge_mod, "_is_empty", lambda conn, *tables: False)
    out = load(warehouse_engine, r, DAY1, Delivery(write_parts(tmp_path / "b", table, 2)))
    assert not methods(warehouse_engine)[-1].endswith("-direct") and out["inserted"] == 40
    assert current(warehouse_engine) == direct
    # Later deliveries merge: 10 changed, 5 new, the rest unchanged.
    monkeypatch.undo()
    day2 = pa.concat_tables([people(30), people(10, first=30, name="李四"), people(5, first=40)])
    out = load(warehouse_engine, r, DAY2, Delivery(write_parts(tmp_path / "c", day2, 2)))
    assert (out["inserted"], out["updated"], out["unchanged"]) == (5, 10, 30)
    assert not methods(warehouse_engine)[-1].endswith("-direct")


def test_a_bad_value_in_a_later_batch_fails_with_its_error_and_keeps_the_previous_state(
        warehouse_engine, tmp_path, monkeypatch):
    r = person_resource()
    load(warehouse_engine, r, DAY1, people(12).to_pandas())
    before = current(warehouse_engine)
    monkeypatch.setattr(rows_mod, "CHUNK_ROWS", 4)
    good = people(20, first=100).to_pandas()
    good["birth_date"] = good["birth_date"].astype(object)
    good.loc[17, "birth_date"] = "not a date"  # only the fifth batch cannot be rendered
    with pytest.raises(WarehouseError, match="birth_date"):
        load(warehouse_engine, r, DAY2, good)
    assert current(warehouse_engine) == before
    # ... and on an empty table (the direct path) nothing is left behind either.
    with warehouse_engine.begin() as c:
        c.execute(sa.text("DELETE FROM ods.person"))
    with pytest.raises(WarehouseError, match="birth_date"):
        load(warehouse_engine, r, DAY1, good)
    with warehouse_engine.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM ods.person")).scalar() == 0


def test_delivery_counts_rows_from_parquet_metadata_and_reads_only_catalog_columns(tmp_path):
    table = people(9).append_column("_source", pa.array(["x"] * 9))
    paths = write_parts(tmp_path / "d", table, 2)
    d = Delivery(paths, columns=["resident_id", "name"])
    assert len(d) == 9
    parts = list(d.tables(4))
    assert sum(len(p) for p in parts) == 9 and all(p.column_names == ["resident_id", "name"] for p in parts)


def test_values_with_copy_escapes_and_nulls_round_trip_exactly(warehouse_engine):
    # Backslashes, tabs, newlines, carriage returns, an escaped-null look-alike, an empty
    # string and a null: what COPY's text format must escape (PostgreSQL) comes back as sent.
    r = person_resource()
    names = ["a\\b", "x\ty", "l1\nl2\r", "\\N", "", None, "中文\\t"]
    table = people(len(names))
    table = table.set_column(table.column_names.index("name"), "name", pa.array(names, pa.string()))
    for day, rows in ((DAY1, table), (DAY2, table)):  # first load (bulk) then the merge (staged)
        out = load(warehouse_engine, r, day, rows.to_pandas())
        assert out["loaded"] == len(names)
    with warehouse_engine.connect() as c:
        got = dict(c.execute(sa.text("SELECT resident_id, name FROM ods.person")).all())
    assert [got[k] for k in table.column("resident_id").to_pylist()] == names
    assert out["unchanged"] == len(names)  # same text, same row hash on the second load


def test_bulk_first_load_keeps_the_keys_and_indexes_and_a_duplicate_key_rolls_back(warehouse_engine):
    r = person_resource()
    ods, _ = ensure_ods(warehouse_engine, r)
    sa.Index("ix_person_name", ods.c.name).create(warehouse_engine)  # a subject index, as scoped builds add
    dup = pa.concat_tables([people(5), people(1)])  # resident 0 twice
    with pytest.raises(sa.exc.IntegrityError):
        load(warehouse_engine, r, DAY1, dup.to_pandas())
    inspector = sa.inspect(warehouse_engine)
    assert inspector.get_pk_constraint("person", schema="ods")["constrained_columns"] == ["resident_id"]
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("person", schema="ods")}
    assert indexed == {("name",)}  # and none on _loaded_at: updates stay HOT (the journal serves change capture)
    with warehouse_engine.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM ods.person")).scalar() == 0
    out = load(warehouse_engine, r, DAY1, people(5).to_pandas())
    assert out["inserted"] == 5 and methods(warehouse_engine)[-1].endswith("-direct")
    inspector = sa.inspect(warehouse_engine)
    assert inspector.get_pk_constraint("person", schema="ods")["constrained_columns"] == ["resident_id"]
    assert {tuple(ix["column_names"]) for ix in inspector.get_indexes("person", schema="ods")} == {("name",)}
    with pytest.raises(sa.exc.IntegrityError):  # the rebuilt primary key still refuses a duplicate
        with warehouse_engine.begin() as c:
            c.execute(sa.text("INSERT INTO ods.person (resident_id, _row_hash, _loaded_at) "
                              "SELECT resident_id, _row_hash, _loaded_at FROM ods.person LIMIT 1"))


def test_load_metadata_is_written_to_every_row_exactly_whatever_its_text(warehouse_engine):
    # The load metadata is the same in every row (PostgreSQL: column defaults during the COPY):
    # a run id with a quote and a percent sign lands verbatim, a missing one as NULL, and a
    # later load's rows carry their own.
    r = person_resource()
    load(warehouse_engine, r, DAY1, people(3).to_pandas(), run_id="manual__2026'11%s_x")
    # (a snapshot resource: the first three come again unchanged and keep their metadata)
    load(warehouse_engine, r, DAY2, pa.concat_tables([people(3), people(2, first=10)]).to_pandas(), run_id=None)
    with warehouse_engine.connect() as c:
        got = c.execute(sa.text("SELECT _run_id, _interval_key, COUNT(*) FROM ods.person "
                                "GROUP BY _run_id, _interval_key ORDER BY _interval_key")).all()
        defaults = c.execute(sa.text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'person' "
            "AND column_default IS NOT NULL AND column_name LIKE '\\_%'")).all() \
            if warehouse_engine.dialect.name == "postgresql" else []
    assert [tuple(g) for g in got] == [("manual__2026'11%s_x", DAY1.key, 3), (None, DAY2.key, 2)]
    assert defaults == []  # the COPY's defaults do not outlive the load


def test_daily_updates_stay_on_their_page_and_write_no_index_entry(warehouse_engine, monkeypatch):
    """PostgreSQL: a bulk first load leaves room on every page (fill factor) and no index
    covers a column every version changes (``_loaded_at``), so the next day's updates are HOT
    (same page, no index entry: the 1% merge's cost is mostly pages touched, bench/README.md)."""
    if warehouse_engine.dialect.name != "postgresql":
        pytest.skip("fill factor and HOT updates are PostgreSQL's")
    from warehouse import load as load_module

    r = person_resource()
    day1 = people(2000)
    load(warehouse_engine, r, DAY1, day1.to_pandas())
    assert methods(warehouse_engine) == ["copy-direct"]
    names = day1.column("name").to_pylist()
    keys = day1.column("resident_id").to_pylist()[::100]  # the day's 1%
    day2 = day1.set_column(1, "name", pa.array([f"李四{i}" if i % 100 == 0 else n for i, n in enumerate(names)]))
    seen = {}

    def counts(conn):  # this transaction's own counters, read before it commits
        seen["updated"], seen["hot"] = conn.execute(sa.text(
            "SELECT pg_stat_get_xact_tuples_updated(CAST('ods.person' AS regclass)), "
            "pg_stat_get_xact_tuples_hot_updated(CAST('ods.person' AS regclass))")).one()

    monkeypatch.setitem(load_module.HOOKS, "before_commit", counts)
    out = load(warehouse_engine, r, DAY2, day2.to_pandas())
    assert (out["updated"], out["unchanged"], seen) == (20, 1980, {"updated": 20, "hot": 20})
    with warehouse_engine.connect() as c:
        assert c.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = CAST('ods.person' AS regclass)")
                         ).scalar() == ["fillfactor=90"]
        # updated keys are found through history (closed by this load); the journal is for keys
        # written without a history row
        assert sorted(c.execute(sa.text("SELECT resident_id FROM ods.person_history")).scalars()) == keys
        assert c.execute(sa.text("SELECT COUNT(*) FROM ods.person_changes")).scalar() == 0
