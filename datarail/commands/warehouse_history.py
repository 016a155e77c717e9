"""``datarail warehouse ...``, ``datarail asof ...``, ``datarail lineage ...``: the warehouse's
schema, base-library builds, its past and where its tables come from.

    datarail warehouse migrate | status [--json]
    datarail warehouse build [--full] [--target base.population] [--date YYYY-MM-DD]
    datarail warehouse checksum [--json]
    datarail asof TABLE KEY DATE [--history] [--json] [--unmasked]
    datarail lineage TABLE [--json]

Personal data in printed rows is masked unless ``--unmasked`` is given (the rows stay inside
the warehouse; a person looking at one record on the warehouse host may need the raw values).
"""

from __future__ import annotations

import logging
from datetime import date

import click

from datarail.cli import _echo_json
from datarail.errors import DatarailError
from datarail.settings import load_settings

log = logging.getLogger(__name__)


def _runtime():
    from datarail.pipeline import runtime

    return runtime(load_settings())


@click.group()
def warehouse() -> None:
    """The central warehouse (embedded SQLite, or DATARAIL_WAREHOUSE_URL)."""


@warehouse.command("migrate")
@click.option("--upto", help="stop after this version (e.g. 0001): build an older schema on purpose")
def warehouse_migrate(upto: str | None) -> None:
    """Apply pending migrations (safe to rerun)."""
    from warehouse.engine import get_engine
    from warehouse.migrate import migrate

    try:
        applied = migrate(get_engine(load_settings()), upto=upto)
    except DatarailError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")


@warehouse.command("status")
@click.option("--json", "as_json", is_flag=True)
def warehouse_status(as_json: bool) -> None:
    """List migrations and whether each is applied."""
    from warehouse.engine import get_engine
    from warehouse.migrate import status

    rows = status(get_engine(load_settings()))
    if as_json:
        return _echo_json(rows)
    for r in rows:
        click.echo(f"{r['version']}  {r['state']:<8} {r['name']}  {r['applied_at'] or ''}")


@warehouse.command("build")
@click.option("--full", is_flag=True, help="rebuild in full even where an incremental build would do")
@click.option("--target", "targets", multiple=True, help="only this target (repeatable), e.g. base.population")
@click.option("--date", "run_date", help="run date of the data interval (default: today, UTC)")
def warehouse_build(full: bool, targets: tuple[str, ...], run_date: str | None) -> None:
    """Build the base libraries (dependency order; incremental where possible)."""
    from datarail.interval import Interval
    from warehouse.models import build_base_libraries

    _, catalog, engine = _runtime()
    day = date.fromisoformat(run_date) if run_date else date.today()
    try:
        out = build_base_libraries(engine, catalog, Interval.daily(day), full=full, only=list(targets) or None)
    except DatarailError as exc:
        raise click.ClickException(str(exc)) from exc
    for b in out["builds"]:
        scope = f", {b['scope_keys']} subjects" if b["scope_keys"] is not None else ""
        click.echo(f"{b['target']:<34} {b['mode']:<11} {b['rows']:>9} rows{scope}  {b['duration_s']:.2f} s")


@warehouse.command("checksum")
@click.option("--json", "as_json", is_flag=True)
def warehouse_checksum(as_json: bool) -> None:
    """One checksum per table (audit logs and wall-clock columns left out): compare two states."""
    from warehouse.history import checksums

    _, _, engine = _runtime()
    sums = checksums(engine)
    if as_json:
        return _echo_json(sums)
    for table, digest in sums.items():
        click.echo(f"{digest[:16]}  {table}")


def _masker(catalog, target: str):
    """A function masking one printed row of ``target``: personal fields of the ods resource,
    or for base tables the personal fields of the model's sources with the same names, person
    names and IDs of natural-person rows, and any resident ID / mobile left in free text."""
    from datarail.privacy import mask_record, mask_value, scrub_text
    from warehouse.history import split_target

    area, name = split_target(target)
    if area in ("ods", "share"):
        resource = catalog.resource_by_table(name)
        return lambda row: mask_record(resource, row)
    semantics: dict[str, str | None] = {}
    try:
        from warehouse.models import model_for

        for s in model_for(f"{area}.{name}").sources:
            if not s.is_base:
                for f in catalog.resource_by_table(s.table).fields:
                    semantics.setdefault(f.name, f.semantic)
    except DatarailError:
        pass
    person_cols = {"holder_name": "holder_kind", "subject_name": "subject_kind"}

    def mask(row: dict) -> dict:
        out = {}
        for k, v in row.items():
            if k in person_cols and row.get(person_cols[k]) in ("resident_id", "natural_person"):
                out[k] = mask_value("person_name", v)
            elif semantics.get(k) in ("resident_id", "phone", "person_name", "address", "email"):
                out[k] = mask_value(semantics[k], v)
            elif isinstance(v, str) and semantics.get(k) != "uscc":
                out[k] = scrub_text(v)
            else:
                out[k] = v
        return out
    return mask


@click.command("asof")
@click.argument("table")
@click.argument("key")
@click.argument("day", metavar="DATE")
@click.option("--history", is_flag=True, help="ods tables: list every version of the key instead")
@click.option("--json", "as_json", is_flag=True)
@click.option("--unmasked", is_flag=True, help="print personal data unmasked (stays on this host)")
def asof_cmd(table: str, key: str, day: str, history: bool, as_json: bool, unmasked: bool) -> None:
    """What TABLE said about KEY on DATE (YYYY-MM-DD): an ods table (current + history
    versions), or a base library (its model evaluated over the sources as of DATE).

    Composite ods keys: ``a,b``. Example: datarail asof base.population 330102199001011234 2026-11-22"""
    from warehouse.history import asof, versions

    _, catalog, engine = _runtime()
    try:
        on = date.fromisoformat(day)
    except ValueError as exc:
        raise click.BadParameter(f"{day!r} is not a date (YYYY-MM-DD)", param_hint="DATE") from exc
    try:
        rows = versions(engine, catalog, table, key) if history else asof(engine, catalog, table, key, on)
    except (DatarailError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not unmasked:
        mask = _masker(catalog, table)
        rows = [mask(r) for r in rows]
    else:
        log.warning("asof %s: printing unmasked personal data", table)
    if as_json:
        return _echo_json({"table": table, "date": day, "history": history, "rows": rows})
    if not rows:
        click.echo(f"{table}: no row for that key on {day}")
        return
    for i, row in enumerate(rows, 1):
        click.echo(f"-- {table} row {i} of {len(rows)}" + ("" if history else f" as of {day}"))
        width = max(len(k) for k in row)
        for k, v in row.items():
            click.echo(f"  {k:<{width}}  {'' if v is None else v}")


@click.command("lineage")
@click.argument("table")
@click.option("--json", "as_json", is_flag=True)
def lineage_cmd(table: str, as_json: bool) -> None:
    """Which ods resources, loads and runs fed TABLE (base.*, share.*, ods.*, or
    quality.conflicts.<library>), and its latest builds."""
    from warehouse.history import lineage

    _, catalog, engine = _runtime()
    try:
        info = lineage(engine, catalog, table)
    except (DatarailError, KeyError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        return _echo_json(info)
    click.echo(f"{info['target']}")
    for s in info["sources"]:
        click.echo(f"  <- {s['resource']:<14} unit {s['unit'] or '-':<6} latest interval {s['interval_key'] or '-'}"
                   f"  built {s['built_at'] or '-'}")
        for interval_key, run_id in s["runs"]:
            click.echo(f"       run {interval_key}  {run_id or ''}")
    for title, loads in (("loads", info["loads"]), ("pending, for the next build", info["pending"])):
        if loads:
            click.echo(f"  {title} ({len(loads)}):")
        for ld in loads:
            click.echo(f"    {ld['loaded_at']}  {ld['resource']:<12} {ld['interval_key']}  +{ld['inserted']} "
                       f"~{ld['updated']} -{ld['deleted']} late {ld['late']}")
    for b in info["builds"]:
        click.echo(f"  build {b['finished_at']}  {b['mode']:<11} {b['row_count']} rows  {b['duration_s']:.2f} s")


COMMANDS = [warehouse, asof_cmd, lineage_cmd]
