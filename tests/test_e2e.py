"""End to end: the whole pipeline run by Airflow (``python -m datarail.demo``, which runs
every DAG with ``dag.test()``) on the sandbox, then the exact counts the injected defects
imply (from the sandbox manifest), the sharing metrics computed independently from the
catalog (tests/oracle.py), the cross-source conflicts the sandbox seeded (per attribute and
authoritative unit, and their tickets), masking of everything that leaves the warehouse, and
idempotency of a second run. Once on the embedded default, once with PostgreSQL as the
warehouse and MariaDB as the SQL source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog import load_catalog
from datarail.privacy import find_unmasked
from datarail.settings import load_settings
from tests.oracle import expected_conflict_checks, expected_conflicts, expected_metrics

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parent.parent


def run_demo(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "datarail.demo", *args], env={**os.environ, **env}, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"demo failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}"
    return out.stdout + out.stderr


def snapshot(engine) -> dict:
    """Everything a rerun must leave unchanged."""
    with engine.connect() as c:
        q = lambda sql: [tuple(r) for r in c.execute(sa.text(sql))]  # noqa: E731
        return {
            "runs": q("SELECT resource, extracted, loaded, quarantined FROM meta.runs ORDER BY resource"),
            "tickets": q("SELECT ticket_id, state, failed FROM quality.tickets ORDER BY ticket_id"),
            "events": q("SELECT COUNT(*) FROM quality.ticket_events"),
            "quarantine": q("SELECT resource, COUNT(*) FROM quality.quarantine GROUP BY resource ORDER BY resource"),
            "ods_rows": q("SELECT SUM(loaded) FROM meta.runs"),
            "metrics": q("SELECT metric, scope_type, scope, value FROM meta.metric_snapshots "
                         "ORDER BY metric, scope_type, scope"),
            "conflicts": q("SELECT library, subject_id, attribute, other_resource, other_value, resource, unit, "
                           "first_interval, last_interval FROM quality.conflicts "
                           "ORDER BY library, subject_id, attribute, other_resource, other_value"),
        }


def check_pipeline(env: dict, output: str) -> dict:
    settings = load_settings(env)
    catalog = load_catalog(settings.catalog_dir)
    manifest = json.loads((settings.sandbox_dir / "manifest.json").read_text(encoding="utf-8"))
    from warehouse.engine import get_engine
    engine = get_engine(settings)
    run_date = manifest["run_date"]

    with engine.connect() as c:
        runs = {r.resource: r for r in c.execute(sa.text(
            "SELECT resource, status, extracted, loaded, quarantined FROM meta.runs"))}
        failing = Counter()
        for r in c.execute(sa.text("SELECT resource, check_id, failed FROM quality.check_results WHERE failed > 0")):
            failing[(r.resource, r.check_id)] = r.failed
        tickets = Counter(u for (u,) in c.execute(sa.text(
            "SELECT unit FROM quality.tickets WHERE state <> 'resolved'")))
        ods_counts = {r.code: c.execute(sa.text(f"SELECT COUNT(*) FROM ods.{r.table}")).scalar()
                      for r in catalog.resources if r.status == "active"}
        conflicts = {(r.library, r.attribute, r.unit, r.resource): {"conflicts": r.n, "subjects": r.subjects}
                     for r in c.execute(sa.text(
                         "SELECT library, attribute, unit, resource, COUNT(*) AS n, COUNT(DISTINCT subject_id) "
                         "AS subjects FROM quality.conflicts GROUP BY library, attribute, unit, resource"))}
        metrics = {(m.metric, m.scope_type, m.scope): m for m in c.execute(sa.text(
            "SELECT metric, scope_type, scope, numerator, denominator, value FROM meta.metric_snapshots "
            "WHERE run_date = :d"), {"d": run_date})}

    # The seeded cross-source disagreements, and nothing else, are conflicts, attributed to the
    # unit the catalog declares authoritative for the attribute; each failing attribute is a
    # check of that unit's resource (and a ticket, counted below).
    want_conflicts = expected_conflicts(catalog, manifest)
    assert conflicts == want_conflicts
    assert {(lib, attr, unit) for lib, attr, unit, _ in want_conflicts} == {
        ("population", "name", "psb"), ("population", "birth_date", "psb"), ("population", "address", "psb"),
        ("legal_entity", "name", "amr"), ("legal_entity", "legal_rep_name", "amr"),
        ("legal_entity", "address", "amr")}
    conflict_checks = expected_conflict_checks(catalog, manifest)
    for unit in {u for _, _, u, _ in want_conflicts}:
        total = sum(n["conflicts"] for (_, _, u, _), n in want_conflicts.items() if u == unit)
        assert f"  {unit:<6} {total} (" in output, unit

    # Every extracted row is loaded or quarantined, exactly as the injected defects imply.
    for r in catalog.resources:
        m = manifest["resources"].get(r.code)
        if r.status != "active":
            assert r.code not in runs
            continue
        run = runs[r.code]
        assert run.status == "loaded", r.code
        assert (run.extracted, run.quarantined) == (m["rows"], m["quarantined"]), r.code
        assert run.loaded == m["rows"] - m["quarantined"] == ods_counts[r.code], r.code
        expected = {k: v for k, v in m["checks"].items() if v}
        expected |= {chk: n for (res, chk), n in conflict_checks.items() if res == r.code}
        got = {chk: n for (res, chk), n in failing.items() if res == r.code}
        assert got == expected, r.code

    # One live ticket per failing (resource, check), per source unit.
    want = Counter()
    for r in catalog.resources:
        want[r.unit] += sum(1 for n in manifest["resources"].get(r.code, {}).get("checks", {}).values() if n)
        want[r.unit] += sum(1 for res, _ in conflict_checks if res == r.code)
    assert tickets == want

    # The metrics match an independent computation from the catalog and the manifest.
    oracle = expected_metrics(catalog, manifest, threshold=settings.quality_threshold)
    sr = metrics[("sharing_ratio", "overall", "all")]
    assert (sr.numerator, sr.denominator) == (oracle["needs_met"], oracle["needs_total"])
    assert sr.value == pytest.approx(oracle["sharing_ratio"])
    assert 0.0 < sr.value < 1.0
    fs = metrics[("items_fully_served", "overall", "all")]
    assert (fs.numerator, fs.denominator) == (oracle["items_fully_served"], oracle["items_total"])
    for unit, rate in oracle["provision_rate"].items():
        assert metrics[("provision_rate", "unit", unit)].value == pytest.approx(rate), unit
    assert f"sharing ratio: {100 * oracle['sharing_ratio']:.1f}%" in output

    # Reports, exports and logs leave the warehouse: no unmasked personal data in any of them.
    reports = settings.reports_dir / run_date
    exports = settings.exports_dir / run_date
    assert (reports / "index.html").exists()
    assert {p.name for p in exports.iterdir()} >= {f"bulletin_{run_date}.xlsx", f"metrics_{run_date}.csv",
                                                   f"sharing_list_{run_date}.json", f"sharing_list_{run_date}.csv"}
    leaks = {}
    texts = [*reports.glob("*.html"), *exports.glob("*.csv"), *exports.glob("*.json"),
             *(settings.airflow_home / "logs").rglob("*.log")]
    for path in texts:
        found = find_unmasked(path.read_text(encoding="utf-8-sig", errors="replace"))
        if found:
            leaks[str(path)] = found[:3]
    import openpyxl
    wb = openpyxl.load_workbook(exports / f"bulletin_{run_date}.xlsx")
    cells = " ".join(str(v) for ws in wb for row in ws.iter_rows(values_only=True) for v in row if v is not None)
    assert find_unmasked(cells) == []
    assert leaks == {}
    return snapshot(engine)


def test_demo_on_embedded_default_is_exact_and_idempotent(tmp_path):
    env = {"DATARAIL_HOME": str(tmp_path / "home")}
    first = check_pipeline(env, run_demo(env))
    second = check_pipeline(env, run_demo(env, "--skip-sandbox"))
    assert second == first


def test_demo_on_postgresql_with_mariadb_sources(tmp_path, pg_url, mariadb_url):
    env = {"DATARAIL_HOME": str(tmp_path / "home"), "DATARAIL_WAREHOUSE_URL": pg_url}
    output = run_demo(env, "--sources-sql-url", mariadb_url)
    conns = json.loads((tmp_path / "home" / "sandbox" / "connections.json").read_text())
    assert {c["conn_type"] for c in conns.values()} >= {"mysql", "fs", "http"}
    check_pipeline(env, output)
