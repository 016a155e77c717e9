"""Versioned DDL migrations from ``warehouse_sql/migrations/NNNN_name.sql``, applied in
order, each in its own transaction, recorded in ``meta.schema_migrations``. Safe to rerun.
A migration whose file changed after it was applied is refused, not silently skipped."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from datarail.errors import WarehouseError
from warehouse.engine import transaction
from warehouse.sqlfiles import SQL_ROOT, run_file

log = logging.getLogger(__name__)
BOOTSTRAP = "0000_schema_migrations.sql"


def available() -> list[tuple[str, str, str]]:
    """(version, file name, sha256) of every migration file, in order."""
    out = []
    for path in sorted((SQL_ROOT / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        if path.name == BOOTSTRAP:
            continue
        out.append((path.name[:4], path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
    return out


def applied(engine: sa.Engine) -> dict[str, dict]:
    with engine.begin() as conn:
        run_file(conn, f"migrations/{BOOTSTRAP}")
        rows = conn.execute(sa.text("SELECT version, name, checksum, applied_at FROM meta.schema_migrations"))
        return {r.version: dict(r._mapping) for r in rows}


def status(engine: sa.Engine) -> list[dict]:
    """Every migration with its state: applied (when), pending, or changed-after-apply."""
    done = applied(engine)
    out = []
    for version, name, checksum in available():
        row = done.get(version)
        state = "pending" if row is None else ("applied" if row["checksum"] == checksum else "CHANGED")
        out.append({"version": version, "name": name, "state": state,
                    "applied_at": row["applied_at"] if row else None})
    return out


def migrate(engine: sa.Engine, *, upto: str | None = None) -> list[str]:
    """Apply pending migrations (those numbered up to ``upto``, default all); return the
    versions applied now. ``upto`` exists so tests can build every earlier schema version."""
    done = applied(engine)
    now_applied = []
    for version, name, checksum in available():
        if upto is not None and version > upto:
            break
        if version in done:
            if done[version]["checksum"] != checksum:
                raise WarehouseError(f"migration {name} changed after it was applied",
                                     hint="never edit an applied migration; add a new numbered file")
            continue
        with transaction(engine) as conn:  # a failing migration leaves nothing half-applied
            run_file(conn, f"migrations/{name}")
            conn.execute(sa.text("INSERT INTO meta.schema_migrations (version, name, checksum, applied_at) "
                                 "VALUES (:v, :n, :c, :t)"),
                         {"v": version, "n": name, "c": checksum, "t": datetime.now(UTC)})
        log.info("warehouse: applied migration %s", name)
        now_applied.append(version)
    return now_applied
