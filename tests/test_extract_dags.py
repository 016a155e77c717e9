"""The extract task group: one task for ordinary resources, plan -> mapped key ranges ->
merge for resources with ``partition`` in the catalog."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import person_resource, tiny_catalog

pytestmark = pytest.mark.dags

DAGS = Path(__file__).resolve().parent.parent / "dags"


def test_partitioned_resources_get_mapped_key_range_tasks():
    sys.path.insert(0, str(DAGS))
    try:
        from _factory import extract_dag
    finally:
        sys.path.remove(str(DAGS))
    big = person_resource(code="RK-T-0009", table="big_people",
                          fields=[{"name": "id", "type": "integer", "required": True}, {"name": "name"}],
                          primary_key=["id"], partition={"column": "id", "ranges": 4})
    small = person_resource()
    catalog = tiny_catalog(big, small)
    dag = extract_dag(catalog, catalog.unit("psb"))
    ids = {t.task_id for t in dag.tasks}
    assert {"big_people.plan_ranges", "big_people.extract_range", "big_people.extract",
            "big_people.validate", "big_people.load"} <= ids
    assert {"person.extract", "person.validate"} <= ids and "person.plan_ranges" not in ids
    mapped = dag.get_task("big_people.extract_range")
    assert type(mapped).__name__.endswith("MappedOperator")
    assert dag.get_task("big_people.extract").upstream_task_ids == {"big_people.extract_range"}
    assert dag.get_task("big_people.validate").upstream_task_ids == {"big_people.extract"}


def test_partition_must_name_an_integer_key():
    with pytest.raises(ValueError, match="integer primary-key field"):
        person_resource(partition={"column": "name", "ranges": 2})
