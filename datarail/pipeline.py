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

import pandas as pd

from catalog import Catalog, load_catalog
from catalog.models import Resource
from datarail.errors import ExtractError
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


def extract(resource_code: str, start, end, conn: dict, settings: Settings | None = None) -> dict:
    """Extract one resource for the interval into staging Parquet; returns the summary."""
    from extractors import ConnInfo, extract_resource
    from warehouse.load import previous_watermark, record_failure

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    system = catalog.unit(resource.unit).system(resource.system)
    since = previous_watermark(engine, resource, interval) if resource.change_tracking.mode == "watermark" else None
    try:
        result = extract_resource(resource, system, ConnInfo.from_dict(conn), interval,
                                  staging_dir(settings, resource, interval) / "raw", since=since)
    except ExtractError as exc:
        record_failure(engine, resource, interval, None, str(exc))
        raise
    log.info("extracted %s [%s]: %d rows, %d bytes in %.2f s", resource.code, interval.key, result.rows,
             result.bytes, result.duration_s)
    return result.to_dict()


def _read_staged(files: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _latest_update(resource: Resource, raw: pd.DataFrame, interval: Interval) -> str:
    """When the source last changed: the newest watermark / updated_at value delivered, else
    the delivery itself (a snapshot without a change column is as fresh as its delivery)."""
    from quality.coerce import parse_date

    col = resource.change_tracking.column or ("updated_at" if "updated_at" in {f.name for f in resource.fields}
                                               else None)
    if col and col in raw and raw[col].notna().any():
        dates = [d for d in (parse_date(v) for v in raw[col].dropna().unique()) if d is not None]
        if dates:
            return max(dates).isoformat()
    return interval.run_date.isoformat()


def validate(resource_code: str, start, end, extract_summary: dict, settings: Settings | None = None) -> dict:
    """Validate the staged delivery with Great Expectations; stage passed / quarantined rows."""
    from quality.divisions import load_divisions
    from quality.validate import validate as run_checks

    settings, catalog, _ = runtime(settings)
    interval = interval_of(start, end)
    resource = catalog.resource(resource_code)
    t0 = time.perf_counter()
    raw = _read_staged(extract_summary["files"])
    if raw.empty:
        raw = pd.DataFrame({**{f.name: pd.Series(dtype="str") for f in resource.fields},
                            "_row": pd.Series(dtype="int64"), "_source": pd.Series(dtype="str")})
    if len(raw) != extract_summary["rows"]:
        from datarail.errors import ReconciliationError
        raise ReconciliationError(f"extracted {extract_summary['rows']} rows but staged {len(raw)}",
                                  unit=resource.unit, resource=resource.code)
    outcome = run_checks(resource, raw, run_date=interval.run_date, divisions=load_divisions(),
                         division_policy=settings.division_policy)
    out = staging_dir(settings, resource, interval) / "validated"
    out.mkdir(parents=True, exist_ok=True)
    outcome.passed.to_parquet(out / "passed.parquet", index=False)
    outcome.quarantined.to_parquet(out / "quarantined.parquet", index=False)
    checks = [_check_dict(c) for c in outcome.checks]
    (out / "checks.json").write_text(json.dumps(checks, ensure_ascii=False, default=str), encoding="utf-8")
    summary = {"resource": resource.code, "evaluated": outcome.evaluated, "passed": len(outcome.passed),
               "quarantined": len(outcome.quarantined), "gx_success": bool(outcome.gx_success),
               "failing_checks": sorted(c["check_id"] for c in checks if c["failed"]),
               "latest_update": _latest_update(resource, raw, interval), "dir": str(out),
               "duration_s": round(time.perf_counter() - t0, 3)}
    log.info("validated %s [%s]: %d rows, %d passed, %d quarantined, failing checks %s", resource.code,
             interval.key, outcome.evaluated, summary["passed"], summary["quarantined"], summary["failing_checks"])
    return summary


def _check_dict(c) -> dict:
    return {"check_id": c.check_id, "kind": c.kind, "field": c.field, "severity": c.severity, "rule": c.rule,
            "evaluated": int(c.evaluated), "failed": int(c.failed),
            "failed_keys": [str(k) for k in c.failed_keys], "sample": c.sample}


def load(resource_code: str, start, end, extract_summary: dict, validate_summary: dict,
         run_id: str | None = None, settings: Settings | None = None) -> dict:
    """Load passed rows and quarantine the rest, atomically; counts must reconcile."""
    from warehouse.load import load_delivery

    settings, catalog, engine = runtime(settings)
    interval = interval_of(start, end)
    folder = Path(validate_summary["dir"])
    checks = json.loads((folder / "checks.json").read_text(encoding="utf-8"))
    return load_delivery(engine, catalog.resource(resource_code), interval=interval, run_id=run_id,
                         passed=pd.read_parquet(folder / "passed.parquet"),
                         quarantined=pd.read_parquet(folder / "quarantined.parquet"), checks=checks,
                         extracted=extract_summary["rows"], extract_summary=extract_summary,
                         latest_update=validate_summary.get("latest_update"))


def tickets(resource_code: str, start, end, settings: Settings | None = None) -> dict:
    """Open, update or resolve the resource's feedback tickets from this interval's checks."""
    from quality.tickets import update_tickets

    settings, catalog, engine = runtime(settings)
    return update_tickets(engine, catalog, resource_code, interval_of(start, end))


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
    """Write the per-unit HTML quality reports of the run date."""
    from quality.reports import write_unit_reports

    settings, catalog, engine = runtime(settings)
    run_date = interval_of(start, end).run_date.isoformat()
    paths = write_unit_reports(engine, catalog, run_date, settings.reports_dir / run_date)
    return {"run_date": run_date, "files": {k: str(v) for k, v in paths.items()}}


def leadership_export(start, end, settings: Settings | None = None) -> dict:
    """Write the leadership bulletin (CSV + XLSX) of the run date."""
    from metrics.export import write_leadership_export

    settings, _, engine = runtime(settings)
    run_date = interval_of(start, end).run_date.isoformat()
    paths = write_leadership_export(engine, run_date, settings.exports_dir / run_date)
    return {"run_date": run_date, "files": {k: str(v) for k, v in paths.items()}}
