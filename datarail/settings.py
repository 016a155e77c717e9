"""Runtime settings: one place decides where data lives and which warehouse is used.

Everything the platform writes at run time (sandbox source systems, staging Parquet, the
embedded warehouse, reports, exports, Airflow's own database and logs) lives under one
folder, ``$DATARAIL_HOME`` (default ``var/`` in the repository), so a demo can be wiped
with one ``rm -rf``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one process; build it with :func:`load_settings`."""

    home: Path
    catalog_dir: Path
    warehouse_url: str | None  # None means the embedded SQLite default
    quality_threshold: float  # share of rows that must pass for a resource to count as quality-passing
    division_policy: str  # "current" | "historic": which division codes count as known

    @property
    def sandbox_dir(self) -> Path:
        return self.home / "sandbox"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def warehouse_dir(self) -> Path:
        return self.home / "warehouse"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def connections_file(self) -> Path:
        """Airflow connections of the sandbox source systems (written by ``sandbox build``)."""
        return self.sandbox_dir / "connections.json"

    @property
    def is_embedded(self) -> bool:
        return self.warehouse_url is None or self.warehouse_url.startswith("sqlite")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (``DATARAIL_*`` variables)."""
    env = os.environ if env is None else env
    home = Path(env.get("DATARAIL_HOME") or REPO_ROOT / "var").resolve()
    catalog_dir = Path(env.get("DATARAIL_CATALOG") or REPO_ROOT / "catalog" / "demo").resolve()
    return Settings(
        home=home,
        catalog_dir=catalog_dir,
        warehouse_url=env.get("DATARAIL_WAREHOUSE_URL") or None,
        quality_threshold=float(env.get("DATARAIL_QUALITY_THRESHOLD", "0.95")),
        division_policy=env.get("DATARAIL_DIVISION_POLICY", "historic"),
    )


def airflow_env(settings: Settings, *, overrides: dict[str, dict] | None = None) -> dict[str, str]:
    """Environment variables that point Airflow at this project and its runtime folder, plus
    one ``AIRFLOW_CONN_<ID>`` per sandbox connection (Airflow's own env-var connections).

    ``overrides`` replaces fields of named connections (e.g. the port of the sandbox API,
    known only once it listens).
    """
    import json

    env = {
        "DATARAIL_HOME": str(settings.home),
        "DATARAIL_REPO": str(REPO_ROOT),
        "DATARAIL_CATALOG": str(settings.catalog_dir),
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW_CONFIG": str(REPO_ROOT / "airflow.cfg"),
    }
    if settings.warehouse_url:
        env["DATARAIL_WAREHOUSE_URL"] = settings.warehouse_url
    conns: dict[str, dict] = {}
    if settings.connections_file.exists():
        conns = json.loads(settings.connections_file.read_text(encoding="utf-8"))
    for conn_id, fields in (overrides or {}).items():
        conns[conn_id] = {**conns.get(conn_id, {}), **fields}
    for conn_id, conn in conns.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({k: v for k, v in conn.items() if v is not None})
    return env
