"""The benchmark's catalog entry: the ``population`` table as a datarail resource."""

from __future__ import annotations

from catalog.models import Resource

FIELDS = [
    {"name": "id", "type": "integer", "required": True},
    {"name": "id_card", "semantic": "resident_id", "required": True},
    {"name": "name", "semantic": "person_name", "required": True},
    {"name": "gender", "values": ["男", "女"]},
    {"name": "birth_date", "type": "date"},
    {"name": "region_code", "semantic": "division_code"},
    {"name": "address", "semantic": "address"},
    {"name": "phone", "semantic": "phone"},
    {"name": "updated_at", "type": "datetime", "required": True},
]


def population_resource(**over) -> Resource:
    """``BENCH-POP-1``: watermark on ``updated_at`` (1 day lookback), primary key ``id``."""
    data = {
        "code": "BENCH-POP-1", "table": "bench_population", "name_zh": "人口基准", "name_en": "Population bench",
        "unit": "psb", "system": "huji", "location": {"table": "population"}, "fields": FIELDS,
        "primary_key": ["id"], "change_tracking": {"mode": "watermark", "column": "updated_at", "lookback_days": 1},
        "update_cycle": "daily", "sharing": {"type": "unconditional"}, "base_library": "none",
    }
    data.update(over)
    return Resource.model_validate(data)
