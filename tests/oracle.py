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

Cross-source conflicts (:func:`expected_conflicts`) come from the manifest's ``conflicts``
lists: every seeded disagreement names the library, attribute and subject it concerns and the
value the other source now holds. They are attributed by the rule pinned in
``catalog/README.md`` (``authoritative_for``): the resource the catalog declares authoritative
for ``<library>.<attribute>``, else the library's default source.
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


# The default authoritative source per base library when the catalog declares none
# (catalog/README.md, ``authoritative_for``), by ods table.
DEFAULT_AUTHORITY = {"population": "household_register", "legal_entity": "business_registration"}


def authority_of(catalog: Catalog, library: str, attribute: str) -> Resource:
    """The resource a conflict on ``library.attribute`` is attributed to."""
    wanted = f"{library}.{attribute}"
    declared = [r for r in catalog.resources if wanted in r.authoritative_for]
    if declared:
        return declared[0]
    return next(r for r in catalog.resources if r.table == DEFAULT_AUTHORITY[library])


def expected_conflicts(catalog: Catalog | str | Path, manifest: dict[str, Any]) -> dict[tuple[str, str, str, str],
                                                                                         dict[str, int]]:
    """Per (library, attribute, unit, authoritative resource): the conflicts the warehouse must
    hold (one per subject, other source and value) and the subjects they concern.

    A seeded disagreement counts when both sides load: the other resource is active and
    delivered and the authoritative resource too (the sandbox seeds them on rows without
    defects, whose subject's register row is clean)."""
    cat = _as_catalog(catalog)
    by_code = {r.code: r for r in cat.resources}
    seen: dict[tuple[str, str, str, str], set[tuple]] = {}
    subjects: dict[tuple[str, str, str, str], set[str]] = {}
    for code, entry in (manifest.get("resources") or {}).items():
        res = by_code.get(code)
        if res is None or res.status != "active" or _delivery(manifest, code) is None:
            continue
        for c in entry.get("conflicts") or ():
            authority = authority_of(cat, c["library"], c["attribute"])
            if authority.code == code or _delivery(manifest, authority.code) is None:
                continue
            group = (c["library"], c["attribute"], authority.unit, authority.code)
            seen.setdefault(group, set()).add((c["subject"], code, str(c["value"])))
            subjects.setdefault(group, set()).add(str(c["subject"]))
    return {g: {"conflicts": len(rows), "subjects": len(subjects[g])} for g, rows in seen.items()}


def expected_conflict_checks(catalog: Catalog | str | Path, manifest: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Per (authoritative resource, ``conflict:<library>.<attribute>``): failing subjects, for
    every attribute with at least one conflict (the quality loop's checks and tickets)."""
    return {(code, f"conflict:{lib}.{attr}"): n["subjects"]
            for (lib, attr, _unit, code), n in expected_conflicts(catalog, manifest).items()}
