"""Builders for the warehouse tests: frames of inline rows for any catalog resource, one-call
loads, table snapshots and the demo catalog."""

from __future__ import annotations

import json
from datetime import date
from functools import lru_cache
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from catalog import load_catalog
from catalog.models import Catalog, Resource
from datarail.interval import Interval
from warehouse.load import load_delivery

REPO = Path(__file__).resolve().parent.parent
D1, D2, D3, D4 = (Interval.daily(date(2026, 11, d)) for d in (20, 21, 22, 23))


@lru_cache(maxsize=1)
def demo_catalog() -> Catalog:
    return load_catalog(REPO / "catalog" / "demo")


def frame(resource: Resource, rows: list[dict]) -> pd.DataFrame:
    """A validated-rows frame: every field (missing ones null), datetimes parsed, ``_row``."""
    cols = [f.name for f in resource.fields]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols, dtype=object)
    for f in resource.fields:
        if f.type == "datetime":
            df[f.name] = pd.to_datetime(df[f.name])
    df["_row"] = list(range(1, len(df) + 1))
    return df


def quarantine(resource: Resource, keys: list) -> pd.DataFrame:
    rows = [[100 + i, json.dumps(k if isinstance(k, list) else [k], ensure_ascii=False), "[]", "{}"]
            for i, k in enumerate(keys)]
    return pd.DataFrame(rows, columns=["_row", "key", "reasons", "record"])


def load(engine, resource: Resource, interval: Interval, rows: list[dict], quarantined: list | None = None,
         run_id: str = "r") -> dict:
    """Load inline rows (plus quarantined keys) as one delivery of ``interval``."""
    q = quarantine(resource, quarantined or [])
    passed = frame(resource, rows)
    return load_delivery(engine, resource, interval=interval, run_id=f"{run_id}-{interval.key[:8]}", passed=passed,
                         quarantined=q, checks=[], extracted=len(passed) + len(q),
                         extract_summary={"bytes": 1}, latest_update=interval.run_date.isoformat())


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql), params)]


def day(value) -> str:
    """A stored date / timestamp as 'YYYY-MM-DD' whatever the engine returns."""
    return None if value is None else str(value)[:10]


def old_layout_person(engine, resident_id: str) -> None:
    """What the spine (before migration 0003) left behind: ``ods.person`` without _valid_from,
    no history table, one row loaded in D1, and the run that loaded it."""
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE ods.person (resident_id TEXT PRIMARY KEY, name TEXT, birth_date DATE, "
                          "updated_at TIMESTAMP, _run_id VARCHAR(250), _interval_key VARCHAR(40), "
                          "_row_hash VARCHAR(64) NOT NULL, _loaded_at TIMESTAMP NOT NULL)"))
        c.execute(sa.text("INSERT INTO ods.person VALUES (:a, '张三', '1990-03-07', '2026-11-20 08:00:00', 'old', "
                          ":k, 'h', '2026-11-21 01:00:00')"), {"a": resident_id, "k": D1.key})
        c.execute(sa.text("INSERT INTO meta.runs (resource, interval_key, unit, interval_start, interval_end, status, "
                          "extracted, loaded) VALUES ('RK-T-0001', :k, 'psb', :s, :e, 'loaded', 1, 1)").bindparams(
            sa.bindparam("s", type_=sa.DateTime()), sa.bindparam("e", type_=sa.DateTime())),
            {"k": D1.key, "s": D1.start.replace(tzinfo=None), "e": D1.end.replace(tzinfo=None)})
