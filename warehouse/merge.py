"""The set-based merge of one delivery into ``ods.<table>`` and ``ods.<table>_history``.

The delivery is first put in a temporary staging table (PostgreSQL: ONE ``COPY`` in the text
format, rendered by Arrow kernels and streamed batch by batch; SQLite: one executemany per
batch), then merged by a handful of set-based statements that read only the staging table,
the current table and the history table. On PostgreSQL the statements are composed
into ONE statement (data-modifying CTEs, all reading the same snapshot); on SQLite they run
one after the other in the caller's transaction. Either way the caller's transaction makes
the whole load atomic.

Versions are placed on the data-interval axis: a delivery for interval I brings versions
valid from ``I.start`` (``:vf``). Per key, against the current version ``o`` and the history:

| case | condition | effect |
|---|---|---|
| new | no current row, no history version ending after ``:vf`` | inserted as current |
| unchanged | ``o._row_hash`` equal, ``o._valid_from <= :vf`` | nothing (keeps its load metadata) |
| updated | hash differs, ``o._valid_from < :vf`` | ``o`` -> history (``_valid_to = :vf``), new current |
| rerun | hash differs, ``o._valid_from = :vf`` (same interval again) | current replaced in place |
| late | ``o._valid_from > :vf``; or the key was deleted after ``:vf`` (a backfill) | current untouched; history gets the version at ``:vf`` (below) |

A late version (a backfill of an interval before the key's current version) goes into the
history where it belongs, so that "as of" any day answers what the source said that day:

| late case | effect |
|---|---|
| a history version starts at ``:vf`` (the backfill again) | replaced in place if its content differs, else nothing |
| a history version ``p`` covers ``:vf`` with other content | ``p`` split: ``p`` ends at ``:vf`` (closed by this load), the late version runs ``[:vf, p's end)`` and is closed as ``p`` was |
| a history version covers ``:vf`` with the same content | nothing |
| nothing covers ``:vf`` (before the first version, or in a gap a deletion left) | ``[:vf, next known version)`` (``_change = late``) |
| deleted | snapshot resources: current key neither delivered nor quarantined, ``o._valid_from <= :vf`` | ``o`` -> history (``_change = deleted``), removed from current |

So a rerun of an interval changes nothing, and a backfill of an older interval never
overwrites newer state (snapshot deletes are not applied by a backfill:
:func:`warehouse.load.load_delivery` turns them off when a later interval is loaded).

Change capture (what incremental base builds read): every key whose current version a merge
writes or removes is found by the load's time, in history (``_closed_at``: updated, deleted) or,
where no version was closed (new keys, reruns), in the change journal ``ods.<table>_changes``
(key, ``_loaded_at``).

The first load of a resource (current and history tables both empty) skips staging: every
row is ``new``, so the rows are written straight into the current table (the same rows and
metadata the merge would write, method ``copy-direct`` / ``insert-direct``). It journals
nothing: every current row came from it, so change capture takes the whole table for such a
load (:func:`warehouse.models._fill_scope`).
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from catalog.models import Resource
from warehouse.engine import compress_wal, price_reads_in_memory
from warehouse.tables import changes_name

log = logging.getLogger(__name__)

STAGE = "_stage_delivery"
KEEP = "_stage_keep"


@dataclass(frozen=True)
class MergeStats:
    rows_in: int
    inserted: int
    updated: int
    unchanged: int
    late: int
    deleted: int

    def as_dict(self) -> dict:
        return {"rows_in": self.rows_in, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "late": self.late, "deleted": self.deleted}


class MergeSQL:
    """The merge statements for one resource, with identifiers quoted for the dialect. Values
    are bound (``:vf``, ``:run``, ``:k``, ``:now``)."""

    def __init__(self, resource: Resource, ods: sa.Table, hist: sa.Table, dialect: sa.Dialect):
        q = dialect.identifier_preparer.quote
        self.q = q
        self.ods = f"{dialect.identifier_preparer.quote_schema('ods')}.{q(ods.name)}"
        self.hist = f"{dialect.identifier_preparer.quote_schema('ods')}.{q(hist.name)}"
        self.changes = f"{dialect.identifier_preparer.quote_schema('ods')}.{q(changes_name(resource))}"
        self.cols = [c.name for c in ods.columns]  # fields + load metadata, in table order
        self.pk = list(resource.primary_key)
        self.data_cols = [c for c in self.cols if c not in self.pk]

    def on(self, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{self.q(k)} = {b}.{self.q(k)}" for k in self.pk)

    def list(self, alias: str | None = None, cols: list[str] | None = None) -> str:
        cols = self.cols if cols is None else cols
        return ", ".join(f"{alias}.{self.q(c)}" if alias else self.q(c) for c in cols)

    @property
    def hist_cols(self) -> str:
        return self.list() + ", _valid_to, _closed_run_id, _closed_interval_key, _closed_at, _change"

    # -- the statements -------------------------------------------------------------------

    def classify(self) -> str:
        """Counts per case, read before anything changes."""
        k0 = self.q(self.pk[0])
        return (
            f"SELECT COUNT(*) AS rows_in, "
            f"SUM(CASE WHEN o.{k0} IS NOT NULL AND o._row_hash = s._row_hash AND o._valid_from <= :vf "
            f"THEN 1 ELSE 0 END) AS unchanged, "
            f"SUM(CASE WHEN o.{k0} IS NOT NULL AND o._row_hash <> s._row_hash AND o._valid_from <= :vf "
            f"THEN 1 ELSE 0 END) AS updated, "
            f"SUM(CASE WHEN o.{k0} IS NOT NULL AND o._valid_from > :vf THEN 1 "
            f"WHEN o.{k0} IS NULL AND EXISTS (SELECT 1 FROM {self.hist} h WHERE {self.on('h', 's')} "
            f"AND h._valid_to > :vf) THEN 1 ELSE 0 END) AS late "
            f"FROM {STAGE} s LEFT JOIN {self.ods} o ON {self.on('o', 's')}")

    def _late(self) -> str:
        return (f"((o._row_hash IS NOT NULL AND o._valid_from > :vf) "
                f"OR (o._row_hash IS NULL AND EXISTS (SELECT 1 FROM {self.hist} h WHERE {self.on('h', 's')} "
                f"AND h._valid_to > :vf)))")

    def late_rerun(self) -> str:
        """A late version for an interval a history version starts at (a rerun of a backfill):
        that version's content is replaced in place."""
        sets = ", ".join(f"{self.q(c)} = s.{self.q(c)}" for c in self.data_cols if c != "_valid_from")
        return (f"UPDATE {self.hist} AS h SET {sets} FROM {STAGE} s "
                f"WHERE {self.on('h', 's')} AND h._valid_from = :vf AND h._row_hash <> s._row_hash")

    def late_split(self) -> str:
        """A late version inside a history version ``p`` (``p`` started before ``:vf`` and
        ended after it) with other content: the version ``[:vf, p's end)``, closed as ``p``
        was (run the caller runs BEFORE :meth:`late_split_close` on SQLite)."""
        return (
            f"INSERT INTO {self.hist} ({self.hist_cols}) "
            f"SELECT {self.list('s')}, p._valid_to, p._closed_run_id, p._closed_interval_key, p._closed_at, p._change "
            f"FROM {STAGE} s JOIN {self.hist} p ON {self.on('p', 's')} "
            f"WHERE p._valid_from < :vf AND p._valid_to > :vf AND p._row_hash <> s._row_hash")

    def late_split_close(self) -> str:
        """... and ``p`` now ends at ``:vf``, closed by this load."""
        return (f"UPDATE {self.hist} AS p SET _valid_to = :vf, _closed_run_id = :run, _closed_interval_key = :k, "
                f"_closed_at = :now, _change = 'updated' FROM {STAGE} s "
                f"WHERE {self.on('p', 's')} AND p._valid_from < :vf AND p._valid_to > :vf "
                f"AND p._row_hash <> s._row_hash")

    def late_to_history(self) -> str:
        """A late version for an interval no known version covers (before the first one, or
        in the gap a deletion left): history up to the next known version."""
        return (
            f"INSERT INTO {self.hist} ({self.hist_cols}) "
            f"SELECT {self.list('s')}, COALESCE((SELECT MIN(h._valid_from) FROM {self.hist} h "
            f"WHERE {self.on('h', 's')} AND h._valid_from > :vf), o._valid_from), :run, :k, :now, 'late' "
            f"FROM {STAGE} s LEFT JOIN {self.ods} o ON {self.on('o', 's')} "
            f"WHERE {self._late()} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.hist} h WHERE {self.on('h', 's')} AND h._valid_from <= :vf "
            f"AND h._valid_to > :vf)")

    def late_steps(self) -> list[str]:
        """The late-version statements, in the order SQLite must run them."""
        return [self.late_rerun(), self.late_split(), self.late_split_close(), self.late_to_history()]

    def supersede(self) -> str:
        """Current versions replaced by a newer delivery move to history."""
        return (
            f"INSERT INTO {self.hist} ({self.hist_cols}) "
            f"SELECT {self.list('o')}, :vf, :run, :k, :now, 'updated' "
            f"FROM {self.ods} o JOIN {STAGE} s ON {self.on('o', 's')} "
            f"WHERE o._row_hash <> s._row_hash AND o._valid_from < :vf")

    def journal(self) -> str:
        """The change journal: key and ``_loaded_at`` of every row :meth:`upsert` will write
        without :meth:`supersede` closing its previous version in history (new keys, and
        reruns replacing a version of the same interval). Updated and deleted keys are found
        through history's ``_closed_at``. Against the state before the merge (SQLite runs it
        before the upsert)."""
        k0 = self.q(self.pk[0])
        return (
            f"INSERT INTO {self.changes} ({self.list(cols=self.pk)}, _loaded_at) "
            f"SELECT {self.list('s', self.pk)}, s._loaded_at FROM {STAGE} s LEFT JOIN {self.ods} o ON {self.on('o', 's')} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.hist} h WHERE {self.on('h', 's')} AND h._valid_to > :vf) "
            f"AND (o.{k0} IS NULL OR (o._row_hash <> s._row_hash AND o._valid_from = s._valid_from))")

    def upsert(self) -> str:
        """New keys inserted, changed ones replaced, unchanged and late ones left alone."""
        sets = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in self.data_cols)
        return (
            f"INSERT INTO {self.ods} AS cur ({self.list()}) "
            f"SELECT {self.list('s')} FROM {STAGE} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.hist} h WHERE {self.on('h', 's')} AND h._valid_to > :vf) "
            f"ON CONFLICT ({self.list(cols=self.pk)}) DO UPDATE SET {sets} "
            f"WHERE cur._row_hash <> excluded._row_hash AND cur._valid_from <= excluded._valid_from")

    def forward(self, snapshot: bool) -> str:
        """PostgreSQL, when no later interval is loaded (the daily case: nothing can be late):
        the whole merge as one statement that probes each delivered key's current row ONCE.
        ``probe`` (materialized) pairs every staged row with its current version (its columns
        as ``_prev_*`` and its ``ctid``, or nulls for a new key); the changed rows are updated
        in place by ``ctid``, their previous versions go to history, new keys are inserted,
        and the keys written without a history row (new, rerun) go to the change journal, all
        from ``probe``. Counts: updated, inserted, moved to history (and closed, deleted).

        Updating by ``ctid`` is safe because :func:`merge` holds a lock that keeps other
        writers off the current table for the whole transaction: the version the probe saw is
        still the current one when the update reaches it."""
        sets = ", ".join(f"{self.q(c)} = p.{self.q(c)}" for c in self.data_cols)
        olds = ", ".join(f"o.{self.q(c)} AS {self.q('_prev_' + c)}" for c in self.cols)
        prev_cols = ", ".join(f"p.{self.q('_prev_' + c)}" for c in self.cols)
        changed = f"p.{self.q('_prev__row_hash')} <> p._row_hash"
        parts = [
            f"probe AS MATERIALIZED (SELECT {self.list('s')}, o.ctid AS _prev_ctid, {olds} "
            f"FROM {STAGE} s LEFT JOIN {self.ods} o ON {self.on('o', 's')})",
            f"upd AS (UPDATE {self.ods} AS cur SET {sets} FROM probe p WHERE cur.ctid = p._prev_ctid AND {changed} "
            f"RETURNING 1)",
            f"sup AS (INSERT INTO {self.hist} ({self.hist_cols}) SELECT {prev_cols}, :vf, :run, :k, :now, 'updated' "
            f"FROM probe p WHERE p._prev_ctid IS NOT NULL AND {changed} AND p.{self.q('_prev__valid_from')} < :vf "
            f"RETURNING 1)",
            f"ins AS (INSERT INTO {self.ods} ({self.list()}) SELECT {self.list('p')} FROM probe p "
            f"WHERE p._prev_ctid IS NULL RETURNING 1)",
            # (a data-modifying CTE runs whether or not the statement reads it)
            f"jr AS (INSERT INTO {self.changes} ({self.list(cols=self.pk)}, _loaded_at) "
            f"SELECT {self.list('p', self.pk)}, p._loaded_at FROM probe p WHERE p._prev_ctid IS NULL "
            f"OR ({changed} AND (p.{self.q('_prev__valid_from')} < :vf) IS NOT TRUE))"]
        return self._statement(parts, ["upd", "ins", "sup"], snapshot)

    def _statement(self, parts: list[str], counted: list[str], snapshot: bool) -> str:
        """``WITH <parts> [, the snapshot deletes] SELECT <row count of each counted CTE>``."""
        if snapshot:
            parts = [*parts, f"closed AS ({self.close_deleted()} RETURNING 1)", f"del AS ({self.delete()} RETURNING 1)"]
            counted = [*counted, "closed", "del"]
        return "WITH " + ",\n".join(parts) + "\nSELECT " + ", ".join(f"(SELECT COUNT(*) FROM {c})" for c in counted)

    def _undelivered(self, alias: str) -> str:
        return (f"NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {self.on('s', alias)}) "
                f"AND NOT EXISTS (SELECT 1 FROM {KEEP} x WHERE {self.on('x', alias)})")

    def close_deleted(self) -> str:
        """Snapshot sources: keys no longer delivered close their current version..."""
        return (
            f"INSERT INTO {self.hist} ({self.hist_cols}) "
            f"SELECT {self.list('o')}, :vf, :run, :k, :now, 'deleted' "
            f"FROM {self.ods} o WHERE o._valid_from < :vf AND {self._undelivered('o')}")

    def delete(self) -> str:
        """... and leave the current table (a version this same interval brought earlier
        is simply dropped: it never was valid for a whole interval)."""
        return f"DELETE FROM {self.ods} AS o WHERE o._valid_from <= :vf AND {self._undelivered('o')}"

    def fused(self, snapshot: bool) -> str:
        """PostgreSQL: every step as one statement. Data-modifying CTEs all see the snapshot
        taken before the statement, which is the state each step is written against; the steps
        touch disjoint rows, so the order inside the statement does not matter."""
        parts = [f"late_rerun AS ({self.late_rerun()} RETURNING 1)",
                 f"late_split AS ({self.late_split()} RETURNING 1)",
                 f"late_close AS ({self.late_split_close()} RETURNING 1)",
                 f"late AS ({self.late_to_history()} RETURNING 1)",
                 f"sup AS ({self.supersede()} RETURNING 1)",
                 f"ups AS ({self.upsert()} RETURNING 1)",
                 f"jr AS ({self.journal()})"]
        return self._statement(parts, ["late", "sup", "ups"], snapshot)


def _binds(stmt: str) -> sa.TextClause:
    # Typed binds: SQLite stores DateTime as text in SQLAlchemy's format, so a bound datetime
    # must go through the same type processor to compare equal.
    binds = [sa.bindparam(n, type_=sa.DateTime()) for n in ("vf", "now") if f":{n}" in stmt]
    binds += [sa.bindparam(n, type_=sa.String()) for n in ("run", "k") if f":{n}" in stmt]
    return sa.text(stmt).bindparams(*binds)


def _stage_tables(conn: sa.Connection, resource: Resource, ods: sa.Table) -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    # DIALECT: a temporary table lives in SQLite's temp schema / PostgreSQL's pg_temp; both
    # are searched first for an unqualified name, and both vanish with a rollback.
    kw = {"postgresql_on_commit": "DROP"} if conn.dialect.name == "postgresql" else {}
    stage = sa.Table(STAGE, md, *[sa.Column(c.name, c.type) for c in ods.columns], prefixes=["TEMPORARY"], **kw)
    keep = sa.Table(KEEP, md, *[sa.Column(k, ods.c[k].type) for k in resource.primary_key],
                    prefixes=["TEMPORARY"], **kw)
    for t in (stage, keep):
        t.drop(conn, checkfirst=True)
        t.create(conn)
    return stage, keep


def copy_text(cols: list[pa.Array]) -> pa.Buffer:
    """PostgreSQL ``COPY`` text format of one batch (columns of canonical text, in the table's
    column order): fields joined by tab, rows ended by newline, ``\\N`` for null, and
    backslash, tab, newline and carriage return escaped as COPY reads them back. Built with
    Arrow kernels over whole columns (no per-row Python work); the returned buffer is the
    joined column's UTF-8 data, every row in order."""
    fields = []
    for arr in cols:
        arr = arr if arr.type == pa.string() else arr.cast(pa.string())
        if pc.any(pc.match_substring_regex(arr, r"[\\\t\n\r]")).as_py():
            for raw, escaped in _COPY_ESCAPES:
                arr = pc.replace_substring(arr, raw, escaped)
        fields.append(pc.fill_null(arr, _COPY_NULL))
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, "\t"), pa.scalar(""), "\n")
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return data.slice(int(bounds[0]), int(bounds[-1] - bounds[0]))


# Backslash first: the escapes the later replacements add must not be escaped again.
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_COPY_NULL = "\\N"


class _CopyStream(io.RawIOBase):
    """A file object for ``COPY ... FROM STDIN`` whose bytes are the COPY text format rendered
    from the delivery's batches (:func:`copy_text`) by a producer thread, at most ``depth``
    batches ahead: rendering (Arrow, the row hash) overlaps the server's parsing, and memory
    stays a few batches whatever the delivery's size. An error in the producer is raised
    from ``read`` (COPY then fails and the caller's transaction rolls back).

    Text rather than CSV: with every value quoted, PostgreSQL parsed the CSV of a
    1M-row delivery in 6.0-7.9 s, the same rows as text in 5.1-5.7 s (2 cores)."""

    def __init__(self, names: list[str], batches: Iterable[dict[str, pa.Array]], depth: int = 1):
        super().__init__()
        self.rows = 0
        self.error: BaseException | None = None
        self._names = names
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._buf = memoryview(b"")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(batches),), daemon=True,
                                        name="datarail-copy")
        self._thread.start()

    def _produce(self, batches) -> None:
        try:
            for cols in batches:
                if self._stop.is_set():
                    return
                n = len(next(iter(cols.values())))
                if not n:
                    continue
                data = copy_text([cols[c] for c in self._names])
                del cols
                self._put((n, data))
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf):
            item = self._queue.get()
            if item is None:
                self._queue.put(None)
                return 0
            if isinstance(item, BaseException):
                self.error = item
                raise item
            n, data = item
            self.rows += n
            self._buf = memoryview(data).cast("B")
        k = min(len(b), len(self._buf))
        b[:k] = self._buf[:k]
        self._buf = self._buf[k:]
        return k

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        super().close()


def _copy(conn: sa.Connection, table: sa.Table, batches: Iterable[dict[str, pa.Array]], *,
          constants: dict[str, str | None] | None = None, freeze: bool = False) -> int:
    """DIALECT (PostgreSQL): ONE ``COPY`` of the whole delivery into ``table`` in the text
    format (:func:`copy_text`), streamed batch by batch (:class:`_CopyStream`); ``freeze``:
    the table was created or truncated in this transaction (see :func:`_bulk_fill_pg`).

    ``constants`` (the load metadata, the same in every row) are not sent row by row: they
    are the columns' defaults during the ``COPY`` (``ALTER TABLE ... SET DEFAULT`` in the
    caller's transaction, dropped again after), so the server parses each value once instead
    of once per row, and a third less text crosses the connection (1M rows of the bench's
    population: 4 of 14 columns, two of them timestamps). Returns the rows copied."""
    given = constants or {}
    sent = [c.name for c in table.columns if c.name not in given]
    defaults = {k: v for k, v in given.items() if v is not None}  # a column left out is NULL
    prep = conn.dialect.identifier_preparer
    target = _qualified(conn, table)
    cur = conn.connection.dbapi_connection.cursor()
    for name, value in defaults.items():
        # DDL takes no server-side parameters: psycopg2 quotes the value into the statement.
        cur.execute(f"ALTER TABLE {target} ALTER COLUMN {prep.quote(name)} SET DEFAULT "
                    f"CAST(%s AS {table.c[name].type.compile(dialect=conn.dialect)})", (value,))
    stream = _CopyStream(sent, batches)
    try:
        cur.copy_expert(f"COPY {target} ({', '.join(prep.quote(n) for n in sent)}) FROM STDIN"
                        + (" WITH (FREEZE)" if freeze else ""),
                        io.BufferedReader(stream, buffer_size=1 << 20), size=1 << 20)
        for name in defaults:
            cur.execute(f"ALTER TABLE {target} ALTER COLUMN {prep.quote(name)} DROP DEFAULT")
    except Exception as exc:
        if stream.error is not None:  # the rows could not be rendered: that error, not the driver's
            raise stream.error from exc
        raise
    finally:
        cur.close()
        stream.close()
    return stream.rows


def _qualified(conn: sa.Connection, table: sa.Table) -> str:
    """``schema.table`` (or ``table``), quoted for the connection's dialect."""
    prep = conn.dialect.identifier_preparer
    return f"{prep.quote_schema(table.schema)}.{prep.quote(table.name)}" if table.schema else prep.quote(table.name)


def _insert_sqlite(conn: sa.Connection, table: sa.Table, cols: dict[str, pa.Array], booleans: set[str]) -> None:
    """DIALECT (SQLite): executemany of the canonical texts; SQLite's column affinity turns the
    integer and float texts into numbers, booleans are stored as 1/0 like SQLAlchemy does."""
    names = [c.name for c in table.columns]
    values = []
    for n in names:
        arr = cols[n]
        if n in booleans:
            arr = pc.cast(pc.equal(arr, "true"), pa.int64())
        values.append(arr.to_pylist())
    q = conn.dialect.identifier_preparer.quote
    target = _qualified(conn, table)
    conn.exec_driver_sql(f"INSERT INTO {target} ({', '.join(q(n) for n in names)}) "
                         f"VALUES ({', '.join('?' for _ in names)})", list(zip(*values, strict=True)))


def fill(conn: sa.Connection, table: sa.Table, batches: Iterable[dict[str, pa.Array]],
         booleans: set[str] = frozenset(), constants: dict[str, str | None] | None = None) -> tuple[str, int]:
    """Put batches of canonical columns into ``table`` (a staging table, or the current table
    itself when it is empty), with ``constants`` (column -> canonical text: the load metadata)
    in every row; returns the method used and the rows written."""
    constants = constants or {}
    if conn.dialect.name == "postgresql":
        rows = _copy(conn, table, batches, constants=constants)
        return ("copy" if rows else "none"), rows
    rows = 0
    for cols in batches:
        n = len(next(iter(cols.values())))
        if n:
            same = {k: pa.repeat(pa.scalar(v, type=pa.string()), n) for k, v in constants.items()}
            _insert_sqlite(conn, table, {**cols, **same}, booleans)
            rows += n
    return ("insert" if rows else "none"), rows


def _bulk_fill_pg(conn: sa.Connection, table: sa.Table, batches: Iterable[dict[str, pa.Array]],
                  constants: dict[str, str | None]) -> tuple[str, int]:
    """DIALECT (PostgreSQL): fill an EMPTY table with one ``COPY``, inside the caller's
    transaction, the way a bulk load is done:

    - ``TRUNCATE`` first (the table is empty: nothing is lost), so that ``COPY ... FREEZE``
      may write the rows already frozen and visible: the first reader after the load then
      does not rewrite every page to set hint bits, nor does the next VACUUM;
    - the table's indexes and primary key are dropped and built again after the ``COPY``
      (one sort each instead of a B-tree insert per row: 1M rows 5.3-5.8 s -> 4.7-4.9 s here).
      A duplicate key fails the primary key's build, and the transaction rolls back as the
      ``COPY`` itself would have.

    Everything is transactional: a failure leaves the empty table with its indexes."""
    name = _qualified(conn, table)
    reg = {"t": name}
    constraints = conn.execute(sa.text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"), reg).all()
    indexes = conn.execute(sa.text(
        "SELECT CAST(i.indexrelid AS regclass)::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = CAST(:t AS regclass) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"), reg).all()
    q = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"TRUNCATE {name}")
    for index, _ in indexes:
        conn.exec_driver_sql(f"DROP INDEX {index}")
    for con, _ in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {q(con)}")
    rows = _copy(conn, table, batches, constants=constants, freeze=True)
    for con, definition in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD CONSTRAINT {q(con)} {definition}")
    for _, definition in indexes:
        conn.exec_driver_sql(definition)
    return ("copy" if rows else "none"), rows


def _is_empty(conn: sa.Connection, *tables: sa.Table) -> bool:
    return all(conn.execute(sa.select(sa.literal(1)).select_from(t).limit(1)).first() is None for t in tables)


def merge(conn: sa.Connection, resource: Resource, ods: sa.Table, hist: sa.Table,
          batches: Iterable[dict[str, pa.Array]], keep_keys: list[tuple], *, snapshot: bool,
          params: dict, late_possible: bool = True,
          constants: dict[str, str | None] | None = None) -> tuple[MergeStats, str]:
    """Merge a delivery (batches of canonical text columns: the fields and ``_row_hash``, see
    :mod:`warehouse.rows`; ``constants``: the load metadata columns, canonical text, the same
    for every row) into current + history, inside the caller's transaction.
    ``keep_keys``: keys delivered but quarantined (snapshot sources keep their current
    version). ``params``: vf, run, k, now. ``late_possible``: an interval after this one is
    loaded (a backfill), so versions may be late; when False no version starts or ends after
    ``:vf`` and the late steps are skipped. Returns the stats and the staging method."""
    t0 = time.perf_counter()
    booleans = {f.name for f in resource.fields if f.type == "boolean"}
    if conn.dialect.name == "postgresql":
        # DIALECT: one load of a resource at a time (two would each merge against a state the
        # other is changing; the daily merge also updates by ctid, see MergeSQL.forward):
        # other writers wait for this transaction, readers (base builds, publishing) do not.
        # SQLite serializes every writer already.
        conn.exec_driver_sql(f"LOCK TABLE {_qualified(conn, ods)} IN SHARE ROW EXCLUSIVE MODE")
    compress_wal(conn)
    if _is_empty(conn, ods, hist):
        # First load of the resource (or after a reset): every delivered row is new, which is
        # what the merge would conclude row by row; write them straight into the current table
        # (one COPY on PostgreSQL), the same rows and metadata, half the work.
        if conn.dialect.name == "postgresql":
            method, rows = _bulk_fill_pg(conn, ods, batches, constants)
        else:
            method, rows = fill(conn, ods, batches, booleans, constants)
        log.info("%s: first load, %d rows written by %s in %.2f s", resource.code, rows, method,
                 time.perf_counter() - t0)
        return MergeStats(rows_in=rows, inserted=rows, updated=0, unchanged=0, late=0, deleted=0), (
            f"{method}-direct" if rows else method)
    stage, keep = _stage_tables(conn, resource, ods)
    method, _ = fill(conn, stage, batches, booleans, constants)
    t_staged = time.perf_counter()
    if snapshot and keep_keys:
        conn.execute(keep.insert(), [dict(zip(resource.primary_key, k, strict=True)) for k in keep_keys])
    sql = MergeSQL(resource, ods, hist, conn.dialect)
    if conn.dialect.name == "postgresql":
        # DIALECT: fresh statistics, or the planner guesses the temp tables' size; and
        # planner settings for this transaction only: a delivery of changes probes the
        # primary key instead of scanning the current rows (price_reads_in_memory), and JIT
        # compiling costs more than these statements run. A whole snapshot still gets hash
        # joins: the costs decide, with true row counts.
        conn.exec_driver_sql(f"ANALYZE {STAGE}")
        conn.exec_driver_sql(f"ANALYZE {KEEP}")
        price_reads_in_memory(conn)
        conn.exec_driver_sql("SET LOCAL jit = off")
    deleted = 0
    if conn.dialect.name == "postgresql" and not late_possible:
        # DIALECT: the daily case on PostgreSQL: one statement, counts from its own results.
        rows_in = conn.execute(sa.text(f"SELECT COUNT(*) FROM {STAGE}")).scalar_one()
        out = conn.execute(_binds(sql.forward(snapshot)), params).one()
        updated, inserted = int(out[0]), int(out[1])
        deleted = int(out[4]) if snapshot else 0
        for t in (stage, keep):
            t.drop(conn)
        log.info("%s: staged %d rows by %s in %.2f s, merged in %.2f s", resource.code, rows_in, method,
                 t_staged - t0, time.perf_counter() - t_staged)
        return MergeStats(rows_in=rows_in, inserted=inserted, updated=updated, unchanged=rows_in - inserted - updated,
                          late=0, deleted=deleted), method
    counts = conn.execute(_binds(sql.classify()), params).mappings().one()
    rows_in = int(counts["rows_in"] or 0)
    unchanged, updated, late = (int(counts[k] or 0) for k in ("unchanged", "updated", "late"))
    if conn.dialect.name == "postgresql":
        # DIALECT: one set-based statement on PostgreSQL.
        out = conn.execute(_binds(sql.fused(snapshot)), params).one()
        if snapshot:
            deleted = int(out[4])
    else:
        # DIALECT: SQLite runs the same steps one by one (the order matters here: each step
        # is written against the state before the merge, and later steps only see rows the
        # earlier ones could not have touched).
        for stmt in (*(sql.late_steps() if late_possible else []), sql.supersede(), sql.journal(), sql.upsert()):
            conn.execute(_binds(stmt), params)
        if snapshot:
            conn.execute(_binds(sql.close_deleted()), params)
            deleted = conn.execute(_binds(sql.delete()), params).rowcount or 0
    for t in (stage, keep):
        t.drop(conn)
    log.info("%s: staged %d rows by %s in %.2f s, merged in %.2f s", resource.code, rows_in, method,
             t_staged - t0, time.perf_counter() - t_staged)
    stats = MergeStats(rows_in=rows_in, inserted=rows_in - unchanged - updated - late, updated=updated,
                       unchanged=unchanged, late=late, deleted=deleted)
    return stats, method
