"""Run the SQL models of ``warehouse_sql/base/`` in order (file name order: ``10_...``,
``20_...``), each in one transaction, and record lineage.

Each model file starts with a header the runner reads::

    -- target: base.population
    -- sources: household_register, marriage_registration, ...

``sources`` are ods table names; the runner creates any missing (empty) ods table first so a
model runs even before every unit has delivered, and records which resource and which
interval fed the target in ``meta.lineage``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import sqlalchemy as sa

from catalog.models import Catalog
from datarail.errors import WarehouseError
from datarail.interval import Interval
from warehouse.sqlfiles import SQL_ROOT, run_file
from warehouse.tables import ensure, ods_table

log = logging.getLogger(__name__)
_HEADER = re.compile(r"^--\s*(target|sources):\s*(.+)$", re.M)


def base_models() -> list[dict]:
    """The base models in run order, with their declared target and sources."""
    out = []
    for path in sorted((SQL_ROOT / "base").glob("*.sql")):
        header = dict((k, v.strip()) for k, v in _HEADER.findall(path.read_text(encoding="utf-8")))
        if "target" not in header:
            raise WarehouseError(f"{path.name}: missing '-- target:' header")
        out.append({"name": f"base/{path.name}", "target": header["target"],
                    "sources": [s.strip() for s in header.get("sources", "").split(",") if s.strip()]})
    return out


def build_base_libraries(engine: sa.Engine, catalog: Catalog, interval: Interval) -> dict:
    """Rebuild every base library; return {target: row count}."""
    models = base_models()
    md = sa.MetaData()
    needed = {s for m in models for s in m["sources"]}
    ensure(engine, *[ods_table(catalog.resource_by_table(t), md) for t in sorted(needed)])
    now = datetime.now(UTC).replace(tzinfo=None)
    counts = {}
    for m in models:
        with engine.begin() as conn:
            run_file(conn, m["name"])
            counts[m["target"]] = conn.execute(sa.text(f"SELECT COUNT(*) FROM {m['target']}")).scalar_one()
            conn.execute(sa.text("DELETE FROM meta.lineage WHERE target = :t"), {"t": m["target"]})
            for table in m["sources"]:
                res = catalog.resource_by_table(table)
                key = conn.execute(sa.text(
                    "SELECT MAX(interval_key) FROM meta.runs WHERE resource = :r AND status = 'loaded'"),
                    {"r": res.code}).scalar()
                conn.execute(sa.text("INSERT INTO meta.lineage (target, resource, interval_key, built_at) "
                                     "VALUES (:t, :r, :k, :b)"),
                             {"t": m["target"], "r": res.code, "k": key or "", "b": now})
        log.info("built %s: %d rows", m["target"], counts[m["target"]])
    return {"interval": interval.key, "tables": counts}
