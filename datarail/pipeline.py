"""The pipeline's steps: each DAG task is one call into this module (which never imports
Airflow), so every step also runs from the CLI and from tests.

Every step is keyed by the data interval: staging paths, load partitions, quarantine rows,
check results, tickets and metric snapshots, so a retry or a backfill gives the same
warehouse. Steps pass small dicts (paths and counts), never data.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from catalog import Catalog, load_catalog
from catalog.models import Resource
from datarail.interval import Interval
from datarail.settings import Settings, load_settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _catalog(folder: str) -> Catalog:
    return load_catalog(folder)


def runtime(settings: Settings | None = None):
    """(settings, catalog, engine) for this process."""
    from warehouse.engine import get_engine

    settings = settings or load_settings()
    return settings, _catalog(str(settings.catalog_dir)), get_engine(settings)


def interval_of(start: str | datetime, end: str | datetime) -> Interval:
    """An :class:`Interval` from Airflow's data interval (datetimes or ISO strings)."""
    def parse(v):
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return Interval(parse(start), parse(end))


def staging_dir(settings: Settings, resource: Resource, interval: Interval) -> Path:
    return settings.staging_dir / resource.unit / resource.table / interval.key


def prepare(settings: Settings | None = None) -> dict:
    """Migrate the warehouse and snapshot the catalog into it (idempotent)."""
    from warehouse.migrate import migrate
    from warehouse.snapshot import snapshot_catalog

    settings, catalog, engine = runtime(settings)
    applied = migrate(engine)
    counts = snapshot_catalog(engine, catalog)
    return {"migrations_applied": applied, "catalog": counts}


def extract(resource_code: str, start, end, conn: dict, settings: Settings | None = None, *,
            part: dict | None = None, chunk_rows: int = 50_000, run_id: str | None = None) -> dict:
    """Extract one resource for the interval into staging Parquet; returns the run summary
    (rows, bytes, duration, rows/s, watermark before/after, snapshot changes, drift, files),
    also recorded in ``meta.extract_runs``. ``summary["skipped"]`` is set when a file drop
    has no new file (the DAG then skips validate and load). ``part``: one key range of a
    partitioned table (see :func:`extract_plan` / :func:`extract_merge`)."""
    from extractors import ConnInfo
    from extractors.run import extract_interval

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    system = catalog.unit(resource.unit).system(resource.system)
    return extract_interval(engine, resource, system, ConnInfo.from_dict(conn), interval,
                            staging_dir(settings, resource, interval) / "raw", chunk_rows=chunk_rows,
                            key_range=part or None, run_id=run_id)


def extract_plan(resource_code: str, conn: dict, settings: Settings | None = None) -> list[dict]:
    """The key ranges to extract a partitioned SQL resource in (``[{}]``: in one piece)."""
    from extractors import ConnInfo
    from extractors.run import plan_parts

    settings, catalog, _ = runtime(settings)
    resource = catalog.resource(resource_code)
    return plan_parts(resource, catalog.unit(resource.unit).system(resource.system), ConnInfo.from_dict(conn))


def extract_merge(resource_code: str, start, end, parts: list[dict], settings: Settings | None = None) -> dict:
    """Join the staged key ranges of a partitioned extraction into one delivery; the summary."""
    from extractors.run import merge_parts

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    return merge_parts(engine, resource, interval, staging_dir(settings, resource, interval) / "raw", list(parts))


def validate(resource_code: str, start, end, extract_summary: dict, settings: Settings | None = None) -> dict:
    """Validate the staged delivery with Great Expectations, streaming from its Parquet parts
    (memory bounded by the chunk size); stage passed / quarantined rows, the failing rows'
    keys (evidence), the check results and GX's (masked) result for the Data Docs."""
    import pyarrow.parquet as pq

    from datarail.errors import ReconciliationError
    from quality.divisions import load_divisions
    from quality.evidence import check_dicts, load_history
    from quality.validate import validate_staged

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    t0 = time.perf_counter()
    files = list(extract_summary.get("files") or [])
    staged = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if staged != extract_summary["rows"]:
        raise ReconciliationError(f"extracted {extract_summary['rows']} rows but staged {staged}",
                                  unit=resource.unit, resource=resource.code)
    out = staging_dir(settings, resource, interval) / "validated"
    outcome = validate_staged(resource, files, out, run_date=interval.run_date, divisions=load_divisions(),
                              division_policy=settings.division_policy,
                              history=load_history(engine, resource, interval))
    checks = check_dicts(outcome.checks)
    (out / "checks.json").write_text(json.dumps(checks, ensure_ascii=False, default=str), encoding="utf-8")
    (out / "gx_result.json").write_text(json.dumps(outcome.gx_result, ensure_ascii=False, default=str),
                                        encoding="utf-8")
    # When the source last changed: the newest change delivered (or, for an empty incremental
    # delivery, the newest earlier runs saw); a delivery without a change column is as fresh
    # as the delivery itself.
    summary = {"resource": resource.code, "evaluated": outcome.evaluated, "passed": outcome.n_passed,
               "quarantined": outcome.n_quarantined, "gx_success": bool(outcome.gx_success),
               "failing_checks": sorted(c["check_id"] for c in checks if c["failed"]),
               "latest_update": outcome.latest_update or interval.run_date.isoformat(), "dir": str(out),
               "duration_s": round(time.perf_counter() - t0, 3)}
    log.info("validated %s [%s]: %d rows, %d passed, %d quarantined, failing checks %s", resource.code,
             interval.key, outcome.evaluated, summary["passed"], summary["quarantined"], summary["failing_checks"])
    return summary


def load(resource_code: str, start, end, extract_summary: dict, validate_summary: dict,
         run_id: str | None = None, settings: Settings | None = None) -> dict:
    """Load passed rows (streamed from the validated Parquet) and quarantine the rest,
    atomically; counts must reconcile."""
    import pandas as pd

    from warehouse.load import load_delivery
    from warehouse.rows import Delivery

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    folder = Path(validate_summary["dir"])
    checks = json.loads((folder / "checks.json").read_text(encoding="utf-8"))
    resource = catalog.resource(resource_code)
    return load_delivery(engine, resource, interval=interval, run_id=run_id,
                         passed=Delivery(folder / "passed.parquet", columns=[f.name for f in resource.fields]),
                         quarantined=pd.read_parquet(folder / "quarantined.parquet"), checks=checks,
                         extracted=extract_summary["rows"], extract_summary=extract_summary,
                         latest_update=validate_summary.get("latest_update"))


def tickets(resource_code: str, start, end, settings: Settings | None = None) -> dict:
    """Keep the evidence of this interval's checks (every failing row's key, the reproducing
    query) and open, update, resolve or reopen the resource's feedback tickets from them."""
    from quality.evidence import record_evidence
    from quality.tickets import update_tickets

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    folder = staging_dir(settings, resource, interval) / "validated"
    checks_file = folder / "checks.json"
    if checks_file.exists():
        checks = json.loads(checks_file.read_text(encoding="utf-8"))
        record_evidence(engine, resource, interval, checks, folder / "failures.parquet")
    return update_tickets(engine, catalog, resource_code, interval,
                          check_ids=[c["check_id"] for c in checks] if checks_file.exists() else None)


def cross_checks(start, end, settings: Settings | None = None) -> dict:
    """Cross-resource checks in the warehouse (after the base libraries, before publishing):
    results, evidence and tickets for every resource delivered in the interval; then the
    base libraries' cross-source conflicts as checks (and tickets) of the authoritative
    resources."""
    from quality.conflicts import run_conflict_checks
    from quality.crosscheck import run_cross_checks

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    return {"failed": run_cross_checks(engine, catalog, interval),
            "conflicts": run_conflict_checks(engine, catalog, interval)}


def build_base(start, end, settings: Settings | None = None) -> dict:
    """Rebuild the base libraries from the ods area (SQL models in warehouse_sql/base/)."""
    from warehouse.models import build_base_libraries

    settings, catalog, engine = runtime(settings)
    return build_base_libraries(engine, catalog, interval_of(start, end))


def publish(start, end, settings: Settings | None = None) -> dict:
    """Publish share tables and the sharing list; export the list as JSON and CSV."""
    from sharing.export import write_sharing_list
    from sharing.publish import publish as publish_share

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    result = publish_share(engine, catalog, interval, threshold=settings.quality_threshold)
    paths = write_sharing_list(engine, interval.run_date.isoformat(),
                               settings.exports_dir / interval.run_date.isoformat())
    return {**result, "files": {k: str(v) for k, v in paths.items()}}


def metrics(start, end, settings: Settings | None = None) -> dict:
    """Compute the metric snapshot of the run date."""
    from metrics.compute import compute_metrics

    settings, _, engine = runtime(settings)
    return compute_metrics(engine, interval_of(start, end).run_date.isoformat())


def reports(start, end, settings: Settings | None = None) -> dict:
    """Escalate overdue tickets onto the supervision list, then write the run date's reports
    under ``$DATARAIL_HOME/reports/<date>/``: per source unit a self-contained HTML report and
    an XLSX of the failing keys, GX Data Docs of the unit's validations, the supervision list
    and an index."""
    from quality.reports import write_unit_reports
    from quality.tickets import escalate_overdue

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    run_date = interval.run_date.isoformat()
    escalated = escalate_overdue(engine, interval.run_date)
    validated = {r.code: staging_dir(settings, r, interval) / "validated" / "gx_result.json"
                 for r in catalog.resources}
    paths = write_unit_reports(engine, catalog, run_date, settings.reports_dir / run_date,
                               gx_results=validated)
    return {"run_date": run_date, "escalated": escalated, "files": {k: str(v) for k, v in paths.items()}}


def notify(start, end, email_conn: dict | None = None, webhook_conn: dict | None = None,
           webhook_send=None, settings: Settings | None = None) -> dict:
    """Send each source unit whose tickets changed a digest of its report: by email over
    SMTP (``email_conn``: an Airflow connection as a dict) and to a DingTalk-style webhook
    (``webhook_conn``; ``webhook_send`` lets the DAG post through the Airflow provider). Every
    digest is also written to ``reports/<date>/outbox/``; unchanged units get nothing."""
    from quality.notify import send_digests

    settings, catalog, engine = runtime(settings)
    run_date = interval_of(start, end).run_date.isoformat()
    return send_digests(engine, catalog, run_date, settings.reports_dir / run_date, email_conn=email_conn,
                        webhook_conn=webhook_conn, webhook_send=webhook_send)


def leadership_export(start, end, settings: Settings | None = None) -> dict:
    """Write the leadership bulletin (CSV + XLSX) of the run date."""
    from metrics.export import write_leadership_export

    settings, _, engine = runtime(settings)
    run_date = interval_of(start, end).run_date.isoformat()
    paths = write_leadership_export(engine, run_date, settings.exports_dir / run_date)
    return {"run_date": run_date, "files": {k: str(v) for k, v in paths.items()}}
