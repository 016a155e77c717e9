"""ods, history and share tables, built from the catalog with SQLAlchemy Core (their columns
are catalog fields, so they cannot be static DDL). Identifiers were checked by the catalog
models; SQLAlchemy quotes them.

Layout of one resource's data in the ods area (docs: ``warehouse/README.md``):

- ``ods.<table>``: the CURRENT version of every key (what base models and publishing read),
  with load metadata: run id, data interval, source row hash, loaded_at, and ``_valid_from``
  (start of the data interval whose delivery brought this version);
- ``ods.<table>_history``: every PREVIOUS version, closed by a later delivery (``updated``) or
  by a snapshot that no longer held the key (``deleted``), with ``_valid_from`` / ``_valid_to``;
- ``ods.<table>_changes``: the change journal, one row (key, ``_loaded_at``) for every current
  version a merge wrote WITHOUT closing one in history (new keys, reruns of an interval),
  indexed on ``_loaded_at``. With history's ``_closed_at`` (updated, deleted) it is how
  incremental base builds find the keys loaded since (a first load into an empty table
  journals nothing: see :func:`warehouse.models._fill_scope`).

The current table is NOT indexed on ``_loaded_at`` (a column every new version changes), and on
PostgreSQL its pages are filled to ``ODS_FILLFACTOR``: a daily update then stays on its page and
touches no index (a HOT update), which is most of the 1% merge's cost otherwise (bench/README.md).

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
CHANGES_SUFFIX = "_changes"
# PostgreSQL: free space left on every page of a current table for the next versions of its
# rows. With full pages an update must put the new version on another page and add an entry to
# every index for it; with room on the page it is a HOT update (same page, no index entry).
# 5M rows, 1% updated, just after a checkpoint: 74,668 -> 50,036 full-page images, 275 -> 178 MB
# of WAL; the load up to 1.5 s faster, never slower (A/B runs: bench/README.md). The price: the
# table is ~11% larger.
ODS_FILLFACTOR = 90
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
    # No index on _loaded_at (change capture reads the journal, changes_table): an indexed
    # column that every version changes would make every update non-HOT.
    return sa.Table(resource.table, md, *_field_columns(resource), *_meta_columns(), schema="ods",
                    postgresql_with={"fillfactor": ODS_FILLFACTOR})


def _legacy_loaded_at_index(resource: Resource) -> str:
    """The change-capture index ods tables had before the journal (dropped by ensure_ods)."""
    return f"ix_{resource.table}__loaded_at"[:PG_MAX_IDENTIFIER]


def changes_name(resource: Resource) -> str:
    return _suffixed(resource, CHANGES_SUFFIX)


def _suffixed(resource: Resource, suffix: str) -> str:
    name = resource.table + suffix
    if len(name) > PG_MAX_IDENTIFIER:
        raise WarehouseError(f"table name {resource.table!r} is too long for its table {name!r}",
                             resource=resource.code, hint=f"keep table names under "
                                                          f"{PG_MAX_IDENTIFIER - len(suffix) + 1} characters")
    return name


def history_name(resource: Resource) -> str:
    return _suffixed(resource, HISTORY_SUFFIX)


def changes_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``ods.<table>_changes``: the change journal, (primary key, ``_loaded_at``) of every
    current version a merge wrote without closing a version in history (new keys, reruns); a
    key appears once per such load. Merges append; base builds delete what every reader has
    consumed (``warehouse.models._prune_journals``)."""
    md = metadata if metadata is not None else sa.MetaData()
    name = changes_name(resource)
    if f"ods.{name}" in md.tables:
        return md.tables[f"ods.{name}"]
    keys = [sa.Column(f.name, TYPES[f.type](), nullable=False)
            for f in resource.fields if f.name in resource.primary_key]
    t = sa.Table(name, md, *sorted(keys, key=lambda c: resource.primary_key.index(c.name)),
                 sa.Column("_loaded_at", sa.DateTime(timezone=False), nullable=False), schema="ods")
    sa.Index(f"ix_{name}__loaded_at"[:PG_MAX_IDENTIFIER], t.c._loaded_at)
    return t


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
    """``ods.<table>``, its history table and its change journal, created if missing and
    brought up to the current layout if they were created by an earlier version (ods tables
    follow the catalog, so their evolution lives here rather than in a numbered migration):
    adds ``_valid_from`` (filled from the run that loaded each row), the history table, the
    journal (see :func:`_upgrade_to_journal`). Idempotent; cheap after the first call per process."""
    md = metadata if metadata is not None else sa.MetaData()
    ods, hist, changes = ods_table(resource, md), history_table(resource, md), changes_table(resource, md)
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
            _upgrade_to_journal(conn, resource, ods, changes, insp)
        else:
            ods.create(conn)
            changes.create(conn)
        hist.create(conn, checkfirst=True)
    _READY.add(key)
    return ods, hist


def _upgrade_to_journal(conn: sa.Connection, resource: Resource, ods: sa.Table, changes: sa.Table,
                        insp) -> None:
    """Upgrade an ods table created before the change journal (or by ``sharing.publish``,
    which creates it bare): the journal is created holding every current row's key and
    ``_loaded_at``, which is exactly what change capture read from the ``_loaded_at`` index
    before, so loads not yet consumed by a build stay visible to it; then that index is dropped
    and, on PostgreSQL, the table gets its fill factor (pages written from now on keep room for
    HOT updates; ``VACUUM FULL ods.<table>`` at a quiet time rewrites the existing ones)."""
    q = conn.dialect.identifier_preparer.quote
    target = _qualified(conn, ods)
    if not insp.has_table(changes.name, schema="ods"):
        changes.create(conn)
        cols = ", ".join(q(c.name) for c in changes.columns)
        n = conn.execute(sa.text(f"INSERT INTO {_qualified(conn, changes)} ({cols}) SELECT {cols} FROM {target}")).rowcount
        log.info("ods.%s: change journal created with its %d current rows (layout upgrade)", resource.table, n)
    legacy = _legacy_loaded_at_index(resource)
    if legacy in {i["name"] for i in insp.get_indexes(resource.table, schema="ods")}:
        conn.execute(sa.text(f"DROP INDEX {conn.dialect.identifier_preparer.quote_schema('ods')}.{q(legacy)}"))
        log.info("ods.%s: dropped the _loaded_at index (change capture reads the journal)", resource.table)
    if conn.dialect.name == "postgresql":
        # DIALECT: storage parameters exist on PostgreSQL only.
        options = conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                               {"t": target}).scalar() or []
        if f"fillfactor={ODS_FILLFACTOR}" not in options:
            conn.execute(sa.text(f"ALTER TABLE {target} SET (fillfactor = {ODS_FILLFACTOR})"))


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
