"""Snapshot change tracking diffed in the warehouse (``ExtractState.diff_snapshot`` with the
SQL of ``warehouse_sql/extract/``), on the embedded SQLite warehouse and on PostgreSQL: the
same counts and changed keys as an in-memory diff of the two snapshots, a key staged twice
keeps its last row, reruns diff against the same baseline, and memory does not grow with
the snapshot."""

from __future__ import annotations

import json
import tracemalloc
from datetime import date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from datarail.interval import Interval
from extractors.state import ExtractState, row_hash, row_key
from tests.helpers import person_resource

pytestmark = pytest.mark.integration

RESOURCE = person_resource()  # snapshot, key resident_id
D1, D2 = Interval.daily(date(2026, 11, 21)), Interval.daily(date(2026, 11, 22))
NAMES = [f.name for f in RESOURCE.fields]


def stage(folder, rows: list[tuple], *, files: int = 2, group: int = 3) -> list[str]:
    """Staged part files of ``rows`` (field values), split over ``files`` files of row groups."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    per = -(-len(rows) // files) if rows else 0
    for n in range(files):
        part = rows[n * per:(n + 1) * per]
        path = folder / f"part-{n:05d}.parquet"
        cols = {name: pa.array([r[i] for r in part], pa.string()) for i, name in enumerate(NAMES)}
        pq.write_table(pa.table(cols), path, row_group_size=group)
        out.append(str(path))
    return out


def reference(previous: list[tuple], current: list[tuple]) -> tuple[dict, set]:
    """The in-memory diff (what diff_snapshot did before it moved into the warehouse)."""
    def hashes(rows):
        return {row_key([r[0]]): row_hash(r) for r in rows}  # later rows win, like a dict fill
    old, new = hashes(previous), hashes(current)
    counts = {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    changed = set()
    for k, h in new.items():
        kind = "inserted" if k not in old else ("unchanged" if old[k] == h else "updated")
        counts[kind] += 1
        if kind != "unchanged":
            changed.add((k, kind))
    for k in old.keys() - new.keys():
        counts["deleted"] += 1
        changed.add((k, "deleted"))
    return counts, changed


def mark_loaded(engine, interval: Interval) -> None:
    """The baseline must be a loaded run (the load writes this row in its transaction)."""
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO meta.runs (resource, interval_key, unit, interval_start, interval_end, "
                          "status, finished_at) VALUES (:r, :k, 'psb', :s, :e, 'loaded', :f)"),
                  {"r": RESOURCE.code, "k": interval.key, "s": interval.start.replace(tzinfo=None),
                   "e": interval.end.replace(tzinfo=None), "f": datetime(2026, 11, 23)})


def person(i: int, name: str | None = None) -> tuple:
    return (f"3301021990{i:08d}", name or f"人{i}", "1990-01-01" if i % 3 else None, "2026-11-20 08:00:00")


def changes_of(path) -> set:
    return {(r["key"], r["change"]) for r in pq.read_table(path).to_pylist()}


def test_diff_in_the_warehouse_equals_the_in_memory_diff(warehouse_engine, tmp_path):
    state = ExtractState(warehouse_engine)
    first = [person(i) for i in range(1, 41)]
    second = ([person(i) for i in range(1, 41) if i % 5]  # every 5th key deleted
              + [person(i, "改名") for i in (1, 2, 3)]      # a key staged twice: its last row counts
              + [person(i) for i in range(100, 107)])        # inserted
    f1 = stage(tmp_path / "i1", first)
    got1 = state.diff_snapshot(RESOURCE, D1, f1, tmp_path / "c1.parquet", batch_rows=7)
    assert got1 == {"inserted": 40, "updated": 0, "deleted": 0, "unchanged": 0, "baseline_interval": None}
    assert changes_of(tmp_path / "c1.parquet") == reference([], first)[1]
    mark_loaded(warehouse_engine, D1)

    f2 = stage(tmp_path / "i2", second, files=3, group=4)
    got2 = state.diff_snapshot(RESOURCE, D2, f2, tmp_path / "c2.parquet", batch_rows=5)
    counts, changed = reference(first, second)
    assert {k: got2[k] for k in counts} == counts
    assert counts == {"inserted": 7, "updated": 3, "deleted": 8, "unchanged": 29}
    assert got2["baseline_interval"] == D1.key
    assert changes_of(tmp_path / "c2.parquet") == changed
    assert sorted(json.loads(k)[0][-3:] for k, c in changed if c == "updated") == ["001", "002", "003"]
    with warehouse_engine.connect() as c:
        stored = dict(c.execute(sa.text("SELECT interval_key, COUNT(*) FROM meta.snapshot_hashes "
                                        "WHERE resource = :r GROUP BY interval_key"), {"r": RESOURCE.code}).all())
    assert stored == {D1.key: 40, D2.key: 39}  # one hash per distinct key

    # A rerun of interval 2 replaces its own hashes and diffs against interval 1 again.
    again = state.diff_snapshot(RESOURCE, D2, f2, tmp_path / "c3.parquet", batch_rows=1000)
    assert again == got2 and changes_of(tmp_path / "c3.parquet") == changed


def test_an_empty_snapshot_deletes_every_key(warehouse_engine, tmp_path):
    state = ExtractState(warehouse_engine)
    state.diff_snapshot(RESOURCE, D1, stage(tmp_path / "i1", [person(1), person(2)]), None)
    mark_loaded(warehouse_engine, D1)
    got = state.diff_snapshot(RESOURCE, D2, stage(tmp_path / "i2", [], files=1), tmp_path / "c.parquet")
    assert (got["deleted"], got["inserted"], got["unchanged"]) == (2, 0, 0)
    assert {c for _, c in changes_of(tmp_path / "c.parquet")} == {"deleted"}


def test_memory_does_not_grow_with_the_snapshot(tmp_path):
    """Python memory while diffing stays at a batch's worth, far below what holding the
    hashes of both snapshots (the former in-memory diff) takes."""
    from datarail.settings import load_settings
    from warehouse.engine import get_engine
    from warehouse.migrate import migrate

    engine = get_engine(load_settings({"DATARAIL_HOME": str(tmp_path / "home")}))
    migrate(engine)
    state = ExtractState(engine)
    n = 20_000
    first = [person(i) for i in range(n)]
    second = [person(i, "改" if i % 10 == 0 else None) for i in range(n // 20, n + n // 20)]
    f1, f2 = stage(tmp_path / "i1", first, group=2000), stage(tmp_path / "i2", second, group=2000)
    state.diff_snapshot(RESOURCE, D1, f1, None, batch_rows=2000)
    mark_loaded(engine, D1)

    tracemalloc.start()
    got = state.diff_snapshot(RESOURCE, D2, f2, tmp_path / "c.parquet", batch_rows=2000)
    _, peak_sql = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    want, _ = reference(first, second)
    _, peak_dict = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()

    assert {k: got[k] for k in want} == want
    assert want["deleted"] == n // 20 and want["inserted"] == n // 20
    print(f"peak {peak_sql / 1e6:.1f} MB in the warehouse diff, {peak_dict / 1e6:.1f} MB in memory")
    assert peak_sql < peak_dict / 4, (peak_sql, peak_dict)
