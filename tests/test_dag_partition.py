"""The extract DAG run by real Airflow (``dag.test()`` on a ``BundleDagBag`` of ``dags/``, as
the demo does) on a tiny catalog: a SQL resource with ``partition`` is extracted as mapped
``extract_range`` task instances, one per key range, merged, validated and loaded with every
row reconciled; a file drop with no new file takes the skip path: its extract task is
skipped, validate / load / tickets are skipped after it, and its state does not change.

Airflow reads its settings when first imported, so the DAG runs in a fresh interpreter with
its own ``AIRFLOW_HOME`` (a file-based metadata DB, created in that process)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from datarail.interval import Interval
from datarail.settings import load_settings
from tests.helpers import CONSUMER, UNIT

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
D1, D2 = Interval.daily(date(2026, 11, 21)), Interval.daily(date(2026, 11, 22))
ROWS = 900

RUNNER = r"""
import json, logging, sys
from pathlib import Path
logging.getLogger("great_expectations").setLevel(logging.WARNING)
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select, text
from warehouse.engine import get_engine

dags = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags)
assert not bag.import_errors, bag.import_errors
dag = bag.dags["datarail_extract_psb"]
out = {}
for start, end in json.loads(sys.argv[2]):
    dr = dag.test(logical_date=__import__("datetime").datetime.fromisoformat(end),
                  run_conf={"interval_start": start, "interval_end": end})
    tis = [{"task_id": ti.task_id, "map_index": ti.map_index, "state": str(getattr(ti.state, "value", ti.state))}
           for ti in dr.get_task_instances()]
    with create_session() as s:
        ranges = [{"map_index": x.map_index, "value": XComModel.deserialize_value(x)}
                  for x in s.scalars(select(XComModel).where(XComModel.run_id == dr.run_id,
                                                             XComModel.task_id == "people.extract_range",
                                                             XComModel.key == "return_value"))]
    with get_engine().connect() as c:  # the warehouse state this run left (queries given by the test)
        after = {name: [list(r) for r in c.execute(text(sql))] for name, sql in json.loads(sys.argv[3]).items()}
    out[start] = {"state": str(getattr(dr.state, "value", dr.state)), "tis": tis, "ranges": ranges,
                  "after": after}
print("RESULT " + json.dumps(out, default=str))
"""


def write_catalog(folder: Path, source_db: Path, drop: Path) -> dict[str, str]:
    """A unit with a partitioned SQL table and a file drop; returns the Airflow connection env."""
    (folder / "resources").mkdir(parents=True)
    (folder / "items").mkdir()
    systems = [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "t_psb_sql"},
               {"code": "drop", "name": "前置机", "kind": "file", "conn_id": "t_psb_drop"}]
    fields = [{"name": "id", "type": "integer", "required": True}, {"name": "name", "required": True},
              {"name": "updated_at", "type": "datetime"}]
    common = {"unit": "psb", "name_zh": "人员", "name_en": "People", "primary_key": ["id"],
              "update_cycle": "daily", "sharing": {"type": "unconditional"},
              "change_tracking": {"mode": "snapshot"}}
    resources = [
        {**common, "code": "RK-T-0004", "table": "people", "system": "huji", "location": {"table": "people"},
         "fields": fields, "partition": {"column": "id", "ranges": 3, "min_span": 10}},
        {**common, "code": "RK-T-0005", "table": "people_files", "system": "drop",
         "location": {"file": "people_*.csv"},
         "fields": [{**f, "source": s} for f, s in zip(fields, ("编号", "姓名", "更新时间"), strict=True)]},
    ]
    (folder / "units.yaml").write_text(yaml.safe_dump({"units": [{**UNIT, "systems": systems}, CONSUMER]},
                                                      allow_unicode=True), "utf-8")
    (folder / "resources" / "psb.yaml").write_text(yaml.safe_dump({"resources": resources}, allow_unicode=True),
                                                   "utf-8")
    (folder / "responsibilities.yaml").write_text(yaml.safe_dump({"responsibilities": [
        {"unit": "psb", "resource": r["code"], "cycle": "daily"} for r in resources]}), "utf-8")
    (folder / "items" / "none.yaml").write_text("items: []\n", "utf-8")
    return {"AIRFLOW_CONN_T_PSB_SQL": json.dumps({"conn_type": "sqlite", "host": str(source_db)}),
            "AIRFLOW_CONN_T_PSB_DROP": json.dumps({"conn_type": "fs", "extra": {"path": str(drop)}})}


# What the skip path must leave unchanged: the file resource's ingests, runs and ods rows.
FILE_STATE = {
    "ingests": "SELECT fingerprint, file_name, interval_key, status, rows_staged, archived_to, seen_at "
               "FROM meta.file_ingests WHERE resource = 'RK-T-0005' ORDER BY fingerprint",
    "runs": "SELECT interval_key, status, extracted, loaded, quarantined, finished_at "
            "FROM meta.runs WHERE resource = 'RK-T-0005' ORDER BY interval_key",
    "ods": "SELECT id, name FROM ods.people_files ORDER BY id",
}


def run_airflow(env: dict[str, str], intervals: list[Interval]) -> dict:
    """Run the extract DAG for each interval in order, in one fresh interpreter; per interval
    the run's state, its task instances, the mapped ranges' summaries and ``FILE_STATE``."""
    spans = json.dumps([[iv.start.isoformat(), iv.end.isoformat()] for iv in intervals])
    base = {k: v for k, v in os.environ.items() if k != "DATARAIL_WAREHOUSE_URL"}  # the embedded warehouse
    out = subprocess.run([sys.executable, "-c", RUNNER, str(REPO / "dags"), spans, json.dumps(FILE_STATE)], env={**base, **env},
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def states(run: dict, group: str) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for ti in sorted(run["tis"], key=lambda t: (t["task_id"], t["map_index"])):
        if ti["task_id"].startswith(group + "."):
            got.setdefault(ti["task_id"].split(".", 1)[1], []).append(ti["state"])
    return got


def test_mapped_key_ranges_and_the_nothing_new_skip_in_airflow(tmp_path):
    source = tmp_path / "source.db"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, updated_at TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?)",
                       [(i, f"人员{i}", "2026-11-20 08:00:00") for i in range(1, ROWS + 1)])
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "people_20261121.csv").write_bytes(
        "编号,姓名,更新时间\n1,张三,2026-11-21 08:00:00\n2,李四,2026-11-21 09:00:00\n".encode("gbk"))
    home = tmp_path / "home"
    env = {"DATARAIL_HOME": str(home), "DATARAIL_CATALOG": str(tmp_path / "catalog"), "DATARAIL_REPO": str(REPO),
           "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
           **write_catalog(tmp_path / "catalog", source, drop)}

    runs = run_airflow(env, [D1, D2])
    first, second = runs[D1.start.isoformat()], runs[D2.start.isoformat()]
    assert first["state"] == "success"
    people = states(first, "people")
    assert people["extract_range"] == ["success"] * 3  # one mapped task instance per key range
    assert all(people[t] == ["success"] for t in ("plan_ranges", "extract", "validate", "load", "tickets"))
    assert sorted(ti["map_index"] for ti in first["tis"] if ti["task_id"] == "people.extract_range") == [0, 1, 2]
    ranges = sorted(first["ranges"], key=lambda r: r["map_index"])
    assert [(r["value"]["key_range"]["lo"], r["value"]["key_range"]["hi"]) for r in ranges] == [
        (None, 301), (301, 601), (601, None)]
    assert [r["value"]["rows"] for r in ranges] == [300, 300, 300]

    settings = load_settings(env)
    from warehouse.engine import get_engine
    engine = get_engine(settings)
    with engine.connect() as c:
        run = c.execute(sa.text("SELECT status, extracted, loaded, quarantined FROM meta.runs "
                                "WHERE resource = 'RK-T-0004' AND interval_key = :k"), {"k": D1.key}).one()
        ext = c.execute(sa.text("SELECT rows_read, rows_staged, parts, inserted FROM meta.extract_runs "
                                "WHERE resource = 'RK-T-0004' AND interval_key = :k"), {"k": D1.key}).one()
        ods = c.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM ods.people")).one()
    assert tuple(run) == ("loaded", ROWS, ROWS, 0)  # extracted = loaded + quarantined
    assert tuple(ext) == (ROWS, ROWS, 3, ROWS)
    assert tuple(ods) == (ROWS, ROWS, 1, ROWS)
    assert states(first, "people_files") == {t: ["success"] for t in ("extract", "validate", "load", "tickets")}
    before = first["after"]
    assert [r[1:5] for r in before["ingests"]] == [["people_20261121.csv", D1.key, "processed", 2]]
    assert [r[:5] for r in before["runs"]] == [[D1.key, "loaded", 2, 2, 0]]
    assert before["ods"] == [[1, "张三"], [2, "李四"]]

    # Interval 2: the drop folder has no new file -> extract skipped, validate/load/tickets skipped.
    assert second["state"] == "success"
    assert states(second, "people_files") == {t: ["skipped"] for t in ("extract", "validate", "load", "tickets")}
    assert second["after"] == before  # nothing ingested, loaded, moved or re-timestamped
    assert [p.name for p in drop.iterdir()] == ["_archive"]  # the delivered file was archived in interval 1
    with engine.connect() as c:
        skipped = c.execute(sa.text("SELECT status, rows_staged FROM meta.extract_runs "
                                    "WHERE resource = 'RK-T-0005' AND interval_key = :k"), {"k": D2.key}).one()
        again = c.execute(sa.text("SELECT inserted, updated, deleted, unchanged, parts FROM meta.extract_runs "
                                  "WHERE resource = 'RK-T-0004' AND interval_key = :k"), {"k": D2.key}).one()
    assert tuple(skipped) == ("skipped", 0)
    # the partitioned snapshot ran again in interval 2: nothing changed in the source
    assert states(second, "people")["extract_range"] == ["success"] * 3
    assert tuple(again) == (0, 0, 0, ROWS, 3)
    engine.dispose()
