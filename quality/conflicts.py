"""Cross-source conflicts (``quality.conflicts``) as feedback tickets to the authoritative unit.

The base-library build (``warehouse/models.py``, conflict models in ``warehouse_sql/base/``)
keeps every disagreement between sources about one attribute of one person or entity
(name, gender, birth date, address; entity name, legal representative, domicile), attributed
to the resource the catalog declares authoritative for that attribute. This module is the
quality loop's side: once per data interval, after the build (the ``cross_checks`` task of
the publish DAG), each (library, attribute) becomes a warehouse check of the authoritative
resource, ``conflict:<library>.<attribute>``:

- evaluated: the subjects the authoritative resource holds; failed: the subjects some other
  source disagrees about (keys: the authoritative resource's key, which is the subject);
- severity ``warning``: the rows stay loaded and are published flagged (``under_rectification``)
  while the ticket is live; the authoritative unit confirms its value (a dispute,
  ``source_correct``, waives the subject) or corrects it at the source;
- results, evidence and the reproducing query go where the other checks' go
  (``check_results``, ``check_runs``, ``check_failures``), and the unit's tickets are updated
  from them: one ticket per (resource, attribute), resolved by the first run without conflicts.

Values stay in the warehouse: failing keys and samples are masked by the authoritative field's
semantic type (birth dates keep the year only: with the masked ID they would restore it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from datarail.privacy import mask_value, scrub_text
from quality.suite import SAMPLE_SIZE_DEFAULT
from warehouse.load import insert_check_results

if TYPE_CHECKING:
    from catalog.models import Catalog, Resource
    from datarail.interval import Interval

log = logging.getLogger(__name__)
KIND = "conflict"


@dataclass(frozen=True)
class ConflictCheck:
    """One compared attribute and the resource it is attributed to."""

    library: str
    attribute: str
    authority: Resource

    @property
    def check_id(self) -> str:
        return f"{KIND}:{self.library}.{self.attribute}"


def conflict_checks(catalog: Catalog) -> list[ConflictCheck]:
    """Every (library, attribute) a conflict model compares, with its authoritative resource:
    the catalog's ``authoritative_for`` declaration, else the model's ``authority:`` default
    (the same resolution as the build, which attributes the rows)."""
    from warehouse.models import base_models

    out = []
    for model in base_models():
        if not model.is_conflicts:
            continue
        for attribute in model.attributes:
            res = catalog.authority(f"{model.library}.{attribute}")
            if res is None and model.authority:
                res = catalog.resource_by_table(model.authority)
            if res is not None:
                out.append(ConflictCheck(model.library, attribute, res))
    return out


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def reproduce_sql(check: ConflictCheck) -> str:
    """The query listing the conflicts behind the check (catalog codes only are inlined)."""
    return ("SELECT subject_id, other_resource, other_value, authority_value, first_interval, last_interval "
            "FROM quality.conflicts WHERE library = " + _literal(check.library) + " AND attribute = "
            + _literal(check.attribute) + " AND resource = " + _literal(check.authority.code)
            + " ORDER BY subject_id, other_resource, other_value")


def _masker(resource: Resource, attribute: str):
    try:
        field = resource.field(attribute)
    except KeyError:
        return scrub_text
    if field.type in ("date", "datetime"):
        return lambda v: None if v is None else str(v)[:4] + "-**-**"
    if field.semantic:
        return lambda v: mask_value(field.semantic, v)
    return scrub_text


def _rule(check: ConflictCheck, unit_name: str) -> str:
    res = check.authority
    return (f"{check.library}.{check.attribute}：其他部门的数据与权威数据源 {res.code}（{res.name_zh}）一致；"
            f"不一致时由{unit_name}核实并在源头更正或确认 / every other source agrees with the authoritative "
            f"source {res.code} ({res.name_en}) on {check.attribute}; a disagreement is for its unit to "
            f"confirm or correct at the source")


def _one(conn: sa.Connection, catalog: Catalog, check: ConflictCheck, waived: frozenset[str]) -> tuple[dict, list]:
    res = check.authority
    q = conn.dialect.identifier_preparer.quote
    evaluated = conn.execute(sa.text(f"SELECT COUNT(*) FROM ods.{q(res.table)}")).scalar_one()
    rows = [dict(r) for r in conn.execute(sa.text(
        "SELECT subject_id, other_resource, other_value, authority_value FROM quality.conflicts "
        "WHERE library = :l AND attribute = :a AND resource = :r ORDER BY subject_id, other_resource, other_value"),
        {"l": check.library, "a": check.attribute, "r": res.code}).mappings()]
    subjects = sorted({r["subject_id"] for r in rows})
    keys = [json.dumps([s], ensure_ascii=False) for s in subjects]
    kept = [k for k in keys if k not in waived]
    key_field = res.primary_key[0]
    mask_key = _masker(res, key_field)
    mask = _masker(res, check.attribute)
    kept_subjects = {json.loads(k)[0] for k in kept}
    sample = [{key_field: mask_key(r["subject_id"]), check.attribute: mask(r["authority_value"]),
               "other_resource": r["other_resource"], "other_value": mask(r["other_value"])}
              for r in rows if r["subject_id"] in kept_subjects][:SAMPLE_SIZE_DEFAULT]
    unit = catalog.unit(res.unit)
    return ({"check_id": check.check_id, "kind": KIND, "field": check.attribute, "severity": "warning",
             "rule": _rule(check, unit.name_zh), "evaluated": int(evaluated), "failed": len(kept),
             "scope": "warehouse", "expectation": None, "waived": len(keys) - len(kept), "observed": len(rows),
             "failed_keys": [json.dumps([mask_key(json.loads(k)[0])], ensure_ascii=False) for k in kept],
             "sample": sample, "reproduce_sql": reproduce_sql(check)}, kept)


def run_conflict_checks(engine: sa.Engine, catalog: Catalog, interval: Interval) -> dict:
    """Turn the current ``quality.conflicts`` into check results of the authoritative
    resources delivered in ``interval`` (results belong to a run), keep the evidence and update
    their tickets. Returns {resource: {check_id: failed subjects}}."""
    import pandas as pd

    from quality.evidence import record_evidence
    from quality.tickets import update_tickets

    by_resource: dict[str, list[ConflictCheck]] = {}
    for check in conflict_checks(catalog):
        by_resource.setdefault(check.authority.code, []).append(check)
    out: dict[str, dict[str, int]] = {}
    for code, checks in by_resource.items():
        res = catalog.resource(code)
        inspector = sa.inspect(engine)
        if not inspector.has_table(res.table, schema="ods") or not inspector.has_table("conflicts", schema="quality"):
            continue
        with engine.begin() as conn:
            delivered = conn.execute(sa.text(
                "SELECT 1 FROM meta.runs WHERE resource = :r AND interval_key = :k AND status = 'loaded'"),
                {"r": code, "k": interval.key}).first()
            if not delivered:
                continue
            results, evidence = [], []
            for check in checks:
                waived = frozenset(r[0] for r in conn.execute(sa.text(
                    "SELECT row_key FROM quality.waivers WHERE resource = :r AND check_id = :c"),
                    {"r": code, "c": check.check_id}))
                result, keys = _one(conn, catalog, check, waived)
                results.append(result)
                evidence.append(keys)
            for c in results:
                conn.execute(sa.text("DELETE FROM quality.check_results WHERE resource = :r AND interval_key = :k "
                                     "AND check_id = :c"), {"r": code, "k": interval.key, "c": c["check_id"]})
            insert_check_results(conn, code, interval.key, results)
        frame = pd.DataFrame([{"check_id": r["check_id"], "_row": i + 1, "key": k}
                              for r, keys in zip(results, evidence, strict=True) for i, k in enumerate(keys)],
                             columns=["check_id", "_row", "key"])
        record_evidence(engine, res, interval, results, frame)
        update_tickets(engine, catalog, code, interval, check_ids=[r["check_id"] for r in results])
        out[code] = {r["check_id"]: r["failed"] for r in results}
    log.info("cross-source conflicts as checks [%s]: %s", interval.key, out)
    return out


__all__ = ["ConflictCheck", "conflict_checks", "reproduce_sql", "run_conflict_checks"]
