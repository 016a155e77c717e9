"""Warehouse: migrations, idempotent loads, quarantine, snapshot deletes, atomicity; on
both the embedded SQLite default and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from datarail.errors import ReconciliationError
from datarail.interval import Interval
from tests.helpers import person_resource
from warehouse.load import load_delivery, previous_watermark
from warehouse.migrate import migrate, status

pytestmark = pytest.mark.integration

DAY1 = Interval.daily(date(2026, 11, 21))
DAY2 = Interval.daily(date(2026, 11, 22))


def frame(rows):
    df = pd.DataFrame(rows, columns=["resident_id", "name", "birth_date", "updated_at", "_row"])
    df["birth_date"] = pd.to_datetime(df["birth_date"]).dt.date
    df["updated_at"] = pd.to_datetime(df["updated_at"])
    return df


def quarantine(rows):
    return pd.DataFrame(rows, columns=["_row", "key", "reasons", "record"])


def ods(engine):
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT resident_id, name, _interval_key FROM ods.person ORDER BY resident_id"))]


def do_load(engine, resource, interval, passed, quarantined=None, extracted=None):
    quarantined = quarantine([]) if quarantined is None else quarantined
    return load_delivery(engine, resource, interval=interval, run_id="r1", passed=passed, quarantined=quarantined,
                         checks=[], extracted=len(passed) + len(quarantined) if extracted is None else extracted,
                         extract_summary={"bytes": 1, "watermark_after": "2026-11-21 10:00:00"},
                         latest_update="2026-11-21")


def test_migrate_is_idempotent_and_reported(warehouse_engine):
    assert migrate(warehouse_engine) == []
    states = status(warehouse_engine)
    assert [s["state"] for s in states] == ["applied"] * len(states)
    assert "0003" in {s["version"] for s in states}


def test_upsert_insert_update_unchanged_and_rerun(warehouse_engine):
    r = person_resource()
    a = ["110101199003077777", "张三", "1990-03-07", "2026-11-21 08:00:00", 1]
    b = ["110101199003078577", "李四", "1990-03-07", "2026-11-21 09:00:00", 2]
    do_load(warehouse_engine, r, DAY1, frame([a, b]))
    assert [x[:2] for x in ods(warehouse_engine)] == [("110101199003077777", "张三"), ("110101199003078577", "李四")]
    # day 2: b changes, a unchanged -> a keeps its day-1 load metadata
    b2 = [*b[:1], "李四新", *b[2:]]
    do_load(warehouse_engine, r, DAY2, frame([a, b2]))
    assert ods(warehouse_engine) == [("110101199003077777", "张三", DAY1.key), ("110101199003078577", "李四新", DAY2.key)]
    before = ods(warehouse_engine)
    do_load(warehouse_engine, r, DAY2, frame([a, b2]))  # rerun of the same interval
    assert ods(warehouse_engine) == before


def test_snapshot_deletes_keys_no_longer_delivered_but_keeps_quarantined_keys(warehouse_engine):
    r = person_resource()
    a = ["110101199003077777", "张三", "1990-03-07", "2026-11-21 08:00:00", 1]
    b = ["110101199003078577", "李四", "1990-03-07", "2026-11-21 09:00:00", 2]
    c = ["11010119900307999X", "王五", "1990-03-07", "2026-11-21 09:00:00", 3]
    do_load(warehouse_engine, r, DAY1, frame([a, b, c]))
    # day 2: a is gone at the source; c is delivered but quarantined -> c stays as it was
    q = quarantine([[2, json.dumps(["11010119900307999X"]), "[]", "{}"]])
    do_load(warehouse_engine, r, DAY2, frame([b]), q)
    assert [x[0] for x in ods(warehouse_engine)] == ["110101199003078577", "11010119900307999X"]
    with warehouse_engine.connect() as conn:
        n = conn.execute(sa.text("SELECT COUNT(*) FROM quality.quarantine WHERE resource = 'RK-T-0001'")).scalar()
    assert n == 1


def test_counts_must_reconcile(warehouse_engine):
    r = person_resource()
    with pytest.raises(ReconciliationError, match="extracted 5 rows"):
        do_load(warehouse_engine, r, DAY1, frame([["110101199003077777", "张三", "1990-03-07",
                                                    "2026-11-21 08:00:00", 1]]), extracted=5)


def test_failed_load_leaves_previous_state(warehouse_engine):
    r = person_resource()
    a = ["110101199003077777", "张三", "1990-03-07", "2026-11-21 08:00:00", 1]
    do_load(warehouse_engine, r, DAY1, frame([a]))
    before = ods(warehouse_engine)
    bad = quarantine([[2, "not-json-key", "[]", None]])  # record NOT NULL -> the insert fails mid-transaction
    with pytest.raises(sa.exc.IntegrityError):
        do_load(warehouse_engine, r, DAY2, frame([[*a[:1], "改名", *a[2:]]]), bad)
    assert ods(warehouse_engine) == before
    with warehouse_engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT interval_key FROM meta.runs")).scalars().all()
    assert runs == [DAY1.key]


def test_previous_watermark_is_keyed_by_interval(warehouse_engine):
    r = person_resource(mode="watermark")
    a = ["110101199003077777", "张三", "1990-03-07", "2026-11-21 08:00:00", 1]
    do_load(warehouse_engine, r, DAY1, frame([a]))
    assert previous_watermark(warehouse_engine, r, DAY1) is None  # a rerun of day 1 starts where day 1 started
    assert previous_watermark(warehouse_engine, r, DAY2) == "2026-11-21 10:00:00"
