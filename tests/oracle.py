"""Independent oracle of the sharing metrics, for the end-to-end test.

It computes what the metrics *should* be from two inputs only: the catalog (what each service
item needs and which resource meets it) and the sandbox manifest (what the sandbox sources
really deliver). It deliberately imports nothing from ``metrics/`` or ``warehouse/``, so a bug
there cannot hide itself by being repeated here. The rules are the ones pinned in
``catalog/README.md`` ("Sharing-need semantics").

Manifest format (written by ``sandbox build``)::

    {"resources": {"RK-GA-0001": {"rows": 1200, "quarantined": 14, "stale": false, ...}, ...}}

``rows`` is the number of rows the source delivers (extracted), ``quarantined`` how many of them
fail a blocking check, ``stale`` whether the newest record is older than the resource's update
cycle allows (``CYCLE_DAYS``). A resource absent from the manifest, or with ``rows`` 0, is not
delivered. Loaded rows = rows - quarantined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog.loader import load_catalog
from catalog.models import Catalog, Resource

# Order matters: the first failing condition is the reason reported for a resource.
REASONS = ("not_delivered", "not_shared", "not_granted", "stale", "failing_quality")
NO_RESOURCE = "no_resource"


def _as_catalog(catalog: Catalog | str | Path) -> Catalog:
    return catalog if isinstance(catalog, Catalog) else load_catalog(catalog)


def _delivery(manifest: dict[str, Any], code: str) -> dict[str, Any] | None:
    """The manifest entry of a resource if it delivered at least one row, else None."""
    entry = (manifest.get("resources") or {}).get(code)
    if not entry or int(entry.get("rows") or 0) <= 0:
        return None
    return entry


def resource_reason(resource: Resource, consumer: str, manifest: dict[str, Any],
                    threshold: float = 0.95) -> str | None:
    """Why ``resource`` cannot serve ``consumer`` in this run, or None when it is usable."""
    delivered = _delivery(manifest, resource.code)
    if resource.status != "active" or delivered is None:
        return "not_delivered"
    if resource.sharing.type == "not_shared":
        return "not_shared"
    if (resource.sharing.type == "conditional" and consumer != resource.unit
            and consumer not in resource.sharing.granted_to):
        return "not_granted"
    if bool(delivered.get("stale", False)):
        return "stale"
    rows = int(delivered["rows"])
    loaded = rows - int(delivered.get("quarantined") or 0)
    if loaded / rows < threshold:
        return "failing_quality"
    return None


def expected_need_status(catalog: Catalog | str | Path, manifest: dict[str, Any],
                         threshold: float = 0.95) -> dict[tuple[str, str], tuple[bool, str | None]]:
    """Per (item code, need code): (met, reason). A need is met iff ANY listed resource is
    usable for the item's handling unit; an unmet need's reason is ``no_resource`` for an empty
    list, else the reason of its FIRST listed resource."""
    cat = _as_catalog(catalog)
    by_code = {r.code: r for r in cat.resources}
    out: dict[tuple[str, str], tuple[bool, str | None]] = {}
    for item in cat.items:
        for need in item.needs:
            if not need.resources:
                out[(item.code, need.code)] = (False, NO_RESOURCE)
                continue
            reasons = [resource_reason(by_code[c], item.handling_unit, manifest, threshold)
                       for c in need.resources]
            met = any(r is None for r in reasons)
            out[(item.code, need.code)] = (met, None if met else reasons[0])
    return out


def expected_metrics(catalog: Catalog | str | Path, manifest: dict[str, Any],
                     threshold: float = 0.95) -> dict[str, Any]:
    """Sharing ratio, items fully served, need counts and provision rate per unit.

    Provision rate of a unit = resources on its responsibility list that are active and
    delivered in this run (rows > 0) / resources on its list.
    """
    cat = _as_catalog(catalog)
    status = expected_need_status(cat, manifest, threshold)
    needs_met = sum(1 for met, _ in status.values() if met)
    fully = sum(1 for item in cat.items
                if all(status[(item.code, n.code)][0] for n in item.needs))
    by_code = {r.code: r for r in cat.resources}
    listed: dict[str, int] = {}
    provided: dict[str, int] = {}
    for resp in cat.responsibilities:
        listed[resp.unit] = listed.get(resp.unit, 0) + 1
        res = by_code[resp.resource]
        if res.status == "active" and _delivery(manifest, res.code) is not None:
            provided[resp.unit] = provided.get(resp.unit, 0) + 1
    return {
        "sharing_ratio": needs_met / len(status) if status else 0.0,
        "items_fully_served": fully,
        "items_total": len(cat.items),
        "needs_total": len(status),
        "needs_met": needs_met,
        "provision_rate": {u: provided.get(u, 0) / n for u, n in listed.items()},
    }


def unmet_by_reason(catalog: Catalog | str | Path, manifest: dict[str, Any],
                    threshold: float = 0.95) -> dict[str, int]:
    """Count of unmet needs per reason: the breakdown a bulletin shows next to the ratio."""
    counts: dict[str, int] = {}
    for met, reason in expected_need_status(catalog, manifest, threshold).values():
        if not met:
            counts[reason] = counts.get(reason, 0) + 1
    return counts
