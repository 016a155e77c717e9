"""One function picks the warehouse: the embedded default (SQLite files under
``$DATARAIL_HOME/warehouse``) or the server named by ``DATARAIL_WAREHOUSE_URL``.

The five areas are real schemas on both engines, so the same SQL (``ods.household_register``,
``quality.tickets``) runs on both: PostgreSQL schemas, and on SQLite one attached database
file per area.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

from datarail.settings import Settings, load_settings

log = logging.getLogger(__name__)

AREAS = ("ods", "base", "share", "quality", "meta")


def warehouse_url(settings: Settings) -> str:
    if settings.warehouse_url:
        url = settings.warehouse_url
        # A bare postgresql:// URL means the psycopg2 driver installed with the project.
        return "postgresql+psycopg2://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url
    return f"sqlite:///{settings.warehouse_dir / 'main.sqlite'}"


def _attach_areas(folder: Path):
    def on_connect(dbapi_conn, _record):
        # DIALECT: SQLite has no schemas; each area is an attached database file.
        # The default rollback journal keeps a commit atomic across attached files.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        for area in AREAS:
            cur.execute("ATTACH DATABASE ? AS " + area, (str(folder / f"{area}.sqlite"),))
        cur.close()
    return on_connect


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        folder = Path(url.split("sqlite:///", 1)[1]).parent
        folder.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        sa.event.listen(engine, "connect", _attach_areas(folder))
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
        with engine.begin() as conn:
            for area in AREAS:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {area}")
    log.info("warehouse: %s", engine.url.render_as_string(hide_password=True))
    return engine


def get_engine(settings: Settings | None = None) -> sa.Engine:
    """The warehouse engine for these settings (cached per URL)."""
    return _engine_for(warehouse_url(settings or load_settings()))


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """``engine.begin()`` that is one transaction on SQLite too, DDL included.

    DIALECT: Python's sqlite3 driver opens a transaction only before INSERT/UPDATE/DELETE, so
    a CREATE / DROP / ALTER issued first would run (and stay) outside it: a failed rebuild
    could leave a dropped table behind. An explicit BEGIN makes every statement part of the
    transaction; PostgreSQL needs nothing (its DDL is transactional). ``BEGIN IMMEDIATE``
    takes SQLite's write lock up front: a second writer (another load, a build) then waits
    for it (``busy_timeout``) instead of failing with "database is locked", which SQLite
    answers at once to a transaction that read first and then wants to write while another
    one writes."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def price_reads_in_memory(conn: sa.Connection) -> None:
    """DIALECT (PostgreSQL): for the rest of this transaction, a random page read is priced
    as the in-memory read it is in this warehouse (``random_page_cost`` 1.1, where the default
    4 assumes spinning disks), so the planner probes indexes for a few keys instead of
    scanning millions of rows (a 1% merge into 5M rows: 7 s -> 2 s). SQLite: nothing to do."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")


# Per warehouse URL: the value loads and builds set wal_compression to (None: leave it).
_WAL_COMPRESSION: dict[str, str | None] = {}


def compress_wal(conn: sa.Connection) -> None:
    """DIALECT (PostgreSQL): compressed full-page images for the rest of this transaction.

    After a checkpoint, the first change to a page writes the whole page to the WAL: a merge
    or an incremental build touching rows scattered over a large table writes one 8 kB image
    per page (10,000 rows updated across a 1M-row ods table: 146 MB of WAL; 50,000 across 5M:
    656 MB). ``SET LOCAL wal_compression`` (lz4 where the server has it, else pglz) cut the
    first to 52 MB here. Done only where the server does not compress already and the role
    may set it (a superuser, or on PostgreSQL 15+ ``GRANT SET ON PARAMETER wal_compression TO
    <role>``); otherwise nothing changes. SQLite: nothing to do."""
    if conn.dialect.name != "postgresql":
        return
    key = conn.engine.url.render_as_string(hide_password=True)
    if key not in _WAL_COMPRESSION:
        _WAL_COMPRESSION[key] = _wal_compression_value(conn)
    value = _WAL_COMPRESSION[key]
    if value is not None:
        conn.exec_driver_sql(f"SET LOCAL wal_compression = {value}")


def _wal_compression_value(conn: sa.Connection) -> str | None:
    setting, options = conn.execute(sa.text(
        "SELECT setting, enumvals FROM pg_settings WHERE name = 'wal_compression'")).one()
    if setting != "off":
        return None  # the server compresses already (or its operator chose otherwise)
    if (conn.dialect.server_version_info or (0,)) >= (15,):
        allowed = conn.execute(sa.text("SELECT has_parameter_privilege('wal_compression', 'SET')")).scalar()
    else:
        allowed = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    if not allowed:
        log.info("wal_compression is off and this role may not set it: loads write uncompressed page images "
                 "(GRANT SET ON PARAMETER wal_compression to the warehouse role, or turn it on server-wide)")
        return None
    return "lz4" if options and "lz4" in options else "on"
