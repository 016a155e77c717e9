"""The demo: the whole pipeline run by Airflow (``dag.test()``) on the embedded default.

Runs in its own process (``python -m datarail.demo``) because Airflow reads its settings
when first imported: the environment is set before that. Order: sandbox -> Airflow
metadata DB -> sandbox API up -> extract DAG per unit -> base libraries -> publish ->
metrics + reports -> leadership export -> summary.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from datarail.interval import Interval

log = logging.getLogger("datarail.demo")

DOWNSTREAM = ("datarail_base_libraries", "datarail_publish", "datarail_metrics", "datarail_leadership_export")


def ensure_airflow_db(env: dict[str, str]) -> None:
    """Create/upgrade Airflow's metadata DB (a SQLite file under $DATARAIL_HOME/airflow)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    t0 = time.perf_counter()
    subprocess.run([str(airflow), "db", "migrate"], env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL)
    log.info("airflow metadata DB ready in %.1f s", time.perf_counter() - t0)


def run_dags(run_date: date, dag_ids: list[str] | None = None) -> dict[str, str]:
    """Run the DAGs in dependency order with ``dag.test()``; return {dag_id: state}."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from airflow.dag_processing.dagbag import BundleDagBag

    from datarail.settings import REPO_ROOT

    dags = REPO_ROOT / "dags"
    # As Airflow's DAG processor does: the bundle folder goes on sys.path (dags/_factory.py).
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    missing = [d for d in DOWNSTREAM if d not in bag.dag_ids]
    if missing:
        raise RuntimeError(f"DAGs not found in {REPO_ROOT / 'dags'}: {missing} (found {sorted(bag.dag_ids)})")
    extract_ids = sorted(d for d in bag.dag_ids if d.startswith("datarail_extract_"))
    order = dag_ids or [*extract_ids, *DOWNSTREAM]
    interval = Interval.daily(run_date)
    # A daily cron data interval [D, D+1) belongs to the run whose logical date is D+1 in
    # Airflow 3; the interval also goes in the conf so asset-scheduled DAGs use the same one.
    conf = {"interval_start": interval.start.isoformat(), "interval_end": interval.end.isoformat()}
    states = {}
    for dag_id in order:
        t0 = time.perf_counter()
        dr = bag.dags[dag_id].test(logical_date=interval.end, run_conf=conf)
        states[dag_id] = str(getattr(dr.state, "value", dr.state))
        log.info("DAG %s: %s in %.1f s", dag_id, states[dag_id], time.perf_counter() - t0)
    return states


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m datarail.demo [--skip-sandbox]``."""
    import argparse

    from datarail.settings import airflow_env, load_settings

    parser = argparse.ArgumentParser(prog="datarail demo")
    parser.add_argument("--skip-sandbox", action="store_true", help="reuse the existing sandbox")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--sources-sql-url", help="load the sandbox's SQL systems into this database "
                        "(e.g. a MariaDB URL) instead of SQLite files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from datarail.privacy import MaskingFilter
    for h in logging.getLogger().handlers:
        h.addFilter(MaskingFilter())

    settings = load_settings()
    t_start = time.perf_counter()
    if not args.skip_sandbox or not (settings.sandbox_dir / "manifest.json").exists():
        from catalog import load_catalog
        from datarail.cli import build_sandbox_for

        sql_urls = None
        if args.sources_sql_url:
            cat = load_catalog(settings.catalog_dir)
            sql_urls = {s.conn_id: args.sources_sql_url for u in cat.units for s in u.systems if s.kind == "sql"}
        build_sandbox_for(settings, seed=args.seed, sql_urls=sql_urls)
    manifest = json.loads((settings.sandbox_dir / "manifest.json").read_text(encoding="utf-8"))
    run_date = date.fromisoformat(manifest["run_date"])

    from sandbox.api_server import SandboxApi

    conns = json.loads(settings.connections_file.read_text(encoding="utf-8"))
    http_ids = [cid for cid, c in conns.items() if c.get("conn_type") == "http"]
    api_dir = settings.sandbox_dir / "api"
    token = next((conns[c].get("extra", {}).get("token") for c in http_ids), None)
    with SandboxApi(api_dir, token=token) as api:
        port = int(api.base_url.rsplit(":", 1)[1].split("/")[0])
        env = airflow_env(settings, overrides={cid: {"port": port} for cid in http_ids})
        os.environ.update(env)
        ensure_airflow_db(env)
        states = run_dags(run_date)
    failed = {k: v for k, v in states.items() if v != "success"}
    from datarail.summary import print_summary
    print_summary(settings, run_date, states, elapsed_s=time.perf_counter() - t_start)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
