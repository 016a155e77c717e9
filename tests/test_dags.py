"""DAG integrity: every DAG imports, the DAGs follow the catalog, and parsing touches no
connection, database or network (checked in a fresh interpreter with those disabled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

REPO = Path(__file__).resolve().parent.parent

PARSE = r"""
import json, socket, sqlite3, sys
def refuse(*a, **k):
    raise RuntimeError("DAG parsing tried to open a connection")
socket.socket.connect = refuse
socket.create_connection = refuse
sqlite3.connect = refuse
import psycopg2, pymysql
psycopg2.connect = refuse
pymysql.connect = refuse
before = set(sys.modules)
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]))
heavy = sorted(m for m in ("pandas", "great_expectations", "pyarrow", "openpyxl") if m in sys.modules and m not in before)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": {d: sorted(t.task_id for t in dag.tasks) for d, dag in bag.dags.items()},
                  "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "DATARAIL_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
           "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"), "DATARAIL_REPO": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_dag_imports_without_touching_connections(parsed):
    assert parsed["errors"] == {}


def test_one_extract_dag_per_source_unit_and_the_downstream_dags(parsed):
    from catalog import load_catalog
    from datarail.settings import load_settings

    cat = load_catalog(load_settings().catalog_dir)
    expected = {f"datarail_extract_{u.code}" for u in cat.source_units if cat.resources_of(u.code)}
    expected |= {"datarail_base_libraries", "datarail_publish", "datarail_metrics", "datarail_leadership_export"}
    assert set(parsed["dags"]) == expected
    for unit in cat.source_units:
        tasks = parsed["dags"].get(f"datarail_extract_{unit.code}", [])
        for r in cat.resources_of(unit.code):
            assert {f"{r.table}.{s}" for s in ("extract", "validate", "load", "tickets")} <= set(tasks)


def test_parsing_imports_no_heavy_library(parsed):
    assert parsed["heavy"] == []


def test_quality_loop_tasks(parsed):
    # cross-resource checks before publishing (flags need their tickets); digests after the reports
    assert {"cross_checks", "publish"} <= set(parsed["dags"]["datarail_publish"])
    assert {"compute", "quality_reports", "notify"} <= set(parsed["dags"]["datarail_metrics"])
