"""Extractors: read a catalog resource from its source system (SQL database, file drop,
HTTP JSON API) and stage it as Parquet under the run's data interval. Never imports Airflow.

Entry point: :func:`extractors.extract_resource`.
"""

from extractors.base import ConnInfo, ExtractResult, extract_resource

__all__ = ["ConnInfo", "ExtractResult", "extract_resource"]
