"""``datarail state show|reset`` and ``datarail backfill``: the extraction state kept in the
warehouse's meta area (``extractors/state.py``) and range backfills.

    datarail state show [RESOURCE] [--json]
    datarail state reset RESOURCE [--watermark W] [--forget-files] [--yes]
    datarail backfill UNIT RESOURCE --from 2026-11-01 --to 2026-11-07

A backfill runs extract -> validate -> load -> tickets for each daily data interval in the
range, oldest first, in this process (the same ``datarail.pipeline`` steps the DAG tasks
call). Every step is keyed by the interval, so a backfill gives what the scheduled runs
would have given, and running it twice changes nothing.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import click

from datarail.errors import DatarailError
from datarail.settings import Settings, load_settings


def _echo_json(data) -> None:
    # Not datarail.cli's: importing the CLI from here would be circular when this module loads first.
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _engine_and_catalog():
    from catalog import load_catalog
    from warehouse.engine import get_engine
    from warehouse.migrate import migrate

    settings = load_settings()
    engine = get_engine(settings)
    migrate(engine)
    return settings, engine, load_catalog(settings.catalog_dir)


def _far_interval():
    from datarail.interval import Interval

    return Interval(datetime(9999, 1, 1, tzinfo=UTC), datetime(9999, 1, 2, tzinfo=UTC))


def state_rows(engine, catalog, resource: str | None = None) -> list[dict[str, Any]]:
    """One dict per resource: mode, committed watermark, reset, last extraction, snapshot
    rows and file counts."""
    import sqlalchemy as sa

    from extractors.state import ExtractState

    st = ExtractState(engine)
    out = []
    resources = [catalog.resource(resource)] if resource else list(catalog.resources)
    for r in resources:
        info = st.reset_info(r.code) or {}
        last = st.runs(r.code, limit=1)
        with engine.connect() as c:
            hashes = c.execute(sa.text("SELECT interval_key, COUNT(*) FROM meta.snapshot_hashes WHERE resource = :r "
                                       "GROUP BY interval_key ORDER BY interval_key DESC"), {"r": r.code}).all()
            files = dict(c.execute(sa.text("SELECT status, COUNT(*) FROM meta.file_ingests WHERE resource = :r "
                                           "GROUP BY status"), {"r": r.code}).all())
        out.append({
            "resource": r.code, "unit": r.unit, "mode": r.change_tracking.mode,
            "watermark_column": r.change_tracking.column, "lookback_days": r.change_tracking.lookback_days,
            "committed_watermark": st.since(r, _far_interval()) if r.change_tracking.mode == "watermark" else None,
            "reset_at": str(info["reset_at"]) if info.get("reset_at") else None,
            "reset_watermark": info.get("reset_watermark"),
            "source_schema": json.loads(info["source_schema"]) if info.get("source_schema") else None,
            "schema_drift": r.schema_drift,
            "snapshot_hashes": {k: n for k, n in hashes},
            "files": {k: int(v) for k, v in files.items()},
            "last_extract": ({k: (str(v) if isinstance(v, datetime) else v) for k, v in last[0].items()}
                             if last else None),
        })
    return out


@click.group()
def state() -> None:
    """Extraction state per resource (watermarks, snapshot hashes, file fingerprints)."""


@state.command("show")
@click.argument("resource", required=False)
@click.option("--json", "as_json", is_flag=True)
def state_show(resource: str | None, as_json: bool) -> None:
    """Show the extraction state of RESOURCE (default: every resource)."""
    _, engine, catalog = _engine_and_catalog()
    try:
        rows = state_rows(engine, catalog, resource)
    except KeyError as exc:
        raise click.ClickException(f"no resource {resource!r} in the catalog") from exc
    if as_json:
        return _echo_json(rows)
    for r in rows:
        wm = (f"watermark {r['watermark_column']} = {r['committed_watermark'] or '(none: next run is full)'}"
              f" (lookback {r['lookback_days']} d)" if r["mode"] == "watermark"
              else f"snapshot ({sum(r['snapshot_hashes'].values())} row hashes)")
        click.echo(f"{r['resource']:<12} {r['unit']:<5} {wm}")
        if r["reset_at"]:
            click.echo(f"{'':18}reset at {r['reset_at']} (start from {r['reset_watermark'] or 'scratch'})")
        if r["files"]:
            click.echo(f"{'':18}files: " + ", ".join(f"{n} {k}" for k, n in sorted(r["files"].items())))
        last = r["last_extract"]
        if last:
            changes = ""
            if last.get("inserted") is not None:
                changes = (f", +{last['inserted']} ~{last['updated']} -{last['deleted']} "
                           f"={last['unchanged']}")
            click.echo(f"{'':18}last extract {last['interval_key']} {last['status']}: {last['rows_staged']} rows, "
                       f"{last['staged_bytes']} bytes, {last['duration_s'] or 0:.2f} s, watermark "
                       f"{last['watermark_before']} -> {last['watermark_after']}{changes}"
                       + (f"; error: {last['error'][:200]}" if last.get("error") else ""))


@state.command("reset")
@click.argument("resource")
@click.option("--watermark", help="start the next run from this watermark (default: from scratch)")
@click.option("--forget-files", is_flag=True, help="also forget file fingerprints (files may be ingested again)")
@click.option("--yes", is_flag=True, help="do not ask")
def state_reset(resource: str, watermark: str | None, forget_files: bool, yes: bool) -> None:
    """Reset RESOURCE's extraction state: the next run starts from --watermark or from scratch."""
    from extractors.staging import parse_moment
    from extractors.state import ExtractState

    _, engine, catalog = _engine_and_catalog()
    try:
        catalog.resource(resource)
    except KeyError as exc:
        raise click.ClickException(f"no resource {resource!r} in the catalog") from exc
    if watermark is not None and parse_moment(watermark) is None:
        raise click.ClickException(f"--watermark {watermark!r} is not an ISO date or datetime")
    if not yes:
        click.confirm(f"reset the extraction state of {resource}?", abort=True)
    out = ExtractState(engine).reset(resource, watermark=watermark, forget_files=forget_files)
    click.echo(f"reset {resource}: next run starts from {watermark or 'scratch'}"
               + (f"; {out.get('files_forgotten', 0)} file fingerprint(s) forgotten" if forget_files else ""))


def resolve_connection(settings: Settings, conn_id: str) -> dict[str, Any]:
    """An Airflow connection as a plain dict, without Airflow: ``AIRFLOW_CONN_<ID>`` (JSON or
    URI form) from the environment, else the sandbox's ``connections.json``."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw:
        raw = raw.strip()
        if raw.startswith("{"):
            d = json.loads(raw)
            extra = d.get("extra") or {}
            return {**d, "extra": json.loads(extra) if isinstance(extra, str) else extra}
        u = urlsplit(raw)
        query = dict(parse_qsl(u.query))
        extra = json.loads(query.pop("__extra__")) if "__extra__" in query else query
        return {"conn_type": u.scheme.replace("-", "_"), "host": unquote(u.hostname or "") or None, "port": u.port,
                "login": unquote(u.username) if u.username else None,
                "password": unquote(u.password) if u.password else None,
                "schema": unquote(u.path.lstrip("/")) or None, "extra": extra}
    if settings.connections_file.exists():
        conns = json.loads(settings.connections_file.read_text(encoding="utf-8"))
        if conn_id in conns:
            return conns[conn_id]
    raise click.ClickException(f"connection {conn_id!r} not found: set AIRFLOW_CONN_{conn_id.upper()} "
                               f"(or build the sandbox)")


def backfill_range(unit: str, resource: str, start: date, end: date, *, settings: Settings | None = None,
                   conn: dict[str, Any] | None = None, echo=lambda _msg: None) -> list[dict[str, Any]]:
    """Run extract -> validate -> load -> tickets for each daily interval from ``start`` to
    ``end`` (both included), oldest first; return one result per interval."""
    from datarail import pipeline
    from datarail.interval import Interval

    settings = settings or load_settings()
    _, catalog, _ = pipeline.runtime(settings)
    res = catalog.resource(resource)
    if res.unit != unit:
        raise click.ClickException(f"resource {resource} belongs to unit {res.unit}, not {unit}")
    conn = conn or resolve_connection(settings, catalog.unit(unit).system(res.system).conn_id)
    pipeline.prepare(settings)
    results = []
    day = start
    while day <= end:
        iv = Interval.daily(day)
        s, e = iv.start.isoformat(), iv.end.isoformat()
        run_id = f"backfill__{iv.key}"
        ext = pipeline.extract(resource, s, e, conn=conn, settings=settings, run_id=run_id)
        if ext.get("skipped"):
            results.append({"interval": iv.key, "skipped": ext["skipped"]})
            echo(f"{day}  skipped: {ext['skipped']}")
        else:
            val = pipeline.validate(resource, s, e, extract_summary=ext, settings=settings)
            loaded = pipeline.load(resource, s, e, extract_summary=ext, validate_summary=val, run_id=run_id,
                                   settings=settings)
            pipeline.tickets(resource, s, e, settings=settings)
            results.append({"interval": iv.key, "extracted": ext["rows"], "loaded": loaded["loaded"],
                            "quarantined": loaded["quarantined"], "watermark_before": ext.get("watermark_before"),
                            "watermark_after": ext.get("watermark_after"), "changes": ext.get("changes")})
            echo(f"{day}  extracted {ext['rows']}, loaded {loaded['loaded']}, quarantined {loaded['quarantined']}, "
                 f"watermark {ext.get('watermark_before')} -> {ext.get('watermark_after')}")
        day += timedelta(days=1)
    return results


@click.command()
@click.argument("unit")
@click.argument("resource")
@click.option("--from", "date_from", required=True, type=click.DateTime(["%Y-%m-%d"]), help="first run date")
@click.option("--to", "date_to", required=True, type=click.DateTime(["%Y-%m-%d"]), help="last run date (included)")
@click.option("--json", "as_json", is_flag=True)
def backfill(unit: str, resource: str, date_from: datetime, date_to: datetime, as_json: bool) -> None:
    """Re-run RESOURCE of UNIT for every daily interval from --from to --to (included)."""
    if date_to < date_from:
        raise click.ClickException("--to is before --from")
    try:
        results = backfill_range(unit, resource, date_from.date(), date_to.date(),
                                 echo=(lambda _m: None) if as_json else click.echo)
    except KeyError as exc:
        raise click.ClickException(f"unknown unit or resource: {exc}") from exc
    except DatarailError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(results)


COMMANDS = [state, backfill]
