"""The central warehouse: engine (embedded SQLite or PostgreSQL), migrations, loads and
SQL-model execution. The SQL itself lives in ``warehouse_sql/``. Never imports Airflow."""

from warehouse.engine import AREAS, get_engine

__all__ = ["AREAS", "get_engine"]
