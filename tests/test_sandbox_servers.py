"""The sandbox's SQL systems written to real MariaDB and PostgreSQL servers (throwaway
databases from the conftest fixtures): same row counts as the manifest, duplicates
insertable, dates as text, update times as real timestamps."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from catalog.models import Catalog, Resource, Unit
from sandbox.build import build_sandbox

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo"


def source_catalog() -> Catalog:
    units = [Unit.model_validate(u) for u in yaml.safe_load((DEMO / "units.yaml").read_text("utf-8"))["units"]]
    resources = [Resource.model_validate(r) for p in sorted((DEMO / "resources").glob("*.yaml"))
                 for r in yaml.safe_load(p.read_text("utf-8"))["resources"]]
    return Catalog(units=tuple(units), resources=tuple(resources), responsibilities=(), items=())


def test_sql_systems_on_mariadb_and_postgres(tmp_path, mariadb_url, pg_url):
    catalog = source_catalog()
    urls = {"sandbox_psb_huji": mariadb_url, "sandbox_mca_marriage": mariadb_url,
            "sandbox_hrss_sis": pg_url, "sandbox_nhc_nis": pg_url, "sandbox_tax_etax": pg_url,
            "sandbox_drc_credit": mariadb_url}
    manifest = build_sandbox(catalog, tmp_path / "sb", scale=0.5, sql_urls=urls)
    conns = json.loads((tmp_path / "sb" / "connections.json").read_text("utf-8"))
    assert conns["sandbox_psb_huji"]["conn_type"] == "mysql"
    assert conns["sandbox_hrss_sis"]["conn_type"] == "postgres"
    assert conns["sandbox_hrss_sis"]["schema"] == sa.make_url(pg_url).database
    assert not (tmp_path / "sb" / "db" / "psb_huji.sqlite").exists()

    checked = 0
    for res in catalog.resources:
        system = catalog.unit(res.unit).system(res.system)
        if system.kind != "sql":
            continue
        engine = sa.create_engine(urls[system.conn_id])
        try:
            with engine.connect() as c:
                table = sa.Table(res.location.table, sa.MetaData(), autoload_with=c)
                rows = c.execute(sa.select(table)).mappings().all()
        finally:
            engine.dispose()
        entry = manifest["resources"][res.code]
        assert len(rows) == entry["rows"], res.code
        if res.status == "planned":
            continue
        # Duplicate keys made it in: the source does not enforce the primary key.
        keys = Counter(tuple(r[res.field(k).source_name] for k in res.primary_key) for r in rows)
        assert sum(n for n in keys.values() if n > 1) == entry["checks"].get("unique:" + "+".join(res.primary_key), 0)
        ts = res.field("updated_at").source_name
        assert all(isinstance(r[ts], datetime) for r in rows)
        assert max(r[ts] for r in rows).isoformat() == entry["latest_update"]
        date_col = next(f.source_name for f in res.fields if f.type == "date")
        assert all(r[date_col] is None or isinstance(r[date_col], str) for r in rows)
        checked += 1
    assert checked == 7  # household, identity card, marriage, insurance, employment, nurses, credit records


def test_rebuild_replaces_server_tables(tmp_path, pg_url):
    catalog = source_catalog()
    urls = {"sandbox_nhc_nis": pg_url}
    build_sandbox(catalog, tmp_path / "a", scale=0.3, sql_urls=urls)
    manifest = build_sandbox(catalog, tmp_path / "b", scale=0.3, sql_urls=urls)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as c:
            n = c.execute(sa.text("SELECT COUNT(*) FROM hs_zyzc")).scalar_one()
    finally:
        engine.dispose()
    assert n == manifest["resources"]["RK-WJ-0002"]["rows"]
