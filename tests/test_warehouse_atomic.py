"""Atomicity on both engines: a load killed half way, by a dropped connection or by killing
the process, leaves exactly the previous state (compared by checksum), and the next load
works; a base build failing before its commit leaves the previous library."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import person_resource, tiny_catalog
from tests.warehouse_fixtures import D1, D2, D3, REPO, demo_catalog, load, rows
from warehouse import load as load_module
from warehouse import models as models_module
from warehouse.history import checksums
from warehouse.models import build_base_libraries

pytestmark = pytest.mark.integration

A, B, C = "110101199003077777", "110101199003078577", "11010119900307999X"


def person(rid, name):
    return {"resident_id": rid, "name": name, "birth_date": "1990-03-07", "updated_at": "2026-11-20 08:00:00"}


def seed(engine):
    r = person_resource()
    load(engine, r, D1, [person(A, "张三"), person(B, "李四"), person(C, "王五")], quarantined=["x"])
    return r


def env_for(engine) -> dict:
    """Environment pointing a child process at the same warehouse."""
    if engine.dialect.name == "sqlite":
        return {"DATARAIL_HOME": str(Path(engine.url.database).parent.parent)}
    return {"DATARAIL_HOME": "/tmp/unused", "DATARAIL_WAREHOUSE_URL": engine.url.render_as_string(hide_password=False)}


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from datarail.settings import load_settings
    from warehouse.engine import get_engine
    from warehouse import load as load_module
    from tests.helpers import person_resource
    from tests.warehouse_fixtures import D2, load

    point, ready = sys.argv[1], Path(sys.argv[2])
    def stall(conn):
        ready.write_text("in the middle of the load")
        time.sleep(120)
    load_module.HOOKS[point] = stall
    engine = get_engine(load_settings())
    rows = [{"resident_id": "110101199003077777", "name": "改名", "birth_date": "1990-03-07",
             "updated_at": "2026-11-21 08:00:00"}]
    load(engine, person_resource(), D2, rows)
    print("COMMITTED")
""")


@pytest.mark.parametrize("point", ["merged", "before_commit"])
def test_killed_process_leaves_previous_state(warehouse_engine, tmp_path, point):
    r = seed(warehouse_engine)
    before = checksums(warehouse_engine)
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, point, str(ready)], cwd=REPO,
                             env={**os.environ, **env_for(warehouse_engine)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the child never reached the checkpoint"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and "COMMITTED" not in out
    time.sleep(0.2)  # PostgreSQL ends the orphaned backend when it reads the closed socket
    assert checksums(warehouse_engine) == before
    # the warehouse is usable: the same interval loads now
    done = load(warehouse_engine, r, D2, [person(A, "改名")])
    assert done["updated"] == 1 and done["deleted"] == 2


def _drop_connection(engine):
    """A hook that drops the load's own database connection under it."""
    def drop(conn):
        if conn.dialect.name == "postgresql":
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            with admin.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            admin.dispose()
        else:
            # DIALECT: an embedded database has no server side; the closest thing to a dropped
            # connection is the driver connection closing mid-transaction.
            conn.connection.dbapi_connection.close()
    return drop


@pytest.mark.parametrize("point", ["merged", "before_commit"])
def test_dropped_connection_leaves_previous_state(warehouse_engine, monkeypatch, point):
    r = seed(warehouse_engine)
    before = checksums(warehouse_engine)
    monkeypatch.setitem(load_module.HOOKS, point, _drop_connection(warehouse_engine))
    with pytest.raises(sa.exc.DBAPIError):
        load(warehouse_engine, r, D2, [person(A, "改名")])
    monkeypatch.delitem(load_module.HOOKS, point)
    assert checksums(warehouse_engine) == before
    assert load(warehouse_engine, r, D2, [person(A, "改名")])["updated"] == 1


def test_failed_base_build_keeps_the_previous_library(warehouse_engine, monkeypatch):
    cat = tiny_catalog(*demo_catalog().resources)
    build_base_libraries(warehouse_engine, cat, D1)
    r = cat.resource_by_table("household_register")
    load(warehouse_engine, r, D2, [{"resident_id": A, "name": "张三", "gender": "男", "birth_date": "1990-03-07",
                                    "division_code": "110101", "address": "北京", "reg_status": "正常",
                                    "updated_at": "2026-11-21 08:00:00"}])
    before = checksums(warehouse_engine, areas=("base", "meta"))

    def boom(conn):
        raise RuntimeError("killed half way through the build")
    monkeypatch.setitem(models_module.HOOKS, "built", boom)
    with pytest.raises(RuntimeError):
        build_base_libraries(warehouse_engine, cat, D2, full=True, only=["base.population"])
    assert checksums(warehouse_engine, areas=("base", "meta")) == before
    assert rows(warehouse_engine, "SELECT COUNT(*) FROM base.population") == [(0,)]


def test_two_loads_of_one_resource_run_one_after_the_other_and_both_count(warehouse_engine, monkeypatch):
    """A second load of the same resource waits for the first one's commit (PostgreSQL: a
    table lock; SQLite: its single writer), so neither merges against a state the other is
    changing: both intervals' versions end up in current + history."""
    import threading

    r = seed(warehouse_engine)
    holding, release = threading.Event(), threading.Event()

    def hold(conn):
        if threading.current_thread().name == "first":
            holding.set()
            release.wait(30)
    monkeypatch.setitem(load_module.HOOKS, "merged", hold)
    results, errors = {}, []

    def run(name, interval, who):
        try:
            results[name] = load(warehouse_engine, r, interval, [person(A, who)], quarantined=[B, C])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
    first = threading.Thread(target=run, args=("first", D2, "张三丰"), name="first")
    first.start()
    assert holding.wait(30)
    second = threading.Thread(target=run, args=("second", D3, "张三强"), name="second")
    second.start()
    second.join(1.5)
    assert second.is_alive(), f"the second load must wait for the first one's commit ({errors})"
    release.set()
    first.join(30)
    second.join(30)
    assert not errors and results["first"]["updated"] == 1 and results["second"]["updated"] == 1
    assert rows(warehouse_engine, "SELECT name FROM ods.person WHERE resident_id = :k", k=A) == [("张三强",)]
    names = rows(warehouse_engine, "SELECT name FROM ods.person_history WHERE resident_id = :k ORDER BY _valid_from",
                 k=A)
    assert names == [("张三",), ("张三丰",)]
