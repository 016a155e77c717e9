"""Run the SQL models of ``warehouse_sql/base/`` in dependency order, fully or incrementally,
and record builds and lineage.

A model is one file holding one SELECT, written as a small Jinja template, with a header the
runner reads::

    -- target: base.population
    -- key: resident_id
    -- sources: household_register(resident_id), marriage_registration(male_id, female_id), ...

- ``target``: ``base.<name>`` (a base library table), or ``quality.conflicts`` (a conflict
  model, see below).
- ``key``: the target's subject column. With it, and a key column per source
  (``table(col, ...)``: the source columns holding that subject), the model can be rebuilt
  incrementally: only subjects touched by loads since the last build are recomputed.
- ``sources``: ods tables (or ``base.<name>`` of another model: that one runs first, and a
  model reading a base table is always rebuilt in full).
- ``incremental: no`` opts out (e.g. a model whose rows depend on the run date).
- ``plan: merge``: the model is a per-subject merge of sources that are all read in full
  by a full build, every join and aggregation on the subject; its full builds on
  PostgreSQL read the sources in subject order and merge them instead of hashing them
  (:func:`_pg_merge_plan`).

Template functions: ``{{ source('household_register') }}`` (the ods table; the as-of view of
it for :func:`warehouse.history.asof`), ``{{ in_scope('h.resident_id') }}`` (true, or "in the
keys to rebuild"), ``{{ code('household_register') }}`` (the resource code as a literal),
``{{ pick('name', 'hr:household_register', 'idc:identity_card') }}`` and
``{{ src('m', 'marriage_registration', 'marital_status', present='m.person_id') }}`` (an
attribute with the resource that supplied it and when: ``<attr>_src``, ``<attr>_src_at``).

Conflict models (``target: quality.conflicts``) select observations, one row per source
record: ``resource, subject_id, <attribute>...`` (NULL where the source does not know the
attribute). The runner compares every source's value with the value of the resource the
catalog declares authoritative for ``<library>.<attribute>`` (``Resource.authoritative_for``;
the header's ``authority:`` table when the catalog declares none) and keeps the disagreements
in ``quality.conflicts``, attributed to that resource and its unit. Conflicts do not open
tickets here: the quality loop reads the table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import jinja2
import sqlalchemy as sa

from catalog.models import Catalog
from datarail.errors import WarehouseError
from datarail.interval import Interval
from warehouse.engine import compress_wal, price_reads_in_memory, transaction
from warehouse.sqlfiles import SQL_ROOT, statements
from warehouse.tables import TYPES, changes_name, ensure_ods, history_name, ods_table

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^--\s*(target|key|sources|library|attributes|authority|incremental|plan):\s*(.+)$", re.M)
_SOURCE = re.compile(r"\s*([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?)\s*(?:\(([^)]*)\))?\s*(?:,|$)")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,40}$")
SCOPE = "_scope_keys"
SCOPE_ROWS = "_scope_rows"  # an incremental build's new rows, before they replace the old ones
CONFLICTS = "quality.conflicts"
# Above this share of the target's rows an incremental build costs more than a full one.
INCREMENTAL_MAX_SHARE = 0.25
# ... and up to this many subjects it is incremental (and probes, below) whatever the shares.
INCREMENTAL_MIN_KEYS = 1000
# Up to this share of the subjects (rows of the model's first source) an incremental build
# on PostgreSQL probes indexes only (``_pg_probe``); above it the planner may scan. At 5M
# residents probing 1% beat scanning by 2-3x on the 1.2-1.5M-row sources; scanning a source
# costs about as much as probing 2-5% of its keys.
PROBE_MAX_SHARE = 0.02
# PostgreSQL work_mem of a build transaction (one sort / hash may use this much).
BUILD_WORK_MEM = os.environ.get("DATARAIL_BUILD_WORK_MEM", "1GB")
if not re.match(r"^\d+\s*(kB|MB|GB)$", BUILD_WORK_MEM):
    raise WarehouseError(f"DATARAIL_BUILD_WORK_MEM={BUILD_WORK_MEM!r}: give e.g. 256MB or 1GB")
# PostgreSQL full builds of big keyed models run on this many connections at once; 1 turns it
# off. Below PARALLEL_MIN_ROWS source rows: one CTAS.
BUILD_PARALLEL = int(os.environ.get("DATARAIL_BUILD_PARALLEL", str(min(4, os.cpu_count() or 1))))
PARALLEL_MIN_ROWS = 200_000
# ... as key-range slices, this many per connection, taken from a queue: sources rarely cover
# the key range evenly (at 5M residents the insurance, degree and marriage rows all sit in
# the lower half), so a connection that finishes a light slice takes the next one.
SLICES_PER_CONNECTION = 2
# PostgreSQL incremental builds of at least this many subjects compute the new rows in
# BUILD_PARALLEL connections at once while the build's own deletes the old ones (below it,
# opening the connections costs more than it saves).
PARALLEL_MIN_KEYS = 20_000
# Fault-injection points for the atomicity tests (name -> callable(conn)); never set in production.
HOOKS: dict = {}


@dataclass(frozen=True)
class Source:
    """One input of a model: an ods table (by catalog table name) or another model's target."""

    table: str
    keys: tuple[str, ...] = ()

    @property
    def is_base(self) -> bool:
        return "." in self.table


@dataclass(frozen=True)
class Model:
    """A parsed model file."""

    name: str
    text: str
    target: str
    key: str | None
    sources: tuple[Source, ...]
    library: str | None = None
    attributes: tuple[str, ...] = ()
    authority: str | None = None
    incremental: bool = True
    depends: tuple[str, ...] = field(default=())
    plan: str | None = None

    @property
    def ident(self) -> str:
        """What builds and lineage are recorded under: the target, or for a conflict model
        the target and its library (``quality.conflicts.population``)."""
        return f"{self.target}.{self.library}" if self.is_conflicts else self.target

    @property
    def is_conflicts(self) -> bool:
        return self.target == CONFLICTS

    @cached_property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def can_increment(self) -> bool:
        return bool(self.incremental and self.key and self.sources
                    and all(not s.is_base and s.keys for s in self.sources))

    @property
    def schema(self) -> str:
        return self.target.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.target.split(".", 1)[1]


def parse_model(path: Path) -> Model:
    """Read one model file and its header."""
    text = path.read_text(encoding="utf-8")
    header = {k: v.strip() for k, v in _HEADER.findall(text)}
    if "target" not in header:
        raise WarehouseError(f"{path.name}: missing '-- target:' header")
    target = header["target"]
    if not re.match(r"^(base\.[a-z][a-z0-9_]*|quality\.conflicts)$", target):
        raise WarehouseError(f"{path.name}: target {target!r} must be base.<name> or {CONFLICTS}")
    sources = tuple(Source(m.group(1), tuple(k.strip() for k in (m.group(2) or "").split(",") if k.strip()))
                    for m in _SOURCE.finditer(header.get("sources", "")) if m.group(1))
    model = Model(name=f"base/{path.name}", text=text, target=target, key=header.get("key"), sources=sources,
                  library=header.get("library"),
                  attributes=tuple(a.strip() for a in header.get("attributes", "").split(",") if a.strip()),
                  authority=header.get("authority"),
                  incremental=header.get("incremental", "yes").lower() not in ("no", "false"),
                  depends=tuple(s.table for s in sources if s.is_base), plan=header.get("plan"))
    if model.plan not in (None, "merge"):
        raise WarehouseError(f"{path.name}: plan {model.plan!r}: the only plan a model may ask for is 'merge'")
    if model.is_conflicts and not (model.library and model.attributes and model.key):
        raise WarehouseError(f"{path.name}: a conflict model needs library, key and attributes headers")
    return model


def base_models() -> list[Model]:
    """The models of ``warehouse_sql/base/`` in run order: file-name order, moved after the
    models whose targets they read."""
    models = [parse_model(p) for p in sorted((SQL_ROOT / "base").glob("*.sql"))]
    done: list[Model] = []
    built: set[str] = set()
    pending = list(models)
    while pending:
        ready = [m for m in pending if all(d in built for d in m.depends)]
        if not ready:
            raise WarehouseError("base models depend on each other in a cycle or on an unknown target: "
                                 + ", ".join(f"{m.name} -> {list(m.depends)}" for m in pending))
        m = ready[0]
        done.append(m)
        built.add(m.target)
        pending.remove(m)
    return done


def model_for(target: str) -> Model:
    """The model building ``target`` (``base.population``, or ``quality.conflicts.population``)."""
    for m in base_models():
        if target in (m.target, m.ident) and not (m.is_conflicts and target == CONFLICTS):
            return m
    raise WarehouseError(f"no base model builds {target}", hint="see warehouse_sql/base/")


# -- rendering ------------------------------------------------------------------------------

class Renderer:
    """Renders model templates for one dialect and one mode:

    - ``scoped``: ``in_scope(expr)`` limits to the keys in the temp table ``_scope_keys``;
    - ``asof``: ``source(t)`` is ``t`` as it was at ``:asof_at`` (current + history versions),
      and a base source is its model rendered as of that time."""

    def __init__(self, catalog: Catalog, dialect: sa.Dialect, *, scoped: bool = False, asof: bool = False,
                 key_range: tuple[bool, bool] | None = None):
        self.catalog, self.dialect, self.scoped, self.asof = catalog, dialect, scoped, asof
        # a parallel full build's slice: (has a lower bound, has an upper bound), bound as
        # :slice_lo / :slice_hi
        self.key_range = key_range
        self.q = dialect.identifier_preparer.quote
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                      keep_trailing_newline=True)

    def render(self, model: Model) -> str:
        body = "\n".join(ln for ln in model.text.splitlines() if not ln.lstrip().startswith("--"))
        self._asof_ctes: dict[str, str] = {}
        out = self.env.from_string(body).render(source=self.source, in_scope=self.in_scope, code=self.code,
                                                pick=self.pick, src=self.src)
        stmts = statements(out)
        if len(stmts) != 1:
            raise WarehouseError(f"{model.name}: a model holds exactly one SELECT, found {len(stmts)} statements")
        sql = stmts[0]
        if self._asof_ctes:
            # The as-of views go first in the model's WITH list. NOT MATERIALIZED lets
            # PostgreSQL push the key filter into them instead of reading whole tables.
            ctes = ", ".join(f"{name} AS NOT MATERIALIZED ({body})" for name, body in self._asof_ctes.items())
            sql = (re.sub(r"^\s*WITH\s", f"WITH {ctes}, ", sql, count=1, flags=re.I)
                   if re.match(r"^\s*WITH\s", sql, flags=re.I) else f"WITH {ctes} {sql}")
        return sql

    def source(self, table: str) -> str:
        if "." in table:
            if not self.asof:
                schema, name = table.split(".", 1)
                return f"{schema}.{self.q(name)}"
            name = "asof_" + table.replace(".", "_")
            if name not in self._asof_ctes:
                inner = Renderer(self.catalog, self.dialect, scoped=False, asof=True).render(model_for(table))
                self._asof_ctes[name] = inner
            return name
        resource = self._resource(table)
        if not self.asof:
            return f"ods.{self.q(resource.table)}"
        name = f"asof_{resource.table}"
        if name not in self._asof_ctes:
            cols = ", ".join(self.q(c.name) for c in ods_table(resource).columns)
            self._asof_ctes[name] = (
                f"SELECT {cols} FROM ods.{self.q(resource.table)} WHERE _valid_from < :asof_at "
                f"UNION ALL SELECT {cols} FROM ods.{self.q(resource.table + '_history')} "
                f"WHERE _valid_from < :asof_at AND _valid_to >= :asof_at")
        return name

    def in_scope(self, expr: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$", expr):
            raise WarehouseError(f"in_scope({expr!r}): give a column, optionally qualified")
        if self.key_range:
            # the subjects of one key-range slice of a parallel full build, [lo, hi): a plain
            # range the sources' subject indexes serve (an "IS NULL OR" made them filters over
            # the whole index: 10.8 s -> 14.3 s for a 2.5M-subject slice). A row whose subject
            # is NULL is in no slice: a range partition cannot hold it.
            lo, hi = self.key_range
            conds = ([f"{expr} >= :slice_lo"] if lo else []) + ([f"{expr} < :slice_hi"] if hi else [])
            return "(" + " AND ".join(conds) + ")" if conds else "1 = 1"
        return f"{expr} IN (SELECT key FROM {SCOPE})" if self.scoped else "1 = 1"

    def code(self, table: str) -> str:
        code = self._resource(table).code
        if not _CODE.match(code):  # checked by the catalog; a literal must never carry a quote
            raise WarehouseError(f"resource code {code!r} cannot be a SQL literal")
        return f"'{code}'"

    def pick(self, attr: str, *choices: str) -> str:
        """``attr`` from the first source that has it, with that source and its version start."""
        pairs = [c.split(":", 1) for c in choices]
        value = "COALESCE(" + ", ".join(f"{a}.{attr}" for a, _ in pairs) + ")"
        which = " ".join(f"WHEN {a}.{attr} IS NOT NULL THEN {self.code(t)}" for a, t in pairs)
        when = " ".join(f"WHEN {a}.{attr} IS NOT NULL THEN {a}._valid_from" for a, _ in pairs)
        return f"{value} AS {attr}, CASE {which} END AS {attr}_src, CASE {when} END AS {attr}_src_at"

    def src(self, alias: str, table: str, attr: str, present: str) -> str:
        """The resource and version start behind an attribute group from one source."""
        return (f"CASE WHEN {present} IS NOT NULL THEN {self.code(table)} END AS {attr}_src, "
                f"CASE WHEN {present} IS NOT NULL THEN {alias}._valid_from END AS {attr}_src_at")

    def _resource(self, table: str):
        try:
            return self.catalog.resource_by_table(table)
        except KeyError:
            raise WarehouseError(f"a base model reads ods.{table}, which no catalog resource loads",
                                 hint="fix the model's sources or add the resource to the catalog") from None


# -- building -------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _typed(stmt: str) -> sa.TextClause:
    binds = [sa.bindparam(n, type_=t) for n, t in (("asof_at", sa.DateTime()), ("since", sa.DateTime()),
                                                  ("run_date", sa.Date()), ("now", sa.DateTime()))
             if f":{n}" in stmt]
    return sa.text(stmt).bindparams(*binds)


def _source_codes(model: Model, catalog: Catalog) -> list[str]:
    return [catalog.resource_by_table(s.table).code for s in model.sources if not s.is_base]


def _loads_of(conn: sa.Connection, codes: list[str]) -> list[dict]:
    if not codes:
        return []
    stmt = (sa.text("SELECT load_id, resource, method, loaded_at FROM meta.loads WHERE resource IN :codes")
            .bindparams(sa.bindparam("codes", expanding=True))
            .columns(sa.column("load_id"), sa.column("resource"), sa.column("method"),
                     sa.column("loaded_at", sa.DateTime())))
    rows = conn.execute(stmt, {"codes": codes}).mappings()
    return [dict(r) for r in rows]


def _table_exists(conn: sa.Connection, schema: str, name: str) -> bool:
    return sa.inspect(conn).has_table(name, schema=schema)


def _plan(conn: sa.Connection, model: Model, catalog: Catalog, full: bool) -> tuple[str, list[dict], str]:
    """(mode, pending loads, reason). Loads are listed BEFORE the build reads anything, so a
    load committing meanwhile stays pending for the next build instead of being lost."""
    loads = _loads_of(conn, _source_codes(model, catalog))
    if full:
        return "full", loads, "requested"
    if not model.can_increment:
        return "full", loads, "model is not incremental"
    last = conn.execute(sa.text(
        "SELECT model_checksum, row_count FROM meta.builds WHERE target = :t ORDER BY finished_at DESC LIMIT 1"),
        {"t": model.ident}).first()
    if last is None:
        return "full", loads, "first build"
    if last[0] != model.checksum:
        return "full", loads, "model changed"
    if not model.is_conflicts and not _table_exists(conn, model.schema, model.table):
        return "full", loads, "target missing"
    consumed = set(conn.execute(sa.text("SELECT load_id FROM meta.lineage_loads WHERE target = :t"),
                                {"t": model.ident}).scalars())
    return "incremental", [ld for ld in loads if ld["load_id"] not in consumed], "up to date"


def _fill_scope(conn: sa.Connection, model: Model, catalog: Catalog, pending: list[dict]) -> int:
    """Subjects touched by the pending loads: for every source column declared to hold the
    subject, the subjects of the versions those loads closed (history ``_closed_at``: updated,
    deleted; the new version of an updated row has the same key) and of the rows they wrote
    without closing one (the change journal ``ods.<table>_changes``: new keys, reruns; joined
    back to the current row unless the column is the key). A first load into an empty table
    (method ``*-direct``) journals nothing: its scope is every current row of the table."""
    first_key = next(s for s in model.sources if s.keys)
    key_type = TYPES[catalog.resource_by_table(first_key.table).field(first_key.keys[0]).type]()
    scope = sa.Table(SCOPE, sa.MetaData(), sa.Column("key", key_type, primary_key=True), prefixes=["TEMPORARY"])
    scope.drop(conn, checkfirst=True)
    scope.create(conn)
    q = conn.dialect.identifier_preparer.quote
    since: dict[str, datetime] = {}
    direct: set[str] = set()
    for ld in pending:
        since[ld["resource"]] = min(since.get(ld["resource"], ld["loaded_at"]), ld["loaded_at"])
        if ld["method"].endswith("-direct"):
            direct.add(ld["resource"])
    # One statement, deduplicated by UNION; each branch reads a change-capture index (journal
    # and history ``_loaded_at`` / ``_closed_at``), so its cost follows the change, not the table.
    branches, params = [], {}
    for s in model.sources:
        res = catalog.resource_by_table(s.table)
        if res.code not in since:
            continue
        ods, hist, journal = (f"ods.{q(t)}" for t in (res.table, history_name(res), changes_name(res)))
        if res.code in direct:
            branches += [f"SELECT {q(col)} FROM {ods} WHERE {q(col)} IS NOT NULL" for col in s.keys]
            continue
        params[f"since_{len(params)}"] = since[res.code]
        p = f":since_{len(params) - 1}"
        on = " AND ".join(f"o.{q(k)} = c.{q(k)}" for k in res.primary_key)
        for col in s.keys:
            # the closed versions' subjects (updated, deleted)
            branches.append(f"SELECT {q(col)} FROM {hist} WHERE _closed_at >= {p} AND {q(col)} IS NOT NULL")
            if list(res.primary_key) == [col]:  # the subject is the key: the keys are the subjects
                branches.append(f"SELECT {q(col)} FROM {journal} WHERE _loaded_at >= {p}")
                continue
            # else the current rows' subjects: of the keys journaled, and of the keys whose
            # previous version was closed (an update may have changed the subject column)
            for changed, ts in ((journal, "_loaded_at"), (hist, "_closed_at")):
                branches.append(f"SELECT o.{q(col)} FROM {changed} c JOIN {ods} o ON {on} "
                                f"WHERE c.{ts} >= {p} AND o.{q(col)} IS NOT NULL")
    if branches:
        stmt = sa.text(f"INSERT INTO {SCOPE} (key) " + " UNION ".join(branches)).bindparams(
            *[sa.bindparam(n, type_=sa.DateTime()) for n in params])
        conn.execute(stmt, params)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {SCOPE}")  # DIALECT: fresh stats for the temp table
    return conn.execute(sa.text(f"SELECT COUNT(*) FROM {SCOPE}")).scalar_one()


def _build_table(conn: sa.Connection, model: Model, sql: str, params: dict, mode: str,
                 previous_rows: int = 0, scope: int = 0, cleanup: list[str] | None = None) -> int:
    q = conn.dialect.identifier_preparer.quote
    target = f"{model.schema}.{q(model.table)}"
    # DIALECT: a table built in parallel partitions (PostgreSQL) goes with its partitions.
    cascade = " CASCADE" if conn.dialect.name == "postgresql" else ""
    if mode == "full":
        # Build beside the live table, then swap inside the same transaction: readers keep the
        # old table until the commit, and a failure leaves it untouched.
        nxt = f"{model.schema}.{q('_next_' + model.table)}"
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {nxt}{cascade}"))
        created = conn.execute(_typed(f"CREATE TABLE {nxt} AS {sql}"), params).rowcount
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {target}{cascade}"))
        conn.execute(sa.text(f"ALTER TABLE {nxt} RENAME TO {q(model.table)}"))
        if model.key:
            t = sa.Table(model.table, sa.MetaData(), sa.Column(model.key), schema=model.schema)
            sa.Index(f"ix_{model.table}__{model.key}"[:63], t.c[model.key]).create(conn)
            _pg_analyze_key(conn, target, model.key)
        if created is not None and created >= 0:  # PostgreSQL reports it; SQLite does not
            return created
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {target}")).scalar_one()
    delete = sa.text(f"DELETE FROM {target} WHERE {q(model.key)} IN (SELECT key FROM {SCOPE})")
    parts = BUILD_PARALLEL if conn.dialect.name == "postgresql" else 1
    if parts > 1 and scope >= PARALLEL_MIN_KEYS and cleanup is not None:
        return previous_rows + _replace_in_parallel(conn, model, sql, params, parts, delete, cleanup)
    # The subjects' new rows first, into a temporary table, then delete + insert: reading the
    # sources while no page of the target is dirty yet. The other order had every source read
    # evict the DELETE's dirty pages (writes, WAL flushes): at 5M residents / 50k subjects the
    # scoped SELECT took 7-11 s that way against 5-6 s alone (loaded machine).
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {SCOPE_ROWS}"))
    conn.execute(_typed(f"CREATE TEMPORARY TABLE {SCOPE_ROWS} AS {sql}"), params)
    deleted = conn.execute(delete).rowcount
    # in key order: the target's index takes the new entries leaf after leaf
    inserted = conn.execute(sa.text(
        f"INSERT INTO {target} SELECT * FROM {SCOPE_ROWS} ORDER BY {q(model.key)}")).rowcount
    conn.execute(sa.text(f"DROP TABLE {SCOPE_ROWS}"))
    # Counting millions of rows again would cost more than the rebuild of a few subjects.
    return previous_rows - deleted + inserted


def _replace_in_parallel(conn: sa.Connection, model: Model, sql: str, params: dict, parts: int,
                         delete: sa.TextClause, cleanup: list[str]) -> int:
    """DIALECT (PostgreSQL): an incremental build of many subjects. ``parts`` other
    connections each compute the new rows of every ``parts``-th subject of the scope (keys
    passed as an array) into an unlogged table ``base._scope_rows_<token>_<k>``, while the build's own
    connection deletes the old rows; then, in the build's transaction, the new rows go in.
    The tables are named in ``cleanup``: :func:`build_model` drops them after its transaction
    (dropping them inside it would be undone by a rollback; from another connection before
    its end, it would wait on the build's own locks). Only the build's transaction touches
    the live table, so a failure anywhere leaves it as it was. The parts read
    the sources in their own transactions, as the statements of a READ COMMITTED build
    would: a load committed meanwhile stays pending for the next build. Returns
    inserted - deleted."""
    q = conn.dialect.identifier_preparer.quote
    engine = conn.engine
    keys = conn.execute(sa.text(f"SELECT key FROM {SCOPE} ORDER BY key")).scalars().all()
    seqscan = conn.exec_driver_sql("SHOW enable_seqscan").scalar()  # the build's choice (_pg_probe)
    token = uuid.uuid4().hex[:8]
    names = [f"base.{q(f'_scope_rows_{model.table}_{token}_{k}')}" for k in range(parts)]

    def fill(k: int) -> None:
        with transaction(engine) as part:
            _pg_settings(part)
            _pg_probe(part, seqscan == "off")
            price_reads_in_memory(part)
            # every parts-th key: sources often cover only part of the key range (at 5M
            # residents, key ranges gave one part twice the other's work)
            part.execute(sa.text(f"CREATE TEMPORARY TABLE {SCOPE} ON COMMIT DROP AS SELECT unnest(:keys) AS key"),
                         {"keys": keys[k::parts]})
            part.exec_driver_sql(f"ALTER TABLE {SCOPE} ADD PRIMARY KEY (key)")
            part.exec_driver_sql(f"ANALYZE {SCOPE}")
            part.execute(_typed(f"CREATE UNLOGGED TABLE {names[k]} AS {sql}"), params)

    cleanup.extend(names)  # dropped once the build's transaction is over, whatever its outcome
    with ThreadPoolExecutor(max_workers=parts) as pool:
        futures = [pool.submit(fill, k) for k in range(parts)]
        deleted = conn.execute(delete).rowcount  # meanwhile, on the build's connection
        for f in futures:
            f.result()
    union = " UNION ALL ".join(f"SELECT * FROM {n}" for n in names)
    inserted = conn.execute(sa.text(
        f"INSERT INTO {model.schema}.{q(model.table)} SELECT * FROM ({union}) AS n "
        f"ORDER BY {q(model.key)}")).rowcount
    return inserted - deleted


def _authorities(model: Model, catalog: Catalog) -> dict[str, list[str]]:
    """resource code -> attributes it is authoritative for (catalog first, header default)."""
    out: dict[str, list[str]] = {}
    for attr in model.attributes:
        res = catalog.authority(f"{model.library}.{attr}")
        if res is None and model.authority:
            res = catalog.resource_by_table(model.authority)
        if res is None:
            raise WarehouseError(f"{model.name}: no authoritative source for {model.library}.{attr}",
                                 hint="declare authoritative_for on a catalog resource or authority: in the model")
        out.setdefault(res.code, []).append(attr)
    return out


def _build_conflicts(conn: sa.Connection, model: Model, catalog: Catalog, obs: str, params: dict,
                     mode: str, interval: Interval) -> int:
    q = conn.dialect.identifier_preparer.quote
    md = sa.MetaData()
    key_cols = ("library", "subject_id", "attribute", "other_resource", "other_value")
    new = sa.Table("_conflicts_new", md,
                   *[sa.Column(c, sa.Text, primary_key=c in key_cols) for c in (*key_cols, "resource", "unit",
                                                                                 "authority_value")],
                   prefixes=["TEMPORARY"])
    new.drop(conn, checkfirst=True)
    new.create(conn)
    for code, attrs in _authorities(model, catalog).items():
        res = catalog.resource(code)
        differs = " OR ".join(f"o.{q(a)} <> a.{q(a)}" for a in attrs)
        cols = ", ".join(f"o.{q(a)} AS {q('o_' + a)}, a.{q(a)} AS {q('a_' + a)}" for a in attrs)
        conn.execute(sa.text("DROP TABLE IF EXISTS _obs_diff"))
        # One join of every other source against the authority, all attributes at once; the
        # disagreements are few, so exploding them per attribute afterwards is cheap.
        conn.execute(_typed(
            f"CREATE TEMPORARY TABLE _obs_diff AS SELECT o.subject_id, o.resource AS other_resource, {cols} "
            f"FROM ({obs}) o JOIN ({obs}) a ON a.subject_id = o.subject_id "
            f"WHERE a.resource = :authority AND o.resource <> :authority AND ({differs})"),
            {**params, "authority": code})
        for a in attrs:
            conn.execute(sa.text(
                f"INSERT INTO _conflicts_new (library, subject_id, attribute, other_resource, other_value, resource, "
                f"unit, authority_value) SELECT DISTINCT :library, subject_id, :attribute, other_resource, "
                f"CAST({q('o_' + a)} AS TEXT), :authority, :unit, CAST({q('a_' + a)} AS TEXT) FROM _obs_diff "
                f"WHERE {q('o_' + a)} <> {q('a_' + a)}"),
                {"library": model.library, "attribute": a, "authority": code, "unit": res.unit})
        conn.execute(sa.text("DROP TABLE _obs_diff"))
    match = ("n.library = c.library AND n.subject_id = c.subject_id AND n.attribute = c.attribute "
             "AND n.other_resource = c.other_resource AND n.other_value = c.other_value")
    lib = {"library": model.library, "k": interval.key}
    in_scope = f" AND c.subject_id IN (SELECT key FROM {SCOPE})" if mode == "incremental" else ""
    # A conflict is its key plus the authority's value: one whose values changed is a new
    # disagreement. Unchanged conflicts keep their first interval across rebuilds, so an
    # unchanged state rebuilds to an identical table and the quality loop can age them.
    conn.execute(sa.text(
        f"DELETE FROM {CONFLICTS} AS c WHERE c.library = :library{in_scope} AND NOT EXISTS (SELECT 1 FROM "
        f"_conflicts_new n WHERE {match} AND n.resource = c.resource AND n.unit = c.unit "
        f"AND n.authority_value = c.authority_value)"), lib)
    # Every conflict still in the table holds as of this build (an incremental build leaves
    # untouched subjects as they were, which is their state now).
    conn.execute(sa.text(f"UPDATE {CONFLICTS} SET last_interval = :k WHERE library = :library "
                         f"AND last_interval <> :k"), lib)
    conn.execute(sa.text(
        f"INSERT INTO {CONFLICTS} (library, subject_id, attribute, other_resource, other_value, resource, unit, "
        f"authority_value, first_interval, last_interval) SELECT n.library, n.subject_id, n.attribute, "
        f"n.other_resource, n.other_value, n.resource, n.unit, n.authority_value, :k, :k FROM _conflicts_new n "
        f"WHERE NOT EXISTS (SELECT 1 FROM {CONFLICTS} c WHERE {match})"), lib)
    new.drop(conn)
    return conn.execute(sa.text(f"SELECT COUNT(*) FROM {CONFLICTS} WHERE library = :l"),
                        {"l": model.library}).scalar_one()


def _record(conn: sa.Connection, model: Model, catalog: Catalog, interval: Interval, *, mode: str,
            consumed: list[dict], scope: int | None, rows: int, started: datetime, t0: float) -> dict:
    finished = _now()
    duration = round(time.perf_counter() - t0, 3)
    conn.execute(sa.text(
        "INSERT INTO meta.builds (build_id, target, model, model_checksum, interval_key, mode, scope_keys, "
        "row_count, started_at, finished_at, duration_s) VALUES (:id, :t, :m, :c, :k, :mode, :scope, :rows, "
        ":started, :finished, :d)").bindparams(sa.bindparam("started", type_=sa.DateTime()),
                                              sa.bindparam("finished", type_=sa.DateTime())),
        {"id": uuid.uuid4().hex, "t": model.ident, "m": model.name, "c": model.checksum, "k": interval.key,
         "mode": mode, "scope": scope, "rows": rows, "started": started, "finished": finished, "d": duration})
    if mode == "full":
        conn.execute(sa.text("DELETE FROM meta.lineage_loads WHERE target = :t"), {"t": model.ident})
    if consumed:
        conn.execute(sa.text("INSERT INTO meta.lineage_loads (target, load_id) VALUES (:t, :l)"),
                     [{"t": model.ident, "l": ld["load_id"]} for ld in consumed])
    conn.execute(sa.text("DELETE FROM meta.lineage WHERE target = :t"), {"t": model.ident})
    for s in model.sources:
        if s.is_base:
            resource, key = s.table, interval.key
        else:
            resource = catalog.resource_by_table(s.table).code
            key = conn.execute(sa.text(
                "SELECT MAX(interval_key) FROM meta.runs WHERE resource = :r AND status = 'loaded'"),
                {"r": resource}).scalar() or ""
        conn.execute(sa.text("INSERT INTO meta.lineage (target, resource, interval_key, built_at) "
                             "VALUES (:t, :r, :k, :b)").bindparams(sa.bindparam("b", type_=sa.DateTime())),
                     {"t": model.ident, "r": resource, "k": key, "b": finished})
    return {"target": model.ident, "mode": mode, "scope_keys": scope, "rows": rows, "duration_s": duration}


FAR_FUTURE = datetime(9999, 12, 31)


def _prune_journals(conn: sa.Connection, catalog: Catalog, model: Model) -> dict[str, int]:
    """Retention of the change journals this model reads: an entry goes once every
    incremental model reading that table has consumed the load that wrote it, since only
    :func:`_fill_scope` reads the journal, and only from a model's earliest pending load on.

    For each of the model's ods sources, one DELETE of the entries older than the earliest
    load of that resource still pending for some reader (a reader that was never built does
    not count: its first build is full); none pending, every entry it can see. One
    statement, so one snapshot: a load committing meanwhile shows its journal rows and its
    ``meta.loads`` row together or neither (they commit in one transaction), and its rows
    stay until its readers consumed it. History is not touched (as-of queries need it).
    Journals are pruned in the order of their names, whatever the model's order of sources,
    so two builds pruning at the same time wait for each other instead of deadlocking.
    Returns {journal table: entries deleted}."""
    q = conn.dialect.identifier_preparer.quote
    pruned: dict[str, int] = {}
    incremental = [m for m in base_models() if m.can_increment]
    for table in sorted({s.table for s in model.sources if not s.is_base}):
        res = catalog.resource_by_table(table)
        readers = sorted({m.ident for m in incremental if any(o.table == table and not o.is_base for o in m.sources)})
        # pending for a reader: a reader built at least once that has not consumed the load
        stmt = sa.text(
            f"DELETE FROM ods.{q(changes_name(res))} WHERE _loaded_at < COALESCE(("
            "SELECT MIN(l.loaded_at) FROM meta.loads l WHERE l.resource = :r AND EXISTS ("
            "SELECT 1 FROM meta.builds b WHERE b.target IN :readers AND NOT EXISTS ("
            "SELECT 1 FROM meta.lineage_loads c WHERE c.target = b.target AND c.load_id = l.load_id))), :never)"
        ).bindparams(sa.bindparam("never", type_=sa.DateTime()), sa.bindparam("readers", expanding=True, type_=sa.String()))
        n = conn.execute(stmt, {"r": res.code, "never": FAR_FUTURE, "readers": readers}).rowcount
        if n:
            pruned[changes_name(res)] = n
    if pruned:
        log.info("%s: pruned consumed change-journal entries %s", model.ident, pruned)
    return pruned


_INDEXED: set[tuple[str, str]] = set()


def ensure_sources(engine: sa.Engine, catalog: Catalog, model: Model) -> None:
    """The model's ods sources exist (empty if never delivered), and every source column that
    holds the subject is indexed, so a scoped (incremental / as-of) build probes instead of
    scanning. Cheap after the first call per process."""
    md = sa.MetaData()
    for s in model.sources:
        if s.is_base:
            continue
        ods, _ = ensure_ods(engine, catalog.resource_by_table(s.table), md)
        cache_key = (engine.url.render_as_string(hide_password=True), s.table)
        if not s.keys or (cache_key[0], f"{s.table}:{','.join(s.keys)}") in _INDEXED:
            continue
        with transaction(engine) as conn:
            have = {tuple(ix["column_names"]) for ix in sa.inspect(conn).get_indexes(s.table, schema="ods")}
            have |= {tuple(sa.inspect(conn).get_pk_constraint(s.table, schema="ods")["constrained_columns"])}
            for col in s.keys:
                if not any(cols and cols[0] == col for cols in have):
                    sa.Index(f"ix_{s.table}__{col}"[:63], ods.c[col]).create(conn)
                    log.info("indexed ods.%s(%s) for scoped builds", s.table, col)
        _INDEXED.add((cache_key[0], f"{s.table}:{','.join(s.keys)}"))


def _pg_settings(conn: sa.Connection) -> None:
    # DIALECT: planner settings for this transaction only. Sorts and hash joins over millions
    # of rows spill to disk at the 4 MB default (5M residents: 44 s -> 33 s with 1 GB); JIT
    # compiling costs more than it saves here.
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'")
    conn.exec_driver_sql("SET LOCAL jit = off")
    # A build's commit does not wait for its WAL to reach the disk (0.4-0.6 s per commit of
    # a 5M-row build here). Safe for derived data: a crash can only lose the whole
    # transaction, and then the previous state remains with its meta.builds / lineage,
    # exactly what a failed build leaves; a later synchronous commit (a load, a publish)
    # flushes the build's WAL first, so nothing can depend on a lost build.
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    compress_wal(conn)  # an incremental build deletes and rewrites rows scattered over the table


def _pg_analyze_key(conn: sa.Connection, target: str, key: str) -> None:
    """DIALECT (PostgreSQL): statistics of the key column of a freshly built table (a
    CREATE TABLE AS has none). Without them the planner takes ``key IN (SELECT key FROM
    _scope_keys)`` to match every row and the next incremental build's DELETE scans the
    whole table (5,000,000 residents: 5-9 s instead of 0.6 s). Only the key column, from
    a small sample (3,000 rows: enough to see it is unique): about 0.2 s at 5M rows, where
    a default ANALYZE of every column read 30,000 rows per partition for seconds. The
    other columns are left to autovacuum."""
    if conn.dialect.name != "postgresql":
        return
    q = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql("SET LOCAL default_statistics_target = 10")
    conn.execute(sa.text(f"ANALYZE {target} ({q(key)})"))
    conn.exec_driver_sql("SET LOCAL default_statistics_target TO DEFAULT")


def _pg_probe(conn: sa.Connection, on: bool) -> None:
    """DIALECT (PostgreSQL): ``on``: index probes instead of sequential scans for the rest of
    this transaction; ``off``: the server's default again. A scoped build reads a few
    subjects and every source column holding the subject is indexed (:func:`ensure_sources`),
    but the default cost model, with the data in memory, rates scanning and hashing a whole
    table below probing it: at 5,000,000 residents and 50,000 subjects it scanned the
    marriage register (1.2M rows, twice) and the housing-fund accounts (1.5M) for ~1 s each
    where probes took ~0.4 s (EXPLAIN ANALYZE: bench/README.md). Scans stay possible where
    no index fits (the planner only penalises them)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off" if on else "SET LOCAL enable_seqscan TO DEFAULT")


def _pg_merge_plan(conn: sa.Connection, model: Model) -> None:
    """DIALECT (PostgreSQL): a full build of a ``plan: merge`` model reads every source row
    of every subject, and every source column holding the subject is indexed
    (:func:`ensure_sources`). Merging the sources in subject order streams them in constant
    memory; the default plan hashed them instead: hash tables of 1-5M rows (0.2-0.75 GB
    each) probed 5M times, whose cost swung 15-26 s between identical runs of one
    2.5M-subject partition here, where the merge plan took 10-11 s every time (EXPLAIN
    ANALYZE: bench/README.md). Hash joins and hash aggregation are therefore off for the
    transaction, and random access is priced as the in-memory access it is, so the planner
    reads a source through its subject index where the table is stored roughly in subject
    order (a source loaded in key order) and scans and sorts it where not."""
    if conn.dialect.name != "postgresql" or model.plan != "merge":
        return
    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.exec_driver_sql("SET LOCAL enable_hashagg = off")
    price_reads_in_memory(conn)


def _subjects(conn: sa.Connection, model: Model, catalog: Catalog) -> float:
    """DIALECT (PostgreSQL): about how many subjects the model has: the planner's row count
    of its first source (0 when never analyzed)."""
    first = catalog.resource_by_table(model.sources[0].table).table
    return max(conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                            {"t": f"ods.{first}"}).scalar() or 0, 0)


def _parallel_parts(engine: sa.Engine, catalog: Catalog, model: Model, full: bool) -> tuple[int, list[dict]] | None:
    """(parts, loads) when this build should be a parallel full build, else None: PostgreSQL,
    a table model whose every source is keyed (so ``in_scope`` can slice it), a full build,
    and a big first source. The loads are listed here, before any part reads a source."""
    if engine.dialect.name != "postgresql" or model.is_conflicts or not model.can_increment or BUILD_PARALLEL < 2:
        return None
    with engine.connect() as conn:
        mode, loads, _ = _plan(conn, model, catalog, full)
        size = _subjects(conn, model, catalog)
        conn.rollback()
    return (BUILD_PARALLEL, loads) if mode == "full" and size >= PARALLEL_MIN_ROWS else None


def _slice_bounds(conn: sa.Connection, catalog: Catalog, model: Model, slices: int) -> list:
    """DIALECT (PostgreSQL): up to ``slices - 1`` key values cutting the model's subjects
    (the keys of its first source) into slices of about equal size, from a block sample of
    about 100,000 keys (0.2 s at 5M rows)."""
    first = model.sources[0]
    table = f"ods.{conn.dialect.identifier_preparer.quote(catalog.resource_by_table(first.table).table)}"
    col = conn.dialect.identifier_preparer.quote(first.keys[0])
    size = _subjects(conn, model, catalog)
    pct = 100.0 if size <= 100_000 else max(0.1, 100.0 * 100_000 / size)
    fractions = [k / slices for k in range(1, slices)]
    bounds = conn.execute(sa.text(
        f"SELECT percentile_disc(CAST(:f AS float8[])) WITHIN GROUP (ORDER BY {col}) "
        f"FROM {table} TABLESAMPLE SYSTEM ({pct:.4f}) REPEATABLE (0)"), {"f": fractions}).scalar() or []
    return sorted({b for b in bounds if b is not None})


def _build_parts(engine: sa.Engine, catalog: Catalog, model: Model, params: dict,
                 parts: int) -> tuple[str, int, int]:
    """DIALECT (PostgreSQL): build ``base._next_<table>`` as a table partitioned by ranges of
    the key, ``parts`` connections computing the slices at the same time, each taking the
    next slice from a queue when done (the model's ``in_scope`` limited to the slice's
    subjects: sources are read through their subject index for that range only, where hash
    partitions had every part read every source whole, 29.6 s -> 24.2 s for two parts of
    5M residents). Each slice is a ``CREATE TABLE AS`` (PostgreSQL's bulk-insert path: a
    small ring of buffers, no free-space map), indexed, then attached (which checks its
    rows belong to the range). An ``INSERT`` into the partition instead went through the
    shared buffers and wrote the evicted pages itself: 30.5 s against 20.8 s for one
    2.5M-subject part alone. Nothing is visible under the live name until
    :func:`_swap_parts`; a failure drops what was built. Returns (token, rows, slices)."""
    q = engine.dialect.identifier_preparer.quote
    nxt = f"base.{q('_next_' + model.table)}"
    token = uuid.uuid4().hex[:8]
    with transaction(engine) as conn:
        _pg_settings(conn)
        _drop_prepared(conn, model)
        bounds = _slice_bounds(conn, catalog, model, parts * SLICES_PER_CONNECTION)
        shape = f"base.{q('_shape_' + model.table)}"
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {shape}"))
        sql = Renderer(catalog, conn.dialect).render(model)
        conn.execute(_typed(f"CREATE TABLE {shape} AS {sql} WITH NO DATA"), params)
        conn.execute(sa.text(f"CREATE TABLE {nxt} (LIKE {shape}) PARTITION BY RANGE ({q(model.key)})"))
        conn.execute(sa.text(f"DROP TABLE {shape}"))
    edges = [None, *bounds, None]
    slices = len(edges) - 1

    def fill(k: int) -> int:
        part = f"base.{q(f'_next_{model.table}_p{k}')}"
        lo, hi = edges[k], edges[k + 1]
        binds = {name: value for name, value in (("slice_lo", lo), ("slice_hi", hi)) if value is not None}
        with transaction(engine) as conn:
            _pg_settings(conn)
            _pg_merge_plan(conn, model)
            sql = Renderer(catalog, conn.dialect, key_range=(lo is not None, hi is not None)).render(model)
            n = conn.execute(_typed(f"CREATE TABLE {part} AS {sql}"), {**params, **binds}).rowcount
            hook = HOOKS.get("part_built")
            if hook is not None:
                hook(conn, k)
            conn.execute(sa.text(f"CREATE INDEX {q(f'ix_{model.table}_p{k}_{token}')} ON {part} ({q(model.key)})"))
            # attaching locks the parent: the other connections' attaches wait for it (a
            # short wait at the end of a slice), their slices' SELECTs do not
            conn.execute(sa.text(
                f"ALTER TABLE {nxt} ATTACH PARTITION {part} FOR VALUES FROM "
                f"({'MINVALUE' if lo is None else ':slice_lo'}) TO ({'MAXVALUE' if hi is None else ':slice_hi'})"), binds)
            return n

    pool = ThreadPoolExecutor(max_workers=parts)
    try:
        futures = [pool.submit(fill, k) for k in range(slices)]  # in key order, as connections free up
        rows = sum(f.result() for f in futures)
        with transaction(engine) as conn:  # before the swap: its locks are held for less
            _pg_analyze_key(conn, nxt, model.key)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # no slice is still writing when they are dropped
        with transaction(engine) as conn:
            _drop_prepared(conn, model)
        raise
    finally:
        pool.shutdown(wait=True)
    return token, rows, slices


def _drop_prepared(conn: sa.Connection, model: Model) -> None:
    """DIALECT (PostgreSQL): drop what a parallel full build prepared beside the live table:
    ``base._next_<table>`` with its attached ranges, and ranges not attached yet (also those
    of a build that was killed)."""
    q = conn.dialect.identifier_preparer.quote
    conn.execute(sa.text(f"DROP TABLE IF EXISTS base.{q('_next_' + model.table)} CASCADE"))
    leftover = re.compile(rf"^_next_{re.escape(model.table)}_p\d+$")
    stale = [t for t in sa.inspect(conn).get_table_names(schema="base") if leftover.match(t)]
    if stale:
        conn.execute(sa.text("DROP TABLE IF EXISTS " + ", ".join(f"base.{q(t)}" for t in stale)))


def _swap_parts(conn: sa.Connection, model: Model, parts: int, token: str) -> None:
    """DIALECT (PostgreSQL): the prepared partitioned table replaces the live one, in the
    caller's (the build's) transaction."""
    q = conn.dialect.identifier_preparer.quote
    target = f"base.{q(model.table)}"
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {target} CASCADE"))
    conn.execute(sa.text(f"ALTER TABLE base.{q('_next_' + model.table)} RENAME TO {q(model.table)}"))
    index = f"ix_{model.table}__{model.key}"[:63]
    conn.execute(sa.text(f"CREATE INDEX {q(index)} ON ONLY {target} ({q(model.key)})"))
    for k in range(parts):
        conn.execute(sa.text(f"ALTER TABLE base.{q(f'_next_{model.table}_p{k}')} RENAME TO "
                             f"{q(f'{model.table}_p{k}')}"))
        conn.execute(sa.text(f"ALTER INDEX base.{q(index)} ATTACH PARTITION "
                             f"base.{q(f'ix_{model.table}_p{k}_{token}')}"))


def build_model(engine: sa.Engine, catalog: Catalog, model: Model, interval: Interval, *,
                full: bool = False) -> dict:
    """Build one model in ONE transaction (full: build beside and swap; incremental: replace
    the rows of the subjects touched since the last build); record the build and its lineage."""
    ensure_sources(engine, catalog, model)
    started, t0 = _now(), time.perf_counter()
    params = {"run_date": interval.run_date}
    parallel = _parallel_parts(engine, catalog, model, full)
    prepared = None
    if parallel:
        parts, loads = parallel
        prepared = _build_parts(engine, catalog, model, params, parts)
        slices = prepared[2]
    # tables dropped after the build's transaction, whatever its outcome: a parallel
    # incremental build's new rows; a parallel full build's ranges (gone by then if the swap
    # committed, since they were renamed into the live table)
    cleanup: list[str] = [f"base.{engine.dialect.identifier_preparer.quote('_next_' + model.table)}"] if prepared else []
    try:
        with transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                _pg_settings(conn)
            if prepared:
                mode, reason = "full", ("requested, " if full else "") + f"{slices} key ranges on {parts} connections"
            else:
                mode, loads, reason = _plan(conn, model, catalog, full)
            scope = None
            last_rows = 0
            if mode == "incremental":
                last_rows = conn.execute(sa.text(
                    "SELECT row_count FROM meta.builds WHERE target = :t ORDER BY finished_at DESC LIMIT 1"),
                    {"t": model.ident}).scalar() or 0
                _pg_probe(conn, True)  # the change capture reads the journal's / history's indexes
                scope = _fill_scope(conn, model, catalog, loads)
                # (a conflict table's size says nothing about its subjects: no switch there)
                if not model.is_conflicts and scope > max(INCREMENTAL_MIN_KEYS, INCREMENTAL_MAX_SHARE * last_rows):
                    mode, reason = "full", f"{scope} subjects changed: cheaper to rebuild"
                    loads = _loads_of(conn, _source_codes(model, catalog))
                if mode != "incremental" or (conn.dialect.name == "postgresql" and scope > max(
                        INCREMENTAL_MIN_KEYS, PROBE_MAX_SHARE * _subjects(conn, model, catalog))):
                    _pg_probe(conn, False)  # many subjects: scans may pay, let the planner choose
            if mode == "full" and not prepared:
                _pg_merge_plan(conn, model)
            if mode == "incremental":
                price_reads_in_memory(conn)  # an incremental build probes indexes for its subjects
            if prepared:
                _swap_parts(conn, model, slices, prepared[0])
                rows = prepared[1]
            else:
                sql = Renderer(catalog, conn.dialect, scoped=mode == "incremental").render(model)
                if model.is_conflicts:
                    rows = _build_conflicts(conn, model, catalog, sql, params, mode, interval)
                else:
                    rows = _build_table(conn, model, sql, params, mode, last_rows, scope or 0, cleanup)
            hook = HOOKS.get("built")
            if hook is not None:
                hook(conn)
            result = _record(conn, model, catalog, interval, mode=mode, consumed=loads, scope=scope, rows=rows,
                             started=started, t0=t0)
            result["journal_pruned"] = _prune_journals(conn, catalog, model)
    finally:
        if cleanup:
            try:
                with transaction(engine) as c:
                    c.execute(sa.text("DROP TABLE IF EXISTS " + ", ".join(cleanup)))
            except sa.exc.SQLAlchemyError as e:  # never hide why the build itself failed
                log.warning("could not drop %s (%s): drop them by hand", ", ".join(cleanup), e)
    log.info("built %s (%s, %s): %d rows%s in %.2f s", model.ident, mode, reason, rows,
             f", {scope} subjects rebuilt" if scope is not None else "", result["duration_s"])
    return result


def build_base_libraries(engine: sa.Engine, catalog: Catalog, interval: Interval, *, full: bool = False,
                         only: list[str] | None = None) -> dict:
    """Build every base model in dependency order (incrementally where possible); return
    {"interval", "tables": {target: rows}, "builds": [...]}. ``only``: these targets."""
    builds = []
    for model in base_models():
        if only and model.target not in only and model.ident not in only:
            continue
        builds.append(build_model(engine, catalog, model, interval, full=full))
    return {"interval": interval.key, "tables": {b["target"]: b["rows"] for b in builds}, "builds": builds}


__all__ = ["Model", "Renderer", "base_models", "build_base_libraries", "build_model", "model_for", "parse_model"]
