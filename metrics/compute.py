"""Compute the metric snapshot of one run date from the warehouse, with the SQL of
``warehouse_sql/metrics/`` (the same files on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from warehouse.sqlfiles import run_file

log = logging.getLogger(__name__)


def compute_metrics(engine: sa.Engine, run_date: str) -> dict:
    """Refresh ``meta.need_status`` and ``meta.metric_snapshots`` for ``run_date``; return the headline."""
    with engine.begin() as conn:
        run_file(conn, "metrics/need_status", {"run_date": run_date})
        run_file(conn, "metrics/metric_snapshot", {"run_date": run_date})
        rows = conn.execute(sa.text(
            "SELECT metric, numerator, denominator, value FROM meta.metric_snapshots "
            "WHERE run_date = :d AND scope_type = 'overall'"), {"d": run_date}).mappings().all()
    head = {r["metric"]: dict(r) for r in rows}
    log.info("metrics %s: %s", run_date, {k: v["value"] for k, v in head.items()})
    return {"run_date": run_date, **{k: {"numerator": v["numerator"], "denominator": v["denominator"],
                                          "value": v["value"]} for k, v in head.items()}}
