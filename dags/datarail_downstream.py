"""Airflow DAGs downstream of extraction: base libraries and publishing (asset-scheduled), metrics and reports
(asset-scheduled), the leadership export (daily)."""

from _factory import base_dag, export_dag, metrics_dag, publish_dag

from catalog import load_catalog
from datarail.settings import load_settings

datarail_base_libraries = base_dag(load_catalog(load_settings().catalog_dir))
datarail_publish = publish_dag()
datarail_metrics = metrics_dag()
datarail_leadership_export = export_dag()
