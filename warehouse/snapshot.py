"""Write the catalog into the meta area (``meta.catalog_*``), replacing the previous
snapshot in one transaction, so metrics are plain SQL over the warehouse."""

from __future__ import annotations

import sqlalchemy as sa

from catalog.models import CYCLE_DAYS, Catalog


def snapshot_catalog(engine: sa.Engine, catalog: Catalog) -> dict[str, int]:
    """Replace ``meta.catalog_*`` with this catalog; return row counts per table."""
    rows: dict[str, list[dict]] = {
        "catalog_units": [{"code": u.code, "name_zh": u.name_zh, "name_en": u.name_en,
                           "contact_email": u.contact_email, "region": u.region} for u in catalog.units],
        "catalog_resources": [{
            "code": r.code, "table_name": r.table, "name_zh": r.name_zh, "name_en": r.name_en, "unit": r.unit,
            "system_kind": catalog.unit(r.unit).system(r.system).kind, "sharing_type": r.sharing.type,
            "sharing_condition": r.sharing.condition, "base_library": r.base_library,
            "update_cycle": r.update_cycle, "cycle_days": CYCLE_DAYS[r.update_cycle], "status": r.status,
        } for r in catalog.resources],
        "catalog_grants": [{"resource": r.code, "unit": g} for r in catalog.resources for g in r.sharing.granted_to],
        "catalog_responsibilities": [{"unit": x.unit, "resource": x.resource, "cycle": x.cycle}
                                     for x in catalog.responsibilities],
        "catalog_items": [{"code": i.code, "name_zh": i.name_zh, "name_en": i.name_en,
                           "handling_unit": i.handling_unit} for i in catalog.items],
        "catalog_needs": [{"item": i.code, "need": n.code, "material_zh": n.material_zh}
                          for i, n in catalog.needs],
        "catalog_need_resources": [{"item": i.code, "need": n.code, "resource": res, "position": pos}
                                   for i, n in catalog.needs for pos, res in enumerate(n.resources)],
    }
    with engine.begin() as conn:
        for table, data in rows.items():
            conn.execute(sa.text(f"DELETE FROM meta.{table}"))  # table names are the literals above
            if data:
                cols = list(data[0])
                conn.execute(sa.text(f"INSERT INTO meta.{table} ({', '.join(cols)}) "
                                     f"VALUES ({', '.join(':' + c for c in cols)})"), data)
    return {t: len(d) for t, d in rows.items()}
