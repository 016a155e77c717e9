"""Evidence without caps: every failing row of every check, kept in the warehouse, and the
query that reproduces them; plus what validation needs to know about earlier runs.

- :func:`load_history`: earlier runs' volumes and newest change, and the accepted-dispute
  waivers, for :func:`quality.validate.validate_staged` (the ``volume`` and ``freshness``
  checks, and waived keys).
- :func:`record_evidence`: one run's failing rows (``quality.check_failures``: raw keys,
  uncapped) and check details (``quality.check_runs``: scope, GX expectation, waived rows,
  observed value, the reproducing SQL), replaced per (resource, interval, check), so a rerun
  leaves the same rows.
- :func:`reproduce_sql` / :func:`failing_rows`: the query that lists a check's failing rows
  again from the warehouse, as text for a person and run here for the CLI.

Raw keys are personal data: they stay in the warehouse; everything leaving it is masked
(``CheckResult.failed_keys``, reports, tickets).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quality.suite import History
from warehouse.sqlfiles import query_file, sql_path, statements

if TYPE_CHECKING:
    import pandas as pd

    from catalog.models import Resource
    from datarail.interval import Interval

log = logging.getLogger(__name__)
BATCH = 5_000


def _literal(text: str) -> str:
    """A SQL string literal. Only catalog codes, check ids and interval keys (no personal
    data, no user input) are ever inlined, and quotes are doubled anyway."""
    return "'" + str(text).replace("'", "''") + "'"


def load_history(engine: sa.Engine, resource: Resource, interval: Interval) -> History:
    """Earlier loaded runs (volume baseline, newest change) and the resource's waivers."""
    runs = max(resource.quality.volume.runs, 1)
    with engine.connect() as conn:
        previous = query_file(conn, "quality/previous_runs", {
            "resource": resource.code, "start": interval.start.astimezone(UTC).replace(tzinfo=None), "runs": runs})
        waiver_rows = query_file(conn, "quality/waivers", {"resource": resource.code})
    waivers: dict[str, set[str]] = {}
    for w in waiver_rows:
        waivers.setdefault(w["check_id"], set()).add(w["row_key"])
    latest = [r["latest_update"] for r in previous if r["latest_update"]]
    return History(previous_rows=[int(r["extracted"]) for r in previous],
                   previous_latest_update=max(latest) if latest else None,
                   waivers={k: frozenset(v) for k, v in waivers.items()})


def reproduce_sql(resource: Resource, interval_key: str, check_id: str, *, scope: str = "row",
                  cross_sql: str | None = None) -> str:
    """The SQL that lists the failing rows of one check in one run.

    Row and dataset checks read the stored evidence (``quality/failing_rows.sql`` with the
    values inlined); a warehouse check's own query (``cross_sql``) is the reproduction, run
    against the current ods tables. Delivery-level checks list the runs they compared."""
    kind = check_id.split(":", 1)[0]
    if scope == "warehouse" and cross_sql:
        return cross_sql
    if kind == "volume":
        return ("SELECT interval_key, extracted FROM meta.runs WHERE resource = " + _literal(resource.code)
                + " AND status = 'loaded' ORDER BY interval_end DESC")
    if kind == "freshness":
        return ("SELECT interval_key, latest_update FROM meta.runs WHERE resource = " + _literal(resource.code)
                + " AND interval_key = " + _literal(interval_key))
    (stmt,) = statements(sql_path("quality/failing_rows").read_text(encoding="utf-8"))
    for name, value in (("resource", resource.code), ("interval_key", interval_key), ("check_id", check_id)):
        stmt = stmt.replace(f":{name}", _literal(value))
    return stmt


def record_evidence(engine: sa.Engine, resource: Resource, interval: Interval, checks: list[dict],
                    failures: pd.DataFrame | str | Path | None) -> dict:
    """Store one run's evidence for the given checks (``checks.json`` dicts, with ``scope``,
    ``expectation``, ``waived``, ``observed``): replace their ``check_runs`` and
    ``check_failures`` rows for the interval. ``failures``: frame or Parquet file with
    ``check_id``, ``_row``, ``key`` (raw). Returns counts."""
    import pandas as pd

    if failures is None:
        frame = pd.DataFrame({"check_id": [], "_row": [], "key": []})
    elif isinstance(failures, str | Path):
        frame = pd.read_parquet(failures) if Path(failures).exists() else pd.DataFrame(
            {"check_id": [], "_row": [], "key": []})
    else:
        frame = failures
    ids = [c["check_id"] for c in checks]
    now = datetime.now(UTC).replace(tzinfo=None)
    params = {"r": resource.code, "k": interval.key}
    n = 0
    with engine.begin() as conn:
        for cid in ids:
            conn.execute(sa.text("DELETE FROM quality.check_failures WHERE resource = :r AND interval_key = :k "
                                 "AND check_id = :c"), {**params, "c": cid})
            conn.execute(sa.text("DELETE FROM quality.check_runs WHERE resource = :r AND interval_key = :k "
                                 "AND check_id = :c"), {**params, "c": cid})
        if ids:
            conn.execute(sa.text(
                "INSERT INTO quality.check_runs (resource, interval_key, check_id, kind, scope, expectation, waived, "
                "observed, reproduce_sql, recorded_at) VALUES (:r, :k, :c, :kind, :scope, :e, :w, :o, :sql, :t)"),
                [{**params, "c": c["check_id"], "kind": c.get("kind") or c["check_id"].split(":", 1)[0],
                  "scope": c.get("scope") or "row", "e": c.get("expectation") or None, "w": int(c.get("waived") or 0),
                  "o": None if c.get("observed") is None else str(c["observed"]),
                  "sql": c.get("reproduce_sql") or reproduce_sql(resource, interval.key, c["check_id"],
                                                                 scope=c.get("scope") or "row"),
                  "t": now} for c in checks])
        wanted = frame[frame["check_id"].isin(ids)] if len(frame) else frame
        records = [{**params, "c": c, "n": int(row), "key": str(key)}
                   for c, row, key in wanted[["check_id", "_row", "key"]].itertuples(index=False, name=None)]
        for i in range(0, len(records), BATCH):
            conn.execute(sa.text("INSERT INTO quality.check_failures (resource, interval_key, check_id, row_num, "
                                 "row_key) VALUES (:r, :k, :c, :n, :key)"), records[i:i + BATCH])
        n = len(records)
    log.info("evidence %s [%s]: %d checks, %d failing rows kept", resource.code, interval.key, len(ids), n)
    return {"checks": len(ids), "failing_rows": n}


def failing_rows(engine: sa.Engine, resource: str, interval_key: str, check_id: str) -> list[dict[str, Any]]:
    """The stored failing rows of one check in one run (raw: inside the warehouse only)."""
    with engine.connect() as conn:
        return query_file(conn, "quality/failing_rows", {"resource": resource, "interval_key": interval_key,
                                                         "check_id": check_id})


def failing_keys(engine: sa.Engine, resource: str, interval_key: str, check_id: str) -> list[str]:
    """The raw key JSON of every failing row of one check in one run, in row order."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(
            "SELECT row_key FROM quality.check_failures WHERE resource = :r AND interval_key = :k AND check_id = :c "
            "ORDER BY row_num"), {"r": resource, "k": interval_key, "c": check_id})]


def check_dicts(checks) -> list[dict]:
    """``CheckResult``s as the dicts ``checks.json``, the load and :func:`record_evidence` use."""
    return [{"check_id": c.check_id, "kind": c.kind, "field": c.field, "severity": c.severity, "rule": c.rule,
             "evaluated": int(c.evaluated), "failed": int(c.failed), "scope": c.scope,
             "expectation": c.expectation, "waived": int(c.waived),
             "observed": c.observed if c.observed is None else json.loads(json.dumps(c.observed, default=str)),
             "failed_keys": [str(k) for k in c.failed_keys], "sample": c.sample} for c in checks]
