"""Shared fixtures. Every test file must carry a marker (unit, integration, dags, e2e);
an unmarked test is refused. Server fixtures skip with a loud notice when the server is
unreachable, except under CI=true, where they fail."""

from __future__ import annotations

import os
import socket
import sys
import uuid
import warnings

import pytest

KINDS = {"unit", "integration", "dags", "e2e"}
PG_ADMIN_URL = os.environ.get("DATARAIL_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("DATARAIL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")


def pytest_collection_modifyitems(config, items):
    unmarked = [i.nodeid for i in items if not KINDS & {m.name for m in i.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"tests without a kind marker {sorted(KINDS)}: {unmarked[:5]}")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip loudly when a server is down; under CI=true fail instead."""
    if _reachable(host, port):
        return
    msg = (f"{name} is not reachable on {host}:{port}; start it with ../shared/services.sh "
           f"(integration tests need the real server)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    banner = f"\n{'!' * 78}\nSKIPPING: {msg}\n{'!' * 78}\n"
    sys.stderr.write(banner)
    warnings.warn(banner, stacklevel=2)
    pytest.skip(msg)


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    name = f"datarail_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def mariadb_url():
    """A throwaway MariaDB database, dropped afterwards; yields its SQLAlchemy URL."""
    require_server("MariaDB", "127.0.0.1", 3306)
    import sqlalchemy as sa

    name = f"datarail_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(MARIADB_ADMIN_URL)
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"{MARIADB_ADMIN_URL.rstrip('/')}/{name}?charset=utf8mb4"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_engine(request, tmp_path):
    """A fresh, migrated warehouse on each engine: embedded SQLite, and PostgreSQL in a
    throwaway database. Tests using it run on both."""
    from datarail.settings import load_settings
    from warehouse.engine import get_engine
    from warehouse.migrate import migrate

    env = {"DATARAIL_HOME": str(tmp_path / "home")}
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        env["DATARAIL_WAREHOUSE_URL"] = url
    engine = get_engine(load_settings(env))
    migrate(engine)
    yield engine
    engine.dispose()
