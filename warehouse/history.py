"""Reading the warehouse's past: as-of queries, version lists, lineage and table checksums.

- :func:`asof`: what ``ods.<table>`` or a base library said about one key on date D. For an
  ods table it is one query over ``ods.<table>`` + ``ods.<table>_history``; for a base
  library it is the library's own model evaluated over the sources as they were on D (the
  same SQL file, with every ``source()`` replaced by its as-of view), so base tables need no
  copy of their own history and their as-of answer is exactly reproducible.
- :func:`lineage`: which ods resources, loads and runs fed a base, share or ods table.
- :func:`checksums`: one digest per table, to compare two states (idempotency tests, backfills).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from catalog.models import Catalog, Resource
from datarail.errors import WarehouseError
from warehouse.models import SCOPE, Renderer, _source_codes, _typed, base_models, model_for
from warehouse.tables import TYPES, ensure_ods, history_table, ods_table


def asof_instant(day: date) -> datetime:
    """Versions valid "on D" are those valid at the end of D: a delivery for the interval of D
    counts, the next day's does not."""
    return datetime.combine(day + timedelta(days=1), time(0))


def split_target(target: str) -> tuple[str, str]:
    """``ods.x`` / ``base.y`` / ``share.z`` / bare ``x`` (an ods table) -> (area, name)."""
    area, _, name = target.partition(".")
    return ("ods", area) if not name else (area, name)


def _key_values(resource: Resource, key: str) -> dict:
    """A key given on the command line: one value, or ``a,b`` / a JSON list for composite keys."""
    pk = resource.primary_key
    if len(pk) == 1:
        values = [key]
    else:
        values = json.loads(key) if key.startswith("[") else key.split(",")
        if len(values) != len(pk):
            raise WarehouseError(f"{resource.table} is keyed by {', '.join(pk)}: give {len(pk)} values",
                                 resource=resource.code)
    from warehouse.load import _py  # the same coercion a load applies to key values
    return {k: _py(v, resource.field(k).type) for k, v in zip(pk, values, strict=True)}


def asof(engine: sa.Engine, catalog: Catalog, target: str, key: str, day: date) -> list[dict]:
    """Rows of ``target`` for ``key`` as they were on ``day`` (empty: none existed then).
    ods rows carry ``_valid_from`` / ``_valid_to`` (None: still current)."""
    area, name = split_target(target)
    at = asof_instant(day)
    if area in ("ods", "share"):
        # share.<table> is a copy of ods.<table> at publish time: its past is the ods past.
        resource = catalog.resource_by_table(name)
        ods, hist = ensure_ods(engine, resource)
        where = _key_values(resource, key)
        cur = sa.select(*ods.c, sa.cast(sa.null(), sa.DateTime()).label("_valid_to")).where(
            *[ods.c[k] == v for k, v in where.items()], ods.c._valid_from < at)
        old = sa.select(*[hist.c[c.name] for c in ods.c], hist.c._valid_to).where(
            *[hist.c[k] == v for k, v in where.items()], hist.c._valid_from < at, hist.c._valid_to >= at)
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(cur.union_all(old))]
    if area == "base":
        model = model_for(f"base.{name}")
        if not model.key:
            raise WarehouseError(f"base.{name} declares no key column: as-of needs one")
        return _asof_model(engine, catalog, model, key, day, at)
    raise WarehouseError(f"as-of works on ods, share and base tables, not {target!r}")


def _asof_model(engine: sa.Engine, catalog: Catalog, model, key: str, day: date, at: datetime) -> list[dict]:
    first = next((s for s in model.sources if s.keys and not s.is_base), None)
    key_type = TYPES[catalog.resource_by_table(first.table).field(first.keys[0]).type]() if first else sa.Text()
    for s in model.sources:
        if not s.is_base:
            ensure_ods(engine, catalog.resource_by_table(s.table))
    for m in base_models():  # base sources are rendered as of D too: their sources must exist
        if m.target in {s.table for s in model.sources}:
            for s in m.sources:
                if not s.is_base:
                    ensure_ods(engine, catalog.resource_by_table(s.table))
    scope = sa.Table(SCOPE, sa.MetaData(), sa.Column("key", key_type), prefixes=["TEMPORARY"])
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            scope.drop(conn, checkfirst=True)
            scope.create(conn)
            conn.execute(scope.insert(), [{"key": key}])
            sql = Renderer(catalog, conn.dialect, scoped=True, asof=True).render(model)
            text = (f"SELECT * FROM ({sql}) asof_rows "
                    f"WHERE {conn.dialect.identifier_preparer.quote(model.key)} = :asof_key")
            params = {k: v for k, v in {"asof_at": at, "run_date": day, "asof_key": key}.items() if f":{k}" in text}
            return [dict(r._mapping) for r in conn.execute(_typed(text), params)]
        finally:
            trans.rollback()  # read only: the temp scope table goes with it


def versions(engine: sa.Engine, catalog: Catalog, target: str, key: str) -> list[dict]:
    """Every version of one ods key, oldest first, with ``_valid_from`` / ``_valid_to`` and how
    it ended (``_change``: updated, deleted, late; None for the current one)."""
    area, name = split_target(target)
    if area not in ("ods", "share"):
        raise WarehouseError("version lists exist for ods tables; for base tables ask asof for each date")
    resource = catalog.resource_by_table(name)
    ods, hist = ensure_ods(engine, resource)
    where = _key_values(resource, key)
    cur = sa.select(*ods.c, sa.cast(sa.null(), sa.DateTime()).label("_valid_to"),
                    sa.cast(sa.null(), sa.String()).label("_change")).where(
        *[ods.c[k] == v for k, v in where.items()])
    old = sa.select(*[hist.c[c.name] for c in ods.c], hist.c._valid_to, hist.c._change).where(
        *[hist.c[k] == v for k, v in where.items()])
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(cur.union_all(old))]
    return sorted(rows, key=lambda r: str(r["_valid_from"]))


def lineage(engine: sa.Engine, catalog: Catalog, target: str) -> dict:
    """Which resources, loads and runs fed ``target`` (a base, share or ods table, or a conflict
    library ``quality.conflicts.<library>``), and its latest builds."""
    area, name = split_target(target)
    target = f"{area}.{name}"
    bind_at = sa.bindparam("at", type_=sa.DateTime())
    with engine.connect() as conn:
        sources = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT resource, interval_key, built_at FROM meta.lineage WHERE target = :t ORDER BY resource")
            .columns(sa.column("resource"), sa.column("interval_key"), sa.column("built_at", sa.DateTime())),
            {"t": target})]
        loads_cols = ("l.load_id, l.resource, l.interval_key, l.run_id, l.loaded_at, l.rows_in, l.inserted, "
                      "l.updated, l.deleted, l.late")
        if area == "ods":
            resource = catalog.resource_by_table(name)
            sources = [{"resource": resource.code, "interval_key": None, "built_at": None}]
            loads = conn.execute(sa.text(f"SELECT {loads_cols} FROM meta.loads l WHERE l.resource = :r "
                                         "ORDER BY l.loaded_at"), {"r": resource.code})
        elif area == "share":
            # Publishing copies the ods table whole: it holds every load committed before it.
            built = sources[0]["built_at"] if sources else None
            if built is None:
                loads = []
            else:
                loads = conn.execute(sa.text(
                    f"SELECT {loads_cols} FROM meta.loads l WHERE l.resource = :r AND l.loaded_at <= :at "
                    "ORDER BY l.loaded_at").bindparams(bind_at),
                    {"r": sources[0]["resource"], "at": built})
        else:
            loads = conn.execute(sa.text(
                f"SELECT {loads_cols} FROM meta.lineage_loads ll JOIN meta.loads l ON l.load_id = ll.load_id "
                "WHERE ll.target = :t ORDER BY l.loaded_at"), {"t": target})
        loads = [dict(r._mapping) for r in loads]
        pending = _pending_loads(conn, catalog, target, loads_cols) if area not in ("ods", "share") else []
        builds = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT mode, interval_key, scope_keys, row_count, finished_at, duration_s FROM meta.builds "
            "WHERE target = :t ORDER BY finished_at DESC LIMIT 5"), {"t": target})]
    if not sources and not builds and area != "ods":
        raise WarehouseError(f"no lineage recorded for {target}", hint="build the base libraries / publish first")
    units = {r.code: r.unit for r in catalog.resources}
    for s in sources:
        s["unit"] = units.get(s["resource"])
        s["runs"] = sorted({(ld["interval_key"], ld["run_id"]) for ld in loads if ld["resource"] == s["resource"]})
    return {"target": target, "sources": sources, "loads": loads, "pending": pending, "builds": builds}


def _pending_loads(conn: sa.Connection, catalog: Catalog, target: str, cols: str) -> list[dict]:
    """The loads of a base model's ods sources that its last build did not consume: what its
    next build reads (incrementally: their subjects; in full: everything)."""
    try:
        model = model_for(target)
    except WarehouseError:
        return []
    codes = _source_codes(model, catalog)
    if not codes:
        return []
    stmt = sa.text(
        f"SELECT {cols} FROM meta.loads l WHERE l.resource IN :codes AND NOT EXISTS ("
        "SELECT 1 FROM meta.lineage_loads ll WHERE ll.target = :t AND ll.load_id = l.load_id) "
        "ORDER BY l.loaded_at").bindparams(sa.bindparam("codes", expanding=True))
    return [dict(r._mapping) for r in conn.execute(stmt, {"codes": codes, "t": model.ident})]


# Columns that legitimately differ between two runs of the same interval: wall-clock times
# and append-only audit logs. Everything else must match for a rerun to count as idempotent.
VOLATILE = {"meta.runs": ("finished_at", "run_id", "duration_s"), "meta.lineage": ("built_at",)}
APPEND_ONLY = ("meta.loads", "meta.builds", "meta.lineage_loads", "meta.schema_migrations")


def table_checksum(conn: sa.Connection, schema: str, name: str, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the table's rows (order-independent), leaving out ``exclude`` columns."""
    cols = [c["name"] for c in sa.inspect(conn).get_columns(name, schema=schema) if c["name"] not in exclude]
    q = conn.dialect.identifier_preparer.quote
    # Raw driver values: a reflected SQLite type (e.g. NUM of a CREATE TABLE AS) must not
    # reinterpret what is stored.
    result = conn.exec_driver_sql(f"SELECT {', '.join(q(c) for c in cols)} FROM {schema}.{q(name)}")
    lines = sorted(json.dumps([_norm(v) for v in row], ensure_ascii=False) for row in result)
    digest = hashlib.sha256()
    digest.update(json.dumps(cols).encode())
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()


def _norm(value):
    # One rendering per value whatever the driver returns (SQLite: text; PostgreSQL: objects).
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(round(value, 9))
    if type(value).__name__ == "Decimal":
        return repr(round(float(value), 9))
    return value if value is None or isinstance(value, (int, str)) else str(value)


def checksums(engine: sa.Engine, areas: tuple[str, ...] = ("ods", "base", "share", "quality", "meta")) -> dict:
    """{``area.table``: checksum} for every table of the areas, audit logs left out."""
    out = {}
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        for area in areas:
            for name in sorted(insp.get_table_names(schema=area)):
                full = f"{area}.{name}"
                if full in APPEND_ONLY or name.startswith("_next_"):
                    continue
                out[full] = table_checksum(conn, area, name, VOLATILE.get(full, ()))
    return out


__all__ = ["asof", "asof_instant", "checksums", "history_table", "lineage", "ods_table", "split_target",
           "table_checksum", "versions"]
