"""Small builders shared by tests: a tiny catalog and engines for both warehouses."""

from __future__ import annotations

from catalog.models import Catalog, Resource, Responsibility, ServiceItem, Unit

UNIT = {"code": "psb", "name_zh": "公安厅", "name_en": "Public Security", "contact_email": "psb@example.gov.cn",
        "region": "330000", "systems": [{"code": "huji", "name": "户籍", "kind": "sql", "conn_id": "c_psb"}]}
CONSUMER = {"code": "zwfw", "name_zh": "政务服务中心", "name_en": "Service Centre",
            "contact_email": "zwfw@example.gov.cn", "region": "330000"}


def person_resource(mode: str = "snapshot", **over) -> Resource:
    data = {
        "code": "RK-T-0001", "table": "person", "name_zh": "人口", "name_en": "Person", "unit": "psb",
        "system": "huji", "location": {"table": "t_person"},
        "fields": [{"name": "resident_id", "semantic": "resident_id", "required": True},
                   {"name": "name", "semantic": "person_name", "required": True},
                   {"name": "birth_date", "type": "date"},
                   {"name": "updated_at", "type": "datetime"}],
        "primary_key": ["resident_id"], "update_cycle": "daily",
        "change_tracking": {"mode": mode, "column": "updated_at" if mode == "watermark" else None},
        "sharing": {"type": "conditional", "condition": "办事需要", "granted_to": ["zwfw"]},
        "base_library": "population",
    }
    data.update(over)
    return Resource.model_validate(data)


def tiny_catalog(*resources: Resource, items: list[dict] | None = None) -> Catalog:
    resources = resources or (person_resource(),)
    return Catalog(units=(Unit.model_validate(UNIT), Unit.model_validate(CONSUMER)), resources=resources,
                   responsibilities=tuple(Responsibility(unit=r.unit, resource=r.code, cycle=r.update_cycle)
                                          for r in resources),
                   items=tuple(ServiceItem.model_validate(i) for i in (items or [])))
