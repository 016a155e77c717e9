"""ods, history and share tables, built from the catalog with SQLAlchemy Core (their columns
are catalog fields, so they cannot be static DDL). Identifiers were checked by the catalog
models; SQLAlchemy quotes them.

Layout of one resource's data in the ods area (docs: ``warehouse/README.md``):

- ``ods.<table>``: the CURRENT version of every key (what base models and publishing read),
  with load metadata: run id, data interval, source row hash, loaded_at, and ``_valid_from``
  (start of the data interval whose delivery brought this version);
- ``ods.<table>_history``: every PREVIOUS version, closed by a later delivery (``updated``) or
  by a snapshot that no longer held the key (``deleted``), with ``_valid_from`` / ``_valid_to``.

The version valid on date D: ``_valid_from < D+1 <= _valid_to`` (history) or ``_valid_from < D+1``
(current), so "what did the source say on D" is one query (:mod:`warehouse.history`).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from catalog.models import Resource
from datarail.errors import WarehouseError

log = logging.getLogger(__name__)

TYPES = {"string": sa.Text, "integer": sa.BigInteger, "decimal": sa.Float, "date": sa.Date,
         "datetime": sa.DateTime, "boolean": sa.Boolean}

# Load metadata carried by every ods row.
ODS_META = ("_run_id", "_interval_key", "_row_hash", "_loaded_at", "_valid_from")
# ... and by every history row, in addition: when / by which load the version was closed.
HISTORY_META = ("_valid_to", "_closed_run_id", "_closed_interval_key", "_closed_at", "_change")
HISTORY_SUFFIX = "_history"
PG_MAX_IDENTIFIER = 63


def _field_columns(resource: Resource, *, keys: bool = True) -> list[sa.Column]:
    # Keys come from the source: never a generated value (SQLAlchemy would otherwise give an
    # integer primary key a sequence default on PostgreSQL, AUTOINCREMENT-like on SQLite).
    return [sa.Column(f.name, TYPES[f.type](), primary_key=keys and f.name in resource.primary_key,
                      nullable=f.name not in resource.primary_key, autoincrement=False)
            for f in resource.fields]


def _meta_columns() -> list[sa.Column]:
    return [sa.Column("_run_id", sa.String(250)), sa.Column("_interval_key", sa.String(40)),
            sa.Column("_row_hash", sa.String(64), nullable=False),
            sa.Column("_loaded_at", sa.DateTime(timezone=False), nullable=False),
            # nullable only because ALTER TABLE ADD COLUMN on SQLite cannot add a NOT NULL
            # column to a table that has rows; every load fills it.
            sa.Column("_valid_from", sa.DateTime(timezone=False))]


def ods_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``ods.<table>``: the source resource as delivered and validated, one row per key (the
    current version)."""
    md = metadata if metadata is not None else sa.MetaData()
    if f"ods.{resource.table}" in md.tables:
        return md.tables[f"ods.{resource.table}"]
    t = sa.Table(resource.table, md, *_field_columns(resource), *_meta_columns(), schema="ods")
    # Change capture for incremental base builds reads "rows loaded since" (warehouse/models.py).
    sa.Index(f"ix_{resource.table}__loaded_at"[:PG_MAX_IDENTIFIER], t.c._loaded_at)
    return t


def history_name(resource: Resource) -> str:
    name = resource.table + HISTORY_SUFFIX
    if len(name) > PG_MAX_IDENTIFIER:
        raise WarehouseError(f"table name {resource.table!r} is too long for its history table {name!r}",
                             resource=resource.code, hint=f"keep table names under "
                                                          f"{PG_MAX_IDENTIFIER - len(HISTORY_SUFFIX)} characters")
    return name


def history_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``ods.<table>_history``: previous versions, keyed by (primary key, _valid_from)."""
    md = metadata if metadata is not None else sa.MetaData()
    name = history_name(resource)
    if f"ods.{name}" in md.tables:
        return md.tables[f"ods.{name}"]
    cols = _field_columns(resource, keys=False) + _meta_columns()
    t = sa.Table(name, md, *cols,
                 sa.Column("_valid_to", sa.DateTime(timezone=False), nullable=False),
                 sa.Column("_closed_run_id", sa.String(250)), sa.Column("_closed_interval_key", sa.String(40)),
                 sa.Column("_closed_at", sa.DateTime(timezone=False), nullable=False),
                 sa.Column("_change", sa.String(16), nullable=False),
                 sa.PrimaryKeyConstraint(*resource.primary_key, "_valid_from", name=f"pk_{name}"[:PG_MAX_IDENTIFIER]),
                 schema="ods")
    sa.Index(f"ix_{name}__closed_at"[:PG_MAX_IDENTIFIER], t.c._closed_at)
    return t


def share_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``share.<table>``: the published dataset: only rows that passed, plus the flag a
    consumer needs (``_quality_status``: ok, or the open ticket state of the resource)."""
    return sa.Table(resource.table, metadata or sa.MetaData(), *_field_columns(resource),
                    sa.Column("_quality_status", sa.String(32), nullable=False),
                    sa.Column("_published_interval", sa.String(40), nullable=False),
                    schema="share")


def ensure(engine: sa.Engine, *tables: sa.Table) -> None:
    """Create the tables if missing (idempotent)."""
    with engine.begin() as conn:
        for t in tables:
            t.create(conn, checkfirst=True)


_READY: set[tuple[str, str, str]] = set()


def ensure_ods(engine: sa.Engine, resource: Resource, metadata: sa.MetaData | None = None) -> tuple[sa.Table, sa.Table]:
    """``ods.<table>`` and its history table, created if missing and brought up to the current
    layout if they were created by an earlier version (ods tables follow the catalog, so their
    evolution lives here rather than in a numbered migration): adds ``_valid_from`` (filled
    from the run that loaded each row), the history table and the change-capture index.
    Idempotent; cheap after the first call per process."""
    md = metadata if metadata is not None else sa.MetaData()
    ods, hist = ods_table(resource, md), history_table(resource, md)
    key = (engine.url.render_as_string(hide_password=True), resource.code,
           ",".join(f"{f.name}:{f.type}" for f in resource.fields))
    if key in _READY:
        return ods, hist
    from warehouse.engine import transaction

    with transaction(engine) as conn:
        insp = sa.inspect(conn)
        if insp.has_table(resource.table, schema="ods"):
            have = {c["name"] for c in insp.get_columns(resource.table, schema="ods")}
            if "_valid_from" not in have:
                _add_valid_from(conn, ods, resource)
            for ix in ods.indexes:
                if ix.name not in {i["name"] for i in insp.get_indexes(resource.table, schema="ods")}:
                    ix.create(conn)
        else:
            ods.create(conn)
        hist.create(conn, checkfirst=True)
    _READY.add(key)
    return ods, hist


def _add_valid_from(conn: sa.Connection, ods: sa.Table, resource: Resource) -> None:
    """Upgrade an ods table created before history existed: every current row's version is
    taken to start with the interval of the run that loaded it (its ``_loaded_at`` if that run
    record is gone)."""
    log.info("ods.%s: adding _valid_from (layout upgrade)", resource.table)
    col = ods.c._valid_from
    conn.execute(sa.text(f"ALTER TABLE {_qualified(conn, ods)} ADD COLUMN {col.name} "
                         f"{col.type.compile(conn.dialect)}"))
    runs = sa.table("runs", sa.column("resource"), sa.column("interval_key"), sa.column("interval_start"),
                    schema="meta")
    start = (sa.select(runs.c.interval_start)
             .where(runs.c.resource == resource.code, runs.c.interval_key == ods.c._interval_key)
             .scalar_subquery())
    conn.execute(ods.update().values(_valid_from=sa.func.coalesce(start, ods.c._loaded_at)))


def _qualified(conn: sa.Connection, table: sa.Table) -> str:
    prep = conn.dialect.identifier_preparer
    return f"{prep.quote_schema(table.schema)}.{prep.quote(table.name)}"


def qualified(conn_or_engine, table: sa.Table) -> str:
    """``schema.name`` of a table, quoted for the connection's dialect."""
    return _qualified(conn_or_engine, table)
