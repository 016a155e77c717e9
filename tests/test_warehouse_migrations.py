"""Versioned migrations on both engines: from empty, and from every earlier version (with
data loaded by that version's layout) to the same schema; a changed or failing migration."""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import sqlalchemy as sa

from datarail.errors import WarehouseError
from datarail.settings import load_settings
from tests.helpers import person_resource, tiny_catalog
from tests.warehouse_fixtures import D1, D2, day, load, old_layout_person, rows
from warehouse import migrate as migrate_module
from warehouse import sqlfiles
from warehouse.engine import get_engine
from warehouse.history import asof
from warehouse.migrate import available, migrate, status

pytestmark = pytest.mark.integration

A = "110101199003077777"
VERSIONS = [v for v, _, _ in available()]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request, tmp_path):
    """An engine on an empty warehouse (no migration applied)."""
    env = {"DATARAIL_HOME": str(tmp_path / "home")}
    if request.param == "postgresql":
        env["DATARAIL_WAREHOUSE_URL"] = request.getfixturevalue("pg_url")
    engine = get_engine(load_settings(env))
    yield engine
    engine.dispose()


def schema(engine) -> dict:
    with engine.connect() as c:
        insp = sa.inspect(c)
        return {f"{area}.{t}": sorted(col["name"] for col in insp.get_columns(t, schema=area))
                for area in ("meta", "quality", "share", "base") for t in insp.get_table_names(schema=area)}


def test_from_empty(empty_engine):
    assert migrate(empty_engine) == VERSIONS
    assert [s["state"] for s in status(empty_engine)] == ["applied"] * len(VERSIONS)
    assert migrate(empty_engine) == []
    tables = schema(empty_engine)
    assert {"meta.runs", "meta.loads", "meta.builds", "meta.lineage", "meta.lineage_loads", "quality.conflicts",
            "quality.tickets", "meta.schema_migrations"} <= set(tables)


@pytest.mark.parametrize("start", VERSIONS[:-1])
def test_from_each_earlier_version(empty_engine, tmp_path, start):
    # the tables and columns a warehouse migrated from empty ends with (names are the same on
    # both engines), built beside this one
    fresh = get_engine(load_settings({"DATARAIL_HOME": str(tmp_path / "fresh")}))
    migrate(fresh)
    expected = schema(fresh)
    fresh.dispose()

    assert migrate(empty_engine, upto=start) == [v for v in VERSIONS if v <= start]
    if start < "0003":
        old_layout_person(empty_engine, A)
    assert migrate(empty_engine) == [v for v in VERSIONS if v > start]
    assert schema(empty_engine) == expected
    # data loaded before the upgrade keeps working: the next load keeps its version as history
    r = person_resource()
    if start >= "0003":
        load(empty_engine, r, D1, [{"resident_id": A, "name": "张三", "birth_date": "1990-03-07",
                                    "updated_at": "2026-11-20 08:00:00"}])
    load(empty_engine, r, D2, [{"resident_id": A, "name": "张三新", "birth_date": "1990-03-07",
                                "updated_at": "2026-11-21 08:00:00"}])
    cat = tiny_catalog(r)
    assert [x["name"] for x in asof(empty_engine, cat, "person", A, date(2026, 11, 20))] == ["张三"]
    assert [x["name"] for x in asof(empty_engine, cat, "person", A, date(2026, 11, 21))] == ["张三新"]
    assert [day(x[0]) for x in rows(empty_engine, "SELECT _valid_from FROM ods.person_history")] == ["2026-11-20"]


def test_changed_migration_is_refused(empty_engine):
    migrate(empty_engine)
    with empty_engine.begin() as c:
        c.execute(sa.text("UPDATE meta.schema_migrations SET checksum = 'x' WHERE version = '0003'"))
    assert {s["version"]: s["state"] for s in status(empty_engine)}["0003"] == "CHANGED"
    with pytest.raises(WarehouseError, match="changed after it was applied"):
        migrate(empty_engine)


def test_failing_migration_leaves_nothing_half_applied(empty_engine, tmp_path, monkeypatch):
    root = tmp_path / "sql"
    shutil.copytree(sqlfiles.SQL_ROOT / "migrations", root / "migrations")
    (root / "migrations" / "9999_broken.sql").write_text(
        "CREATE TABLE meta.half_done (x INTEGER);\nCREATE TABLE meta.half_done (x INTEGER);\n", encoding="utf-8")
    monkeypatch.setattr(migrate_module, "SQL_ROOT", root)
    monkeypatch.setattr(sqlfiles, "SQL_ROOT", root)
    with pytest.raises(sa.exc.DBAPIError):
        migrate(empty_engine)
    assert "meta.half_done" not in schema(empty_engine)
    assert {s["version"]: s["state"] for s in status(empty_engine)}["9999"] == "pending"
    assert {s["version"]: s["state"] for s in status(empty_engine)}["0003"] == "applied"
