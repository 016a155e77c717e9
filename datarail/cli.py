"""The ``datarail`` command line: what a data engineer does by hand.

    datarail catalog validate
    datarail sandbox build [--seed N] [--mariadb URL] [--postgres URL]
    datarail warehouse migrate | status | build | checksum   (datarail/commands/warehouse_history.py)
    datarail asof TABLE KEY DATE / datarail lineage TABLE     (datarail/commands/warehouse_history.py)
    datarail tickets list [--unit U] [--state S] [--json]   (datarail/commands/tickets.py)
    datarail metrics [--date D] [--json]
    datarail demo [--skip-sandbox]
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import click

from datarail.errors import DatarailError
from datarail.settings import load_settings


def build_sandbox_for(settings, *, seed: int = 20261122, sql_urls: dict[str, str] | None = None) -> dict:
    """Build the sandbox of source systems under $DATARAIL_HOME/sandbox from the catalog."""
    from catalog import load_catalog
    from sandbox.build import build_sandbox

    return build_sandbox(load_catalog(settings.catalog_dir), settings.sandbox_dir, seed=seed, sql_urls=sql_urls)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log at INFO")
def main(verbose: bool) -> None:
    """datarail: let the data run instead of the people."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from datarail.privacy import MaskingFilter
    for h in logging.getLogger().handlers:
        h.addFilter(MaskingFilter())


@main.group()
def catalog() -> None:
    """The catalog (units, resources, responsibilities, service items)."""


@catalog.command("validate")
def catalog_validate() -> None:
    """Load and cross-check the catalog; errors name the file, the entry and the field."""
    from catalog import load_catalog

    settings = load_settings()
    try:
        c = load_catalog(settings.catalog_dir)
    except DatarailError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"catalog {settings.catalog_dir}: OK: {len(c.units)} units ({len(c.source_units)} source units), "
               f"{len(c.resources)} resources, {len(c.responsibilities)} responsibilities, "
               f"{len(c.items)} service items, {len(c.needs)} sharing needs")


@main.group()
def sandbox() -> None:
    """The sandbox of source systems used by the demo and the tests."""


@sandbox.command("build")
@click.option("--seed", type=int, default=20261122, show_default=True)
@click.option("--mariadb", "mariadb_url", help="load the SQL systems into this MariaDB database instead of SQLite")
@click.option("--postgres", "postgres_url", help="load the SQL systems into this PostgreSQL database instead")
def sandbox_build(seed: int, mariadb_url: str | None, postgres_url: str | None) -> None:
    """Generate the source systems deterministically from a seed."""
    from catalog import load_catalog

    settings = load_settings()
    url = mariadb_url or postgres_url
    sql_urls = None
    if url:
        c = load_catalog(settings.catalog_dir)
        sql_urls = {s.conn_id: url for u in c.units for s in u.systems if s.kind == "sql"}
    manifest = build_sandbox_for(settings, seed=seed, sql_urls=sql_urls)
    rows = sum(r["rows"] for r in manifest["resources"].values())
    click.echo(f"sandbox {settings.sandbox_dir}: {len(manifest['resources'])} resources, {rows} rows, "
               f"run date {manifest['run_date']}; manifest {settings.sandbox_dir / 'manifest.json'}")


@main.command()
@click.option("--date", "run_date", help="run date (YYYY-MM-DD); default: the latest snapshot")
@click.option("--json", "as_json", is_flag=True)
def metrics(run_date: str | None, as_json: bool) -> None:
    """Show the metric snapshot of a run date."""
    import sqlalchemy as sa

    from warehouse.engine import get_engine

    engine = get_engine(load_settings())
    with engine.connect() as conn:
        if not run_date:
            run_date = conn.execute(sa.text("SELECT MAX(run_date) FROM meta.metric_snapshots")).scalar()
        if not run_date:
            raise click.ClickException("no metric snapshot yet: run the pipeline (make demo)")
        rows = [dict(r) for r in conn.execute(sa.text(
            "SELECT metric, scope_type, scope, numerator, denominator, value FROM meta.metric_snapshots "
            "WHERE run_date = :d ORDER BY metric, scope_type, scope"), {"d": run_date}).mappings()]
    if as_json:
        return _echo_json({"run_date": run_date, "metrics": rows})
    click.echo(f"metrics for {run_date}")
    for r in rows:
        pct = r["metric"].endswith(("ratio", "rate", "served"))
        val = f"{100 * r['value']:.1f}%" if pct and r["value"] is not None else f"{r['value']:g}"
        frac = f" ({r['numerator']:g}/{r['denominator']:g})" if r["denominator"] else ""
        click.echo(f"  {r['metric']:<20} {r['scope_type']:<14} {r['scope']:<12} {val}{frac}")


@main.command()
@click.option("--skip-sandbox", is_flag=True, help="reuse the existing sandbox")
@click.option("--seed", type=int, default=20261122, show_default=True)
def demo(skip_sandbox: bool, seed: int) -> None:
    """Run the whole pipeline through Airflow on the embedded default and print a summary."""
    cmd = [sys.executable, "-m", "datarail.demo", "--seed", str(seed)] + (["--skip-sandbox"] if skip_sandbox else [])
    sys.exit(subprocess.call(cmd, env=os.environ.copy()))


from datarail.commands import register  # noqa: E402  (groups defined beside their concern)

register(main)

if __name__ == "__main__":
    main()
