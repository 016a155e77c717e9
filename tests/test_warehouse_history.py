"""Loads with history on both engines: insert, update, unchanged, delete, late-arriving rows,
reruns and backfills (compared by checksum), as-of queries and the ods layout upgrade."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from tests.helpers import person_resource, tiny_catalog
from tests.warehouse_fixtures import D1, D2, D3, D4, day, load, old_layout_person, rows
from warehouse.history import asof, checksums, versions
from warehouse.tables import ensure_ods

pytestmark = pytest.mark.integration

A, B, C = "110101199003077777", "110101199003078577", "11010119900307999X"


def person(rid, name, updated="2026-11-20 08:00:00"):
    return {"resident_id": rid, "name": name, "birth_date": "1990-03-07", "updated_at": updated}


def current(engine):
    return rows(engine, "SELECT resident_id, name, _valid_from FROM ods.person ORDER BY resident_id")


def history(engine):
    return [(r[0], r[1], day(r[2]), day(r[3]), r[4]) for r in rows(
        engine, "SELECT resident_id, name, _valid_from, _valid_to, _change FROM ods.person_history "
                "ORDER BY resident_id, _valid_from")]


def test_insert_update_unchanged_delete_keep_history(warehouse_engine):
    r = person_resource()
    s1 = load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四"), person(C, "王五")])
    assert (s1["inserted"], s1["updated"], s1["unchanged"], s1["deleted"]) == (3, 0, 0, 0)
    # D2: A unchanged, B renamed, C gone from the snapshot
    s2 = load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四新")])
    assert (s2["inserted"], s2["updated"], s2["unchanged"], s2["deleted"], s2["late"]) == (0, 1, 1, 1, 0)
    assert [(x[0], x[1], day(x[2])) for x in current(warehouse_engine)] == [
        (A, "张三", "2026-11-20"), (B, "李四新", "2026-11-21")]
    assert history(warehouse_engine) == [(B, "李四", "2026-11-20", "2026-11-21", "updated"),
                                         (C, "王五", "2026-11-20", "2026-11-21", "deleted")]
    # D3: C comes back (a new version; its deleted one stays in history)
    s3 = load(warehouse_engine, r, D3, [person(A, "张三"), person(B, "李四新"), person(C, "王五")])
    assert (s3["inserted"], s3["unchanged"]) == (1, 2)
    assert [x[0] for x in current(warehouse_engine)] == [A, B, C]
    with warehouse_engine.connect() as c:
        logged = c.execute(sa.text("SELECT inserted, updated, unchanged, deleted, late FROM meta.loads "
                                   "ORDER BY valid_from")).all()
    assert [tuple(x) for x in logged] == [(3, 0, 0, 0, 0), (0, 1, 1, 1, 0), (1, 0, 2, 0, 0)]


def test_watermark_resources_never_delete(warehouse_engine):
    r = person_resource(mode="watermark")
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])
    out = load(warehouse_engine, r, D2, [person(B, "李四新", "2026-11-21 09:00:00")])  # only the change
    assert out["deleted"] == 0
    assert [x[:2] for x in current(warehouse_engine)] == [(A, "张三"), (B, "李四新")]
    assert history(warehouse_engine) == [(B, "李四", "2026-11-20", "2026-11-21", "updated")]


def test_quarantined_keys_keep_their_current_version(warehouse_engine):
    r = person_resource()
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])
    out = load(warehouse_engine, r, D2, [person(A, "张三")], quarantined=[B])
    assert out["deleted"] == 0
    assert [x[:2] for x in current(warehouse_engine)] == [(A, "张三"), (B, "李四")]


def test_late_arriving_row_never_overwrites_newer_state(warehouse_engine):
    r = person_resource(mode="watermark")
    load(warehouse_engine, r, D3, [person(A, "张三新", "2026-11-22 08:00:00")])
    # a row of an earlier interval arrives late: current stays, the old version is kept as
    # history before the known one
    out = load(warehouse_engine, r, D1, [person(A, "张三", "2026-11-20 08:00:00")])
    assert (out["late"], out["updated"], out["inserted"]) == (1, 0, 0)
    assert [x[:2] for x in current(warehouse_engine)] == [(A, "张三新")]
    assert history(warehouse_engine) == [(A, "张三", "2026-11-20", "2026-11-22", "late")]
    # a backfill of the interval in between splits the version that covered it
    out = load(warehouse_engine, r, D2, [person(A, "张三中", "2026-11-21 08:00:00")])
    assert out["late"] == 1
    assert history(warehouse_engine) == [(A, "张三", "2026-11-20", "2026-11-21", "updated"),
                                         (A, "张三中", "2026-11-21", "2026-11-22", "late")]
    assert [x[:2] for x in current(warehouse_engine)] == [(A, "张三新")]
    # the same backfill again changes nothing; with other content it is replaced in place
    before = checksums(warehouse_engine, areas=("ods",))
    load(warehouse_engine, r, D2, [person(A, "张三中", "2026-11-21 08:00:00")])
    assert checksums(warehouse_engine, areas=("ods",)) == before
    load(warehouse_engine, r, D2, [person(A, "张三乙", "2026-11-21 09:00:00")])
    assert history(warehouse_engine) == [(A, "张三", "2026-11-20", "2026-11-21", "updated"),
                                         (A, "张三乙", "2026-11-21", "2026-11-22", "late")]


def test_backfill_of_a_missed_interval_is_what_asof_answers(warehouse_engine):
    r = person_resource()
    cat = tiny_catalog(r)
    name_on = lambda key, d: [x["name"] for x in asof(warehouse_engine, cat, "ods.person", key, d)]  # noqa: E731
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四"), person(C, "王五")])
    load(warehouse_engine, r, D4, [person(A, "张三四"), person(B, "李四")])  # C deleted at D4; D2, D3 missed
    # the backfill of D3: A changed on D3, B the same, C already gone (a snapshot of D3 without
    # C must not touch the newer state, and closes nothing itself)
    out = load(warehouse_engine, r, D3, [person(A, "张三三"), person(B, "李四")])
    assert (out["late"], out["deleted"]) == (1, 0) and out["unchanged"] == 1
    assert name_on(A, date(2026, 11, 21)) == ["张三"]
    assert name_on(A, date(2026, 11, 22)) == ["张三三"]
    assert name_on(A, date(2026, 11, 23)) == ["张三四"]
    assert name_on(C, date(2026, 11, 22)) == ["王五"]  # not deleted by the backfill
    assert name_on(C, date(2026, 11, 23)) == []
    assert [x[:2] for x in current(warehouse_engine)] == [(A, "张三四"), (B, "李四")]
    # a key delivered in the gap a deletion left, and a key first seen before its first version
    load(warehouse_engine, r, D4, [person(A, "张三四"), person(B, "李四"), person(C, "王五")])  # rerun: C back
    load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四"), person(C, "王五二")])
    assert name_on(C, date(2026, 11, 21)) == ["王五二"]
    assert name_on(C, date(2026, 11, 20)) == ["王五"]
    assert name_on(A, date(2026, 11, 21)) == ["张三"]
    first = checksums(warehouse_engine, areas=("ods",))
    load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四"), person(C, "王五二")])
    assert checksums(warehouse_engine, areas=("ods",)) == first


def test_late_row_of_a_key_deleted_later_does_not_resurrect_it(warehouse_engine):
    r = person_resource()
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])
    load(warehouse_engine, r, D3, [person(B, "李四")])  # A deleted at D3
    before = checksums(warehouse_engine, areas=("ods",))
    out = load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四")])  # backfill of D2
    assert out["late"] == 1 and out["deleted"] == 0
    assert [x[0] for x in current(warehouse_engine)] == [B]
    assert checksums(warehouse_engine, areas=("ods",)) == before


def test_rerun_of_the_same_interval_gives_identical_tables(warehouse_engine):
    r = person_resource()
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四"), person(C, "王五")])
    load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四新")], quarantined=[C])
    first = checksums(warehouse_engine)
    out = load(warehouse_engine, r, D2, [person(A, "张三"), person(B, "李四新")], quarantined=[C])
    assert (out["inserted"], out["updated"], out["deleted"], out["unchanged"]) == (0, 0, 0, 2)
    second = checksums(warehouse_engine)
    assert second == first
    assert {"ods.person", "ods.person_history", "quality.quarantine", "meta.runs"} <= set(first)


def test_backfill_of_an_older_interval_does_not_change_newer_state(warehouse_engine):
    r = person_resource()
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])
    load(warehouse_engine, r, D2, [person(B, "李四新"), person(C, "王五")])
    before = checksums(warehouse_engine, areas=("ods",))
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])  # D1 again, after D2
    assert checksums(warehouse_engine, areas=("ods",)) == before


def test_asof_and_versions(warehouse_engine):
    r = person_resource()
    cat = tiny_catalog(r)
    load(warehouse_engine, r, D1, [person(A, "张三"), person(B, "李四")])
    load(warehouse_engine, r, D2, [person(A, "张三改")])
    load(warehouse_engine, r, D4, [person(A, "张三改"), person(B, "李四")])
    name_on = lambda key, d: [x["name"] for x in asof(warehouse_engine, cat, "ods.person", key, d)]  # noqa: E731
    assert name_on(A, date(2026, 11, 19)) == []
    assert name_on(A, date(2026, 11, 20)) == ["张三"]
    assert name_on(A, date(2026, 11, 21)) == ["张三改"]
    assert name_on(A, date(2026, 12, 31)) == ["张三改"]
    assert name_on(B, date(2026, 11, 20)) == ["李四"]
    assert name_on(B, date(2026, 11, 22)) == []  # deleted by the D2 snapshot, back on D4
    assert name_on(B, date(2026, 11, 23)) == ["李四"]
    assert name_on(B, date(2026, 11, 21)) == asof(warehouse_engine, cat, "share.person", B, date(2026, 11, 21))
    vs = versions(warehouse_engine, cat, "person", B)
    assert [(v["name"], day(v["_valid_from"]), day(v["_valid_to"]), v["_change"]) for v in vs] == [
        ("李四", "2026-11-20", "2026-11-21", "deleted"), ("李四", "2026-11-23", None, None)]


def test_composite_keys(warehouse_engine):
    r = person_resource(primary_key=["resident_id", "name"])
    cat = tiny_catalog(r)
    load(warehouse_engine, r, D1, [person(A, "甲"), person(A, "乙")])
    load(warehouse_engine, r, D2, [person(A, "甲")])
    assert [x["name"] for x in asof(warehouse_engine, cat, "person", f"{A},乙", date(2026, 11, 20))] == ["乙"]
    assert asof(warehouse_engine, cat, "person", f'["{A}", "乙"]', date(2026, 11, 21)) == []


def test_layout_upgrade_moves_change_capture_to_the_journal(warehouse_engine):
    """An ods table of the layout before the change journal (indexed on _loaded_at, full pages):
    the journal is created holding every current row with its _loaded_at (what the index
    answered, so loads no build consumed yet stay visible), the index is dropped, and on
    PostgreSQL the table gets its fill factor. A second call changes nothing."""
    r = person_resource()
    old_layout_person(warehouse_engine, A)
    old = sa.Table("person", sa.MetaData(), sa.Column("_loaded_at"), schema="ods")
    sa.Index("ix_person__loaded_at", old.c._loaded_at).create(warehouse_engine)
    ensure_ods(warehouse_engine, r)
    journal = [(x[0], str(x[1])[:19]) for x in rows(warehouse_engine, "SELECT resident_id, _loaded_at FROM ods.person_changes")]
    assert journal == [(A, "2026-11-21 01:00:00")]
    assert sa.inspect(warehouse_engine).get_indexes("person", schema="ods") == []
    if warehouse_engine.dialect.name == "postgresql":
        assert rows(warehouse_engine, "SELECT reloptions FROM pg_class WHERE oid = CAST('ods.person' AS regclass)") \
            == [(["fillfactor=90"],)]
    from warehouse import tables as tables_module

    tables_module._READY.clear()
    ensure_ods(warehouse_engine, r)
    assert [x[0] for x in rows(warehouse_engine, "SELECT resident_id FROM ods.person_changes")] == [A]
    load(warehouse_engine, r, D2, [person(B, "王五")])  # and the merge journals into it
    assert sorted(x[0] for x in rows(warehouse_engine, "SELECT resident_id FROM ods.person_changes")) == [A, B]


def test_layout_upgrade_adds_valid_from_from_the_runs(warehouse_engine):
    """An ods table created before history existed (no _valid_from, no history table) is
    upgraded on first use: each row's version starts with the interval of the run that loaded it."""
    r = person_resource()
    old_layout_person(warehouse_engine, A)
    ensure_ods(warehouse_engine, r)
    assert [(x[0], day(x[2])) for x in current(warehouse_engine)] == [(A, "2026-11-20")]
    load(warehouse_engine, r, D2, [person(A, "张三新")])
    assert history(warehouse_engine) == [(A, "张三", "2026-11-20", "2026-11-21", "updated")]
