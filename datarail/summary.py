"""The end-of-run summary the demo prints: read back from the warehouse, not from memory."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from datarail.settings import Settings


def collect(settings: Settings, run_date: date) -> dict:
    """Per-resource counts, tickets per unit, cross-source conflicts per authoritative unit and
    attribute, headline metrics and output paths for a run date."""
    from warehouse.engine import get_engine

    engine = get_engine(settings)
    d = run_date.isoformat()
    with engine.connect() as conn:
        resources = [dict(r) for r in conn.execute(sa.text(
            "SELECT s.resource, c.unit, c.name_zh, s.extracted, s.loaded, s.quarantined, s.delivered, s.fresh, "
            "s.quality_ok FROM meta.resource_status s JOIN meta.catalog_resources c ON c.code = s.resource "
            "WHERE s.run_date = :d ORDER BY c.unit, s.resource"), {"d": d}).mappings()]
        tickets = {r["unit"]: dict(r) for r in conn.execute(sa.text(
            "SELECT unit, SUM(CASE WHEN state <> 'resolved' THEN 1 ELSE 0 END) AS live, COUNT(*) AS total "
            "FROM quality.tickets GROUP BY unit ORDER BY unit")).mappings()}
        conflicts = [dict(r) for r in conn.execute(sa.text(
            "SELECT unit, resource, library, attribute, COUNT(*) AS conflicts, COUNT(DISTINCT subject_id) AS subjects "
            "FROM quality.conflicts GROUP BY unit, resource, library, attribute "
            "ORDER BY unit, resource, library, attribute")).mappings()]
        metrics = {r["metric"]: dict(r) for r in conn.execute(sa.text(
            "SELECT metric, numerator, denominator, value FROM meta.metric_snapshots "
            "WHERE run_date = :d AND scope_type = 'overall'"), {"d": d}).mappings()}
    return {"resources": resources, "tickets": tickets, "conflicts": conflicts, "metrics": metrics,
            "reports": settings.reports_dir / d, "exports": settings.exports_dir / d}


def print_summary(settings: Settings, run_date: date, states: dict[str, str], elapsed_s: float) -> None:
    """Print the demo's closing summary to stdout (the one place datarail prints)."""
    s = collect(settings, run_date)
    out = [f"\n=== datarail demo: run date {run_date} ({elapsed_s:.0f} s) ===", "", "DAG runs:"]
    out += [f"  {dag:<36} {state}" for dag, state in states.items()]
    out += ["", f"  {'resource':<12} {'unit':<5} {'extracted':>9} {'loaded':>7} {'quarantined':>11}  status"]
    for r in s["resources"]:
        status = ("not delivered" if not r["delivered"] else
                  ", ".join(x for x, ok in (("stale", not r["fresh"]), ("failing quality", not r["quality_ok"]))
                            if ok) or "ok")
        out.append(f"  {r['resource']:<12} {r['unit']:<5} {r['extracted']:>9} {r['loaded']:>7} "
                   f"{r['quarantined']:>11}  {status}")
    out += ["", "Feedback tickets per source unit (open / all):"]
    out += [f"  {u:<6} {t['live']} / {t['total']}" for u, t in s["tickets"].items()]
    out += ["", "Cross-source conflicts per authoritative unit (quality.conflicts):"]
    per_unit: dict[str, list[dict]] = {}
    for c in s["conflicts"]:
        per_unit.setdefault(c["unit"], []).append(c)
    if not per_unit:
        out.append("  none")
    for unit, rows in per_unit.items():
        detail = ", ".join(f"{c['library']}.{c['attribute']} {c['conflicts']}" for c in rows)
        out.append(f"  {unit:<6} {sum(c['conflicts'] for c in rows)} ({detail})")
    m = s["metrics"]
    if "sharing_ratio" in m:
        sr = m["sharing_ratio"]
        out += ["", f"sharing ratio: {100 * sr['value']:.1f}%  ({sr['numerator']:.0f} of {sr['denominator']:.0f} needs met)"]
    if "items_fully_served" in m:
        it = m["items_fully_served"]
        out.append(f"items fully served: {it['numerator']:.0f} of {it['denominator']:.0f} "
                   f"({100 * it['value']:.1f}%)")
    out += ["", f"quality reports:   {s['reports'] / 'index.html'}",
            f"leadership export: {s['exports']}/ (bulletin_{run_date}.xlsx, metrics_{run_date}.csv)",
            f"sharing list:      {s['exports']}/sharing_list_{run_date}.json",
            f"warehouse:         {settings.warehouse_url or settings.warehouse_dir}"]
    print("\n".join(out))
