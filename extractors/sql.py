"""Extract a catalog resource from a SQL source (SQLite, MariaDB/MySQL, PostgreSQL; Oracle by
SQLAlchemy dialect, untested here).

Two read paths, one contract (they stage identical text; ``tests/test_extract_servers.py``
compares them):

- **fast path** (MariaDB/MySQL and PostgreSQL, when ``connectorx`` is installed): the query
  runs through connectorx (Rust client, Arrow result) as keyset pages of ``chunk_rows`` rows
  on the primary key, the next page fetched while the current one is staged
  (:func:`_read_connectorx`); each batch is rendered to staged text with vectorised Arrow
  kernels (:func:`~extractors.staging.arrow_text`) and written as one Parquet row group. No
  per-row Python work; memory is bounded by the page size. An
  incremental run whose window counts at most ``chunk_rows`` rows reads it in one query.
- **portable path** (every SQLAlchemy dialect; SQLite always): a server-side cursor
  (``stream_results`` + ``yield_per``: ``SSCursor`` on MariaDB, a named cursor on
  PostgreSQL) and per-value rendering.

Choose with the connection extra ``sql_engine``: ``auto`` (default: fast path when possible),
``connectorx`` or ``sqlalchemy``.

Both paths reflect the table once with SQLAlchemy (to check the catalog's columns, detect
schema drift and learn the watermark column's type), build the query as Core objects
(identifiers quoted by the dialect, bounds bound or rendered as literals by the same
dialect), and read in primary-key order. ``key_range`` restricts the read to
``lo <= key < hi`` on an integer key (parallel extraction of large tables: :func:`plan_key_ranges`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from catalog.models import Resource
from datarail.errors import ExtractError, SchemaDriftError
from datarail.interval import Interval
from datarail.privacy import mask_value, scrub_text
from extractors.base import ConnInfo, ExtractResult
from extractors.drift import (
    Drift,
    Rejects,
    check_columns,
    drift_error,
    log_drift,
    new_column_name,
    nonconforming,
    policy_of,
    retyped_columns,
    split_new,
    type_family,
)
from extractors.staging import StagingWriter, WatermarkWindow, arrow_text, resolve_columns, source_timezone

log = logging.getLogger(__name__)

_DRIVERS = {
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
}
_CX_SCHEMES = {"mysql": "mysql", "mariadb": "mysql", "postgres": "postgresql", "postgresql": "postgresql"}
# Source type families the fast path reads natively; anything else is cast to text in SQL
# (decimals keep their written scale that way: connectorx would widen them to scale 10).
_CX_NATIVE = {"text", "integer", "float", "date", "datetime", "boolean"}


@dataclass(frozen=True)
class KeyRange:
    """``lo <= column < hi`` on an integer key (``None``: unbounded on that side)."""

    column: str
    lo: int | None = None
    hi: int | None = None
    index: int = 0
    count: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> KeyRange | None:
        return None if not d else cls(column=d["column"], lo=d.get("lo"), hi=d.get("hi"),
                                      index=int(d.get("index", 0)), count=int(d.get("count", 1)))

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "lo": self.lo, "hi": self.hi, "index": self.index, "count": self.count}


def engine_url(conn: ConnInfo) -> sa.URL:
    """The SQLAlchemy URL of a connection: ``sqlite`` (host = database file), ``mysql`` /
    ``mariadb`` (PyMySQL, utf8mb4), ``postgres`` / ``postgresql`` (psycopg2)."""
    kind = conn.conn_type.lower()
    if kind == "sqlite":
        if not conn.host:
            raise ExtractError("sqlite connection needs host = path of the database file")
        return sa.URL.create("sqlite", database=conn.host)
    if kind not in _DRIVERS:
        raise ExtractError(f"connection type {conn.conn_type!r} is not a SQL source",
                           hint="Use sqlite, mysql, mariadb, postgres or postgresql")
    query = {"charset": "utf8mb4"} if _DRIVERS[kind].startswith("mysql") else {}
    return sa.URL.create(_DRIVERS[kind], username=conn.login, password=conn.password, host=conn.host,
                         port=conn.port, database=conn.schema, query=query)


def connectorx_url(conn: ConnInfo) -> str | None:
    """The connectorx URL of a MariaDB/MySQL or PostgreSQL connection, else ``None``."""
    scheme = _CX_SCHEMES.get(conn.conn_type.lower())
    if scheme is None or not conn.host:
        return None
    auth = quote(conn.login or "", safe="")
    if conn.password:
        auth += ":" + quote(conn.password, safe="")
    port = f":{conn.port}" if conn.port else ""
    url = f"{scheme}://{auth}{'@' if auth else ''}{conn.host}{port}/{quote(conn.schema or '', safe='')}"
    # Driver options, e.g. {"prefer_socket": "false"}: connectorx's MySQL client otherwise
    # switches a connection to 127.0.0.1 over to the server's unix socket.
    params = (conn.extra or {}).get("connectorx_params") or {}
    return url + ("?" + urlencode({k: str(v) for k, v in params.items()}) if params else "")


def read_engine(conn: ConnInfo) -> str:
    """``connectorx`` or ``sqlalchemy``: the read path for this connection (extra ``sql_engine``)."""
    wanted = str((conn.extra or {}).get("sql_engine", "auto")).lower()
    if wanted not in ("auto", "connectorx", "sqlalchemy"):
        raise ExtractError(f"connection extra sql_engine={wanted!r}: use auto, connectorx or sqlalchemy")
    if wanted == "sqlalchemy" or connectorx_url(conn) is None:
        if wanted == "connectorx":
            raise ExtractError(f"sql_engine connectorx does not read {conn.conn_type} sources")
        return "sqlalchemy"
    try:
        import connectorx  # noqa: F401
    except ImportError:
        if wanted == "connectorx":
            raise ExtractError("sql_engine connectorx requested but connectorx is not installed",
                               hint="pip install connectorx") from None
        return "sqlalchemy"
    return "connectorx"


def split_table(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name has no schema."""
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def bound_for(moment: datetime, column_type: sa.types.TypeEngine, dialect: str, tz: tzinfo) -> Any:
    """A watermark bound as the value the column compares correctly with.

    ``moment`` is naive in the source time zone. Aware columns (timestamptz) get an aware
    value; DATE columns a date; SQLite and text columns ISO text (SQLite compares text).
    """
    is_date = isinstance(column_type, sa.Date) and not isinstance(column_type, sa.DateTime)
    if dialect == "sqlite" or isinstance(column_type, sa.String):
        return moment.date().isoformat() if is_date else moment.isoformat(sep=" ")
    if isinstance(column_type, sa.DateTime):
        return moment.replace(tzinfo=tz) if getattr(column_type, "timezone", False) else moment
    if is_date:
        return moment.date()
    if isinstance(column_type, sa.Numeric):
        raise ExtractError(f"watermark column type {column_type} is numeric; only date, datetime or "
                           "ISO text columns can carry an interval-keyed watermark")
    return moment


def build_select(table: str, schema: str | None, columns: list[str], *, order_by: list[str],
                 watermark: str | None = None, lower: Any = None, upper: Any = None,
                 key_range: KeyRange | None = None, key_column: str | None = None,
                 as_text: set[str] | frozenset[str] = frozenset()) -> sa.Select:
    """The extraction query as a Core object.

    ``SELECT columns FROM [schema.]table [WHERE watermark < :upper [AND watermark > :lower]]
    [AND key >= :lo AND key < :hi] ORDER BY order_by``; identifiers are quoted by the dialect
    and bounds are bound parameters. Columns in ``as_text`` are selected as ``CAST(.. AS text)``.
    """
    names = list(dict.fromkeys([*columns, *order_by, *([watermark] if watermark else []),
                                *([key_column] if key_column else [])]))
    t = sa.table(table, *[sa.column(n) for n in names], schema=schema)
    stmt = sa.select(*[(sa.cast(t.c[n], sa.String()).label(n) if n in as_text else t.c[n]) for n in columns])
    stmt = stmt.where(*_read_conditions(t, watermark, lower, upper, key_range, key_column))
    return stmt.order_by(*[t.c[n] for n in order_by])


def build_count(table: str, schema: str | None, *, watermark: str | None = None, lower: Any = None,
                upper: Any = None, key_range: KeyRange | None = None,
                key_column: str | None = None) -> sa.Select:
    """``SELECT count(*)`` of the rows :func:`build_select` reads with the same arguments (same
    conditions, same bound parameter names). On an indexed watermark column it is a range
    count on that index; on an unindexed one, a scan of the table."""
    names = list(dict.fromkeys([*([watermark] if watermark else []), *([key_column] if key_column else [])]))
    t = sa.table(table, *[sa.column(n) for n in names], schema=schema)
    return (sa.select(sa.func.count()).select_from(t)
            .where(*_read_conditions(t, watermark, lower, upper, key_range, key_column)))


def _read_conditions(t: sa.TableClause, watermark: str | None, lower: Any, upper: Any,
                     key_range: KeyRange | None, key_column: str | None) -> list[sa.ColumnElement]:
    """The watermark window and key range as bound conditions (shared by the read and its count)."""
    conds: list[sa.ColumnElement] = []
    if watermark is not None:
        if upper is not None:
            conds.append(t.c[watermark] < sa.bindparam("wm_upper", upper))
        if lower is not None:
            conds.append(t.c[watermark] > sa.bindparam("wm_lower", lower))
    if key_range is not None and key_column is not None:
        if key_range.lo is not None:
            conds.append(t.c[key_column] >= sa.bindparam("key_lo", int(key_range.lo)))
        if key_range.hi is not None:
            conds.append(t.c[key_column] < sa.bindparam("key_hi", int(key_range.hi)))
    return conds


def _wrap(exc: BaseException, resource: Resource, where: str, conn: ConnInfo) -> ExtractError:
    # The driver's first message line names the problem (auth, unknown column, lost
    # connection); credentials are cut out, and any ID or phone number quoted is masked.
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).splitlines() or [""])[0][:300]
    if conn.password:
        first_line = first_line.replace(conn.password, "***").replace(quote(conn.password, safe=""), "***")
    return ExtractError(f"{where}: the source database failed: {type(cause).__name__}: {scrub_text(first_line)}",
                        unit=resource.unit, resource=resource.code,
                        hint="Check the connection and that the database is reachable; rerun the interval "
                             "(nothing was staged, the watermark did not move)")


def _reflect(c: sa.Connection, resource: Resource, table_name: str, schema: str | None, where: str) -> sa.Table:
    try:
        return sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=c)
    except sa.exc.NoSuchTableError as exc:
        raise ExtractError(f"{where} does not exist in the source database", unit=resource.unit,
                           resource=resource.code,
                           hint="Check location.table in the catalog and the connection's database") from exc


def _first_offender(c: sa.Connection, t: sa.Table, column: str, keys: list[str], resource: Resource) -> str | None:
    """The primary key (masked when personal) of the first row with a value in ``column``."""
    stmt = (sa.select(*[t.c[k] for k in keys]).where(t.c[column].is_not(None))
            .order_by(*[t.c[k] for k in keys]).limit(1))
    row = c.execute(stmt).first()
    if row is None:
        return None
    sem = {f.source_name: f.semantic for f in resource.fields}
    shown = [str(mask_value(sem.get(k), v) if sem.get(k) else v) for k, v in zip(keys, row, strict=True)]
    return "key " + ", ".join(shown)


def plan_key_ranges(resource: Resource, conn: ConnInfo) -> list[KeyRange]:
    """Split the resource's table into key ranges on ``resource.partition.column``.

    ``MIN``/``MAX`` of the key (an index lookup) cut into at most ``partition.ranges`` equal
    spans; a span below ``partition.min_span`` (or no partition setting) gives one range.
    The ranges cover every key: the first is open below, the last open above.
    """
    part = resource.partition
    if part is None:
        return [KeyRange(column="", index=0, count=1)]
    schema, table_name = split_table(resource.location.table or "")
    where = f"table {resource.location.table}"
    engine = sa.create_engine(engine_url(conn), poolclass=NullPool)
    try:
        with engine.connect() as c:
            reflected = _reflect(c, resource, table_name, schema, where)
            col = reflected.c[resource.field(part.column).source_name]
            lo, hi = c.execute(sa.select(sa.func.min(col), sa.func.max(col))).one()
    except sa.exc.SQLAlchemyError as exc:
        raise _wrap(exc, resource, where, conn) from exc
    finally:
        engine.dispose()
    if lo is None or int(hi) - int(lo) + 1 < part.min_span:
        return [KeyRange(column=part.column, index=0, count=1)]
    n = part.ranges
    step = -(-(int(hi) - int(lo) + 1) // n)
    cuts = [int(lo) + step * i for i in range(1, n)]
    bounds = [None, *cuts, None]
    ranges = [KeyRange(column=part.column, lo=bounds[i], hi=bounds[i + 1], index=i, count=n) for i in range(n)]
    log.info("resource %s: %d key ranges on %s over [%s, %s]", resource.code, n, part.column, lo, hi)
    return ranges


def extract_sql(resource: Resource, conn: ConnInfo, interval: Interval, out_dir: Path, *,
                since: str | None, chunk_rows: int, key_range: KeyRange | dict | None = None,
                previous_schema: dict[str, str] | None = None) -> ExtractResult:
    """Stage ``resource`` from its SQL table under ``out_dir``.

    Rows are read in primary-key order, ``chunk_rows`` at a time (fast path or portable
    path, see the module doc). Watermark resources read ``col < interval.end`` and, when
    ``since`` is given, ``col > since - lookback_days``; ``watermark_after`` is the largest
    value read (ISO text), or ``since`` when nothing newer was read. Snapshot resources read
    every row. ``previous_schema`` (field -> source type family of the last delivery) lets
    drift detection see retyped columns; the result's ``source_schema`` is this delivery's.
    """
    started = time.monotonic()
    if isinstance(key_range, dict):
        key_range = KeyRange.from_dict(key_range)
    if key_range is not None and not key_range.column:
        key_range = None
    tz = source_timezone(conn)
    window = WatermarkWindow.for_resource(resource, interval, since, tz)
    schema, table_name = split_table(resource.location.table or "")
    where = f"table {resource.location.table}"
    label = f"table {resource.location.table}"
    path = read_engine(conn)
    drift = Drift(policy=policy_of(resource))
    field_names = [f.name for f in resource.fields]
    engine = sa.create_engine(engine_url(conn), poolclass=NullPool)
    rejects = Rejects(out_dir) if drift.policy == "discard_row" else None
    try:
        with engine.connect() as c:
            reflected = _reflect(c, resource, table_name, schema, where)
            source_cols = [col.name for col in reflected.columns]
            must = list(resource.primary_key) + ([window.field] if window else [])
            if key_range is not None:
                must.append(key_range.column)
            mapping = resolve_columns(resource, source_cols, where=where, also_required=must)
            families = {f.name: type_family(reflected.columns[source_cols[i]].type)
                        for f, i in zip(resource.fields, mapping, strict=True) if i is not None}
            drift.new = [source_cols[i] for i in split_new(source_cols, mapping)]
            drift.missing = [f.name for f, i in zip(resource.fields, mapping, strict=True) if i is None]
            drift.retyped = retyped_columns(resource, families, previous_schema)
            pk_cols = [source_cols[mapping[field_names.index(k)]] for k in resource.primary_key]
            if drift.policy == "freeze" and drift.any:
                _freeze(c, reflected, resource, drift, pk_cols, where)
            log_drift(resource, drift, where)

            selected = [source_cols[i] for i in mapping if i is not None]
            extra_cols = drift.new if drift.policy in ("evolve", "discard_row") else []
            selected_all = selected + [n for n in extra_cols if n not in selected]
            position = {name: k for k, name in enumerate(selected_all)}
            take = [position[source_cols[i]] if i is not None else None for i in mapping]
            extra_take = [position[n] for n in extra_cols]
            key_col = (source_cols[mapping[field_names.index(key_range.column)]] if key_range else None)

            wm_col = wm_pos = lower = upper = None
            if window is not None:
                wm_col = source_cols[mapping[field_names.index(window.field)]]
                wm_pos = position[wm_col]
                col_type = reflected.columns[wm_col].type
                upper = bound_for(window.upper, col_type, c.dialect.name, tz)
                lower = bound_for(window.lower, col_type, c.dialect.name, tz) if window.lower else None
            as_text = ({n for n in selected_all if type_family(reflected.columns[n].type) not in _CX_NATIVE}
                       if path == "connectorx" else set())
            if path == "connectorx" and c.dialect.name == "mysql":
                # TINYINT(1) comes back as a boolean from some clients: keep MariaDB's own digits.
                as_text |= {n for n in selected_all if type(reflected.columns[n].type).__name__ == "TINYINT"}
            stmt = build_select(table_name, schema, selected_all, order_by=pk_cols, watermark=wm_col,
                                lower=lower, upper=upper, key_range=key_range, key_column=key_col,
                                as_text=as_text)
            log.info("resource %s: reading %s (%s via %s) ordered by %s%s%s", resource.code, where,
                     c.dialect.name, path, pk_cols,
                     f", watermark {wm_col} in ({lower}, {upper})" if window else "",
                     f", key range {key_range.index + 1}/{key_range.count} [{key_range.lo}, {key_range.hi})"
                     if key_range else "")
            extra_names = [new_column_name(n) for n in extra_cols] if drift.policy == "evolve" else []
            with StagingWriter(out_dir, resource, chunk_rows=chunk_rows, tz=tz, started=started,
                               extra_columns=extra_names) as writer:
                ctx = _Read(resource, drift, take, extra_take, wm_pos, window, label, rejects, families)
                if path == "connectorx":
                    dialect = c.dialect
                    lowest = None
                    single = False
                    if window is not None and window.lower is not None:
                        # An incremental run: a window of at most chunk_rows rows is read in one
                        # query without LIMIT (the optimizer range-scans the watermark index and
                        # sorts the few rows) instead of LIMIT pages on the primary key, which
                        # MariaDB may serve by walking the whole key filtering on the watermark.
                        counted = c.execute(build_count(table_name, schema, watermark=wm_col, lower=lower,
                                                        upper=upper, key_range=key_range,
                                                        key_column=key_col)).scalar_one()
                        single = counted <= chunk_rows
                        log.info("resource %s: window of %d rows (chunk_rows %d): %s", resource.code, counted,
                                 chunk_rows, "one query" if single else "keyset pages")
                    else:
                        log.info("resource %s: no lower watermark bound: keyset pages", resource.code)
                    if not single:
                        # The first page starts at the smallest key (an index lookup): without a key
                        # bound MariaDB reads a wide watermark range through the watermark index and
                        # sorts all of it for every page (measured: 16 s instead of 1.5 s at 1M rows).
                        lowest = c.execute(sa.select(sa.func.min(reflected.c[pk_cols[0]]))).scalar()
                    c.close()  # the fast path has its own connections; do not hold this one open
                    _read_connectorx(conn, stmt, dialect, pk_cols, chunk_rows, writer, ctx, lowest,
                                     single=single)
                else:
                    # Already one query without LIMIT (a server-side cursor): MariaDB range-scans
                    # the watermark index for a small window by itself, so no count is needed.
                    result = c.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
                    _read_sqlalchemy(result, writer, ctx)
                    result.close()
    except sa.exc.SQLAlchemyError as exc:
        raise _wrap(exc, resource, where, conn) from exc
    except (ExtractError, SchemaDriftError):
        raise
    except RuntimeError as exc:  # connectorx reports every driver failure as RuntimeError
        raise _wrap(exc, resource, where, conn) from exc
    finally:
        engine.dispose()

    res = (writer.result() if window is None
           else writer.result(watermark_before=since, watermark_after=window.after))
    res.engine = path
    res.rows_read = res.rows + drift.discarded_rows
    res.drift = drift.to_dict()
    res.source_schema = families
    res.rejects_file = rejects.close() if rejects else None
    if key_range is not None:
        res.key_range = key_range.to_dict()
    return res


def _freeze(c: sa.Connection, t: sa.Table, resource: Resource, drift: Drift, pk_cols: list[str], where: str):
    """Under ``freeze``: fail on the first drifted column, naming a row that carries it."""
    if drift.new:
        col = drift.new[0]
        raise drift_error(resource, col, f"is delivered by {where} but not in the catalog",
                          _first_offender(c, t, col, pk_cols, resource) or "none has a value yet")
    if drift.missing:
        check_columns(resource, drift, where=where, header_row="every row (the column is absent)")
    name = next(iter(drift.retyped))
    col = resource.field(name).source_name
    raise drift_error(resource, col, f"is retyped in {where} ({drift.retyped[name]})",
                      _first_offender(c, t, col, pk_cols, resource), field=name)


@dataclass
class _Read:
    """What the two read loops share: column positions, the window and the drift handling."""

    resource: Resource
    drift: Drift
    take: list[int | None]
    extra_take: list[int]
    wm_pos: int | None
    window: WatermarkWindow | None
    label: str
    rejects: Rejects | None
    families: dict[str, str]

    @property
    def retyped_positions(self) -> list[int]:
        names = [f.name for f in self.resource.fields]
        return [names.index(n) for n in self.drift.retyped] if self.drift.policy.startswith("discard") else []


def _read_sqlalchemy(result: sa.CursorResult, writer: StagingWriter, ctx: _Read) -> None:
    import pyarrow as pa

    types = [f.type for f in ctx.resource.fields]
    retyped = ctx.retyped_positions
    for part in result.partitions():
        for row in part:
            values = [row[k] if k is not None else None for k in ctx.take]
            extras = [row[k] for k in ctx.extra_take]
            if ctx.wm_pos is not None:
                ctx.window.observe(row[ctx.wm_pos])
            if retyped or (ctx.rejects is not None and extras):
                values, extras, keep = _row_policy(ctx, values, extras, types, retyped, pa)
                if not keep:
                    continue
            writer.append(values + extras if writer.extra_columns else values, ctx.label)


def _row_policy(ctx: _Read, values: list, extras: list, types: list[str], retyped: list[int], pa):
    """discard_row / discard_value on one row (portable path): returns (values, extras, keep)."""
    from extractors.staging import to_text

    reasons = []
    if ctx.rejects is not None and any(to_text(v) is not None for v in extras):
        reasons.append("value in new column(s) " + ", ".join(ctx.drift.new))
    for i in retyped:
        text = to_text(values[i], types[i])
        if text is not None and nonconforming(pa.array([text]), types[i])[0].as_py():
            if ctx.drift.policy == "discard_value":
                values[i] = None
                ctx.drift.discarded_values += 1
            else:
                reasons.append(f"{ctx.resource.fields[i].name}: not a {types[i]}")
    if reasons and ctx.rejects is not None:
        ctx.drift.discarded_rows += 1
        record = {f.name: to_text(v, f.type) for f, v in zip(ctx.resource.fields, values, strict=True)}
        ctx.rejects.add(ctx.label, "; ".join(reasons), record)
        return values, extras, False
    if ctx.drift.policy == "discard_row":
        extras = []
    return values, extras, True


def _read_connectorx(conn: ConnInfo, stmt: sa.Select, dialect, pk_cols: list[str], chunk_rows: int,
                     writer: StagingWriter, ctx: _Read, lowest: Any = None, *, single: bool = False) -> None:
    """Keyset pages of ``chunk_rows`` rows through connectorx, the next page fetched while the
    current one is rendered and written; with ``single``, ``stmt`` as one query.

    connectorx's own ``arrow_stream`` reads ahead without bound (at 5M rows its queue held
    the whole table when the consumer was slower: 726 MB), so each page is its own bounded
    query, ``WHERE (pk) > (:last) ORDER BY pk LIMIT chunk_rows``: at most two pages are in
    memory, whatever the table size. The primary-key index makes every page a range read.

    ``single`` (the caller counted at most ``chunk_rows`` rows in the window): no LIMIT and no
    key bound, so rows that entered the window after the count are read too, never lost; the
    result is held whole, i.e. memory is bounded by the window's size at count time plus
    what arrived since (a window ending at the interval end rarely grows).
    """
    from concurrent.futures import ThreadPoolExecutor

    import connectorx as cx

    _bounded_arrow_pool()
    url = connectorx_url(conn)
    sel = stmt.selected_columns
    pk = [sel[c] for c in pk_cols]
    pk_pos = [list(sel.keys()).index(c) for c in pk_cols]

    def sql_of(query: sa.Select) -> str:
        return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    def page_sql(last: tuple | None) -> str:
        page = stmt
        if last is None and lowest is not None:
            page = page.where(pk[0] >= sa.literal(lowest))
        if last is not None:
            cond = (pk[0] > sa.literal(last[0]) if len(pk) == 1
                    else sa.tuple_(*pk) > sa.tuple_(*[sa.literal(v) for v in last]))
            page = page.where(cond)
        return sql_of(page.limit(chunk_rows))

    def fetch(last: tuple | None):
        return cx.read_sql(url, page_sql(last), return_type="arrow")

    def stage(table) -> None:
        for batch in table.to_batches():
            if batch.num_rows:
                _stage_batch(batch, writer, ctx)

    if single:
        stage(cx.read_sql(url, sql_of(stmt), return_type="arrow"))
        _release_memory()
        return

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cx-prefetch") as pool:
        pending = pool.submit(fetch, None)
        while pending is not None:
            table = pending.result()
            n = table.num_rows
            pending = None
            if n >= chunk_rows:  # a full page: there may be more
                last = tuple(table.column(i)[n - 1].as_py() for i in pk_pos)
                pending = pool.submit(fetch, last)
            stage(table)
            del table
            _release_memory()


def _release_memory() -> None:
    """Give freed heap pages back to the OS after each page.

    connectorx allocates each page from glibc arenas of its own threads; without a trim the
    freed pages stay mapped and RSS grows with the table (measured: 196 MB at 1M rows, 244 MB
    at 3M; with a trim per page 127 MB at both).
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to trim
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _bounded_arrow_pool() -> None:
    """Use jemalloc (else the system allocator) for Arrow buffers from now on in this process.

    The default mimalloc pool keeps freed pages around: at 5M rows the extraction's RSS was
    296 MB against 271 MB at 1M; with jemalloc 243 MB against 237 MB (measured on 2 cores).
    """
    import pyarrow as pa

    if pa.default_memory_pool().backend_name in ("jemalloc", "system"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())


def _stage_batch(batch, writer: StagingWriter, ctx: _Read) -> None:
    """Render one Arrow batch to staged text (vectorised), apply the drift policy, write it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = ctx.resource.fields
    cols = [None if k is None else arrow_text(batch.column(k), f.type, tz=writer.tz)
            for f, k in zip(fields, ctx.take, strict=True)]
    extras = [arrow_text(batch.column(k), "string", tz=writer.tz) for k in ctx.extra_take]
    if ctx.wm_pos is not None:
        wm = batch.column(ctx.wm_pos)
        if pa.types.is_string(wm.type) or pa.types.is_large_string(wm.type):
            for v in pc.unique(wm).to_pylist():  # text watermarks: not every value parses
                ctx.window.observe(v)
        else:
            ctx.window.observe(pc.max(wm).as_py())
    keep = None
    reasons: list[pa.Array] = []
    if ctx.rejects is not None and extras:
        has_new = pc.is_valid(extras[0])
        for e in extras[1:]:
            has_new = pc.or_(has_new, pc.is_valid(e))
        reasons.append(pc.if_else(has_new, "value in new column(s) " + ", ".join(ctx.drift.new),
                                  pa.scalar(None, pa.string())))
    for i in ctx.retyped_positions:
        bad = nonconforming(cols[i], fields[i].type)
        if ctx.drift.policy == "discard_value":
            ctx.drift.discarded_values += pc.sum(bad).as_py() or 0
            cols[i] = pc.if_else(bad, pa.scalar(None, pa.string()), cols[i])
        else:
            reasons.append(pc.if_else(bad, f"{fields[i].name}: not a {fields[i].type}",
                                      pa.scalar(None, pa.string())))
    if reasons:
        reason = reasons[0] if len(reasons) == 1 else pc.binary_join_element_wise(
            *reasons, "; ", null_handling="skip")
        bad_rows = pc.is_valid(reason)
        n_bad = pc.sum(bad_rows).as_py() or 0
        if n_bad:
            keep = pc.invert(bad_rows)
            for idx in pc.indices_nonzero(bad_rows).to_pylist():
                record = {f.name: (None if c is None else c[idx].as_py()) for f, c in zip(fields, cols, strict=True)}
                ctx.rejects.add(ctx.label, reason[idx].as_py(), record)
            ctx.drift.discarded_rows += n_bad
    if ctx.drift.policy == "discard_row":
        extras = []
    if keep is not None:
        cols = [None if c is None else pc.filter(c, keep) for c in cols]
        extras = [pc.filter(e, keep) for e in extras]
    writer.append_arrow(cols + extras if writer.extra_columns else cols, ctx.label)


__all__ = ["KeyRange", "bound_for", "build_count", "build_select", "connectorx_url", "engine_url", "extract_sql",
           "plan_key_ranges", "read_engine", "split_table"]
