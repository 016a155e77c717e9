"""Loads and builds on PostgreSQL ask for compressed WAL page images where the role may."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from warehouse import engine as engine_mod
from warehouse.engine import compress_wal, transaction

pytestmark = pytest.mark.integration


def test_a_role_allowed_to_set_it_gets_compressed_page_images_for_the_transaction_only(pg_url, monkeypatch):
    monkeypatch.setattr(engine_mod, "_WAL_COMPRESSION", {})
    engine = sa.create_engine(pg_url)  # the test server's role is a superuser
    try:
        with engine.connect() as c:
            server = c.exec_driver_sql("SHOW wal_compression").scalar()
        with transaction(engine) as c:
            compress_wal(c)
            inside = c.exec_driver_sql("SHOW wal_compression").scalar()
        with engine.connect() as c:
            after = c.exec_driver_sql("SHOW wal_compression").scalar()
        if server == "off":
            assert inside in ("lz4", "pglz", "on") and after == "off"
        else:  # the server compresses already: left as its operator set it
            assert inside == after == server
    finally:
        engine.dispose()


def test_a_role_without_the_privilege_changes_nothing(pg_url, monkeypatch):
    role = f"datarail_nopriv_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    url = sa.make_url(pg_url).set(username=role)
    engine = sa.create_engine(url)
    monkeypatch.setattr(engine_mod, "_WAL_COMPRESSION", {})
    try:
        with transaction(engine) as c:
            compress_wal(c)  # no error, no change
            assert c.exec_driver_sql("SHOW wal_compression").scalar() == "off"
        assert engine_mod._WAL_COMPRESSION[url.render_as_string(hide_password=True)] is None
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


def test_sqlite_is_left_alone(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as c:
        compress_wal(c)  # nothing to set, nothing raised
    engine.dispose()
