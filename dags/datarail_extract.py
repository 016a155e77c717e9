"""Airflow DAGs: extract, one per source unit, generated from the catalog in catalog order."""

from _factory import extract_dag

from catalog import load_catalog
from datarail.settings import load_settings

_catalog = load_catalog(load_settings().catalog_dir)
for _unit in _catalog.source_units:
    if _catalog.resources_of(_unit.code):
        globals()[f"datarail_extract_{_unit.code}"] = extract_dag(_catalog, _unit)
