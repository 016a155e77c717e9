"""Extract a catalog resource from a SQL source (SQLite, MariaDB/MySQL, PostgreSQL).

SQLAlchemy 2 Core only: the table is reflected once (to check the catalog's columns and to
learn the watermark column's type), the query is built as Core objects (identifiers from
the catalog quoted by SQLAlchemy, values bound) and streamed with a server-side cursor
(``stream_results`` + ``yield_per``) into :class:`~extractors.staging.StagingWriter`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from catalog.models import Resource
from datarail.errors import ExtractError
from datarail.interval import Interval
from datarail.privacy import scrub_text
from extractors.base import ConnInfo, ExtractResult
from extractors.staging import StagingWriter, WatermarkWindow, resolve_columns, source_timezone

log = logging.getLogger(__name__)

_DRIVERS = {
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
}


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
                 watermark: str | None = None, lower: Any = None, upper: Any = None) -> sa.Select:
    """The extraction query as a Core object.

    ``SELECT columns FROM [schema.]table [WHERE watermark < :upper [AND watermark > :lower]]
    ORDER BY order_by``; identifiers are quoted by the dialect and bounds are bound parameters.
    """
    names = list(dict.fromkeys([*columns, *order_by, *([watermark] if watermark else [])]))
    t = sa.table(table, *[sa.column(n) for n in names], schema=schema)
    stmt = sa.select(*[t.c[n] for n in columns])
    if watermark is not None:
        if upper is not None:
            stmt = stmt.where(t.c[watermark] < sa.bindparam("wm_upper", upper))
        if lower is not None:
            stmt = stmt.where(t.c[watermark] > sa.bindparam("wm_lower", lower))
    return stmt.order_by(*[t.c[n] for n in order_by])


def extract_sql(resource: Resource, conn: ConnInfo, interval: Interval, out_dir: Path, *,
                since: str | None, chunk_rows: int) -> ExtractResult:
    """Stage ``resource`` from its SQL table under ``out_dir``.

    Rows are read in primary-key order with a server-side cursor, ``chunk_rows`` at a time.
    Watermark resources read ``col < interval.end`` and, when ``since`` is given,
    ``col > since - lookback_days``; ``watermark_after`` is the largest value read (ISO text),
    or ``since`` when nothing newer was read. Snapshot resources read every row.
    """
    started = time.monotonic()
    tz = source_timezone(conn)
    window = WatermarkWindow.for_resource(resource, interval, since, tz)
    schema, table_name = split_table(resource.location.table or "")
    where = f"table {resource.location.table}"
    engine = sa.create_engine(engine_url(conn), poolclass=NullPool)
    try:
        with (engine.connect() as c,
              StagingWriter(out_dir, resource, chunk_rows=chunk_rows, tz=tz, started=started) as writer):
            try:
                reflected = sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=c)
            except sa.exc.NoSuchTableError as exc:
                raise ExtractError(f"{where} does not exist in the source database", unit=resource.unit,
                                   resource=resource.code,
                                   hint="Check location.table in the catalog and the connection's database"
                                   ) from exc
            source_cols = [col.name for col in reflected.columns]
            must = list(resource.primary_key) + ([window.field] if window else [])
            mapping = resolve_columns(resource, source_cols, where=where, also_required=must)
            selected = [source_cols[i] for i in mapping if i is not None]
            position = {name: k for k, name in enumerate(selected)}
            take = [position[source_cols[i]] if i is not None else None for i in mapping]
            order_by = [source_cols[mapping[[f.name for f in resource.fields].index(k)]]
                        for k in resource.primary_key]

            wm_col = wm_pos = lower = upper = None
            if window is not None:
                wm_index = mapping[[f.name for f in resource.fields].index(window.field)]
                wm_col = source_cols[wm_index]
                wm_pos = position[wm_col]
                col_type = reflected.columns[wm_col].type
                upper = bound_for(window.upper, col_type, c.dialect.name, tz)
                lower = bound_for(window.lower, col_type, c.dialect.name, tz) if window.lower else None
            stmt = build_select(table_name, schema, selected, order_by=order_by, watermark=wm_col,
                                lower=lower, upper=upper)
            log.info("resource %s: reading %s (%s) ordered by %s%s", resource.code, where, c.dialect.name,
                     order_by, f", watermark {wm_col} in ({lower}, {upper})" if window else "")

            label = f"table {resource.location.table}"
            result = c.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
            for part in result.partitions():
                for row in part:
                    writer.append([row[k] if k is not None else None for k in take], label)
                    if wm_pos is not None:
                        window.observe(row[wm_pos])
            result.close()
    except sa.exc.SQLAlchemyError as exc:
        # The driver's first message line names the problem (auth, unknown column, lost
        # connection); the URL is not in it, and any ID or phone number a driver quotes is masked.
        cause = getattr(exc, "orig", None) or exc
        first_line = scrub_text((str(cause).splitlines() or [""])[0][:300])
        raise ExtractError(f"{where}: the source database failed: {type(cause).__name__}: {first_line}",
                           unit=resource.unit, resource=resource.code,
                           hint="Check the connection and that the database is reachable") from exc
    finally:
        engine.dispose()

    if window is None:
        return writer.result()
    return writer.result(watermark_before=since, watermark_after=window.after)


__all__ = ["bound_for", "build_select", "engine_url", "extract_sql", "split_table"]
