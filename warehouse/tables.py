"""ods and share tables, built from the catalog with SQLAlchemy Core (their columns are
catalog fields, so they cannot be static DDL). Identifiers were checked by the catalog
models; SQLAlchemy quotes them."""

from __future__ import annotations

import sqlalchemy as sa

from catalog.models import Resource

TYPES = {"string": sa.Text, "integer": sa.BigInteger, "decimal": sa.Float, "date": sa.Date,
         "datetime": sa.DateTime, "boolean": sa.Boolean}

# Load metadata carried by every ods row.
ODS_META = ("_run_id", "_interval_key", "_row_hash", "_loaded_at")


def _field_columns(resource: Resource) -> list[sa.Column]:
    return [sa.Column(f.name, TYPES[f.type](), primary_key=f.name in resource.primary_key,
                      nullable=f.name not in resource.primary_key)
            for f in resource.fields]


def ods_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``ods.<table>``: the source resource as delivered and validated, one row per key."""
    return sa.Table(resource.table, metadata or sa.MetaData(), *_field_columns(resource),
                    sa.Column("_run_id", sa.String(250)), sa.Column("_interval_key", sa.String(40)),
                    sa.Column("_row_hash", sa.String(64), nullable=False),
                    sa.Column("_loaded_at", sa.DateTime(timezone=False), nullable=False),
                    schema="ods")


def share_table(resource: Resource, metadata: sa.MetaData | None = None) -> sa.Table:
    """``share.<table>``: the published dataset: only rows that passed, plus the flag a
    consumer needs (``_quality_status``: ok, or the open ticket state of the resource)."""
    return sa.Table(resource.table, metadata or sa.MetaData(), *_field_columns(resource),
                    sa.Column("_quality_status", sa.String(32), nullable=False),
                    sa.Column("_published_interval", sa.String(40), nullable=False),
                    schema="share")


def ensure(engine: sa.Engine, *tables: sa.Table) -> None:
    """Create the tables if missing (idempotent)."""
    with engine.begin() as conn:
        for t in tables:
            t.create(conn, checkfirst=True)
