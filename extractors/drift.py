"""Schema drift: compare what a source delivers with the catalog, and apply the resource's
policy (``Resource.schema_drift``).

Detected, per delivery:

- **new** columns: the source has a column no catalog field maps to;
- **missing** columns: a catalog field has no source column (a missing *required*,
  primary-key or watermark column is always a :class:`SchemaDriftError`, whatever the policy);
- **retyped** columns (typed sources: SQL): the source column's type cannot hold the
  field's catalog type (a ``date`` field read from an ``INTEGER`` column), or its type
  changed since the last delivery (the state keeps the source schema last seen).

Policies:

| policy | new column | missing optional column | retyped column |
|---|---|---|---|
| ``evolve`` (default) | staged as an extra text column ``_new_<name>``; recorded | staged as nulls; recorded | staged as text; validation types it (values that do not coerce are quarantined) |
| ``freeze`` | error | error | error |
| ``discard_row`` | rows holding a value in it are set aside (rejects file), counted | staged as nulls | rows whose value does not coerce to the catalog type are set aside, counted |
| ``discard_value`` | its values are dropped, counted | staged as nulls | values that do not coerce are staged as null, counted |

Every error names the resource, the column and an offending row. Set-aside rows are never
lost: they are written to ``rejects.parquet`` beside the staged files with the reason, and
the run summary reconciles ``rows_read = rows staged + rows discarded``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.models import Resource
from datarail.errors import SchemaDriftError
from datarail.privacy import scrub_text

log = logging.getLogger(__name__)

POLICIES = ("evolve", "freeze", "discard_row", "discard_value")
NEW_PREFIX = "_new_"


@dataclass
class Drift:
    """What drifted in one delivery and what the policy did about it (for the run summary)."""

    policy: str = "evolve"
    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    retyped: dict[str, str] = field(default_factory=dict)
    discarded_rows: int = 0
    discarded_values: int = 0

    @property
    def any(self) -> bool:
        return bool(self.new or self.missing or self.retyped)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def policy_of(resource: Resource) -> str:
    """The resource's drift policy (``evolve`` when the catalog does not say)."""
    return getattr(resource, "schema_drift", None) or "evolve"


def drift_error(resource: Resource, column: str, what: str, offender: str | None, *, field: str | None = None,
                row: int | None = None) -> SchemaDriftError:
    """A :class:`SchemaDriftError` naming the resource, the column and an offending row."""
    where = f"; offending row: {offender}" if offender else ""
    return SchemaDriftError(
        f"schema drift under policy {policy_of(resource)}: column {scrub_text(column)} {what}{where}",
        unit=resource.unit, resource=resource.code, field=field or column, row=row,
        hint="Ask the unit to restore the agreed layout, or update the catalog (fields / schema_drift)")


# --------------------------------------------------------------------------------------------
# SQL types vs catalog types
# --------------------------------------------------------------------------------------------


def type_family(sa_type: Any) -> str:
    """A coarse family of a reflected SQLAlchemy type: text, integer, decimal, float, date,
    datetime, boolean, time, binary or other."""
    import sqlalchemy as sa

    if isinstance(sa_type, sa.Boolean):
        return "boolean"
    if isinstance(sa_type, sa.DateTime):
        return "datetime"
    if isinstance(sa_type, sa.Date):
        return "date"
    if isinstance(sa_type, sa.Time):
        return "time"
    if isinstance(sa_type, sa.Integer):
        return "integer"
    if isinstance(sa_type, sa.Float):
        return "float"
    if isinstance(sa_type, sa.Numeric):
        return "decimal"
    if isinstance(sa_type, (sa.String, sa.Text, sa.Enum)):
        return "text"
    if isinstance(sa_type, (sa.LargeBinary, sa.types._Binary)):
        return "binary"
    return "other"


# catalog type -> source type families that can hold it (text can hold anything: validation types it)
COMPATIBLE: dict[str, set[str]] = {
    "string": {"text", "integer", "decimal", "float", "date", "datetime", "boolean", "time", "binary", "other"},
    "integer": {"integer", "decimal", "text", "boolean"},
    "decimal": {"integer", "decimal", "float", "text"},
    "date": {"date", "datetime", "text"},
    "datetime": {"datetime", "date", "text"},
    "boolean": {"boolean", "integer", "text"},
}


def retyped_columns(resource: Resource, families: dict[str, str], previous: dict[str, str] | None) -> dict[str, str]:
    """Fields whose source column (``families``: field name -> source type family) cannot hold
    the catalog type, or whose family changed since the ``previous`` delivery."""
    out: dict[str, str] = {}
    for f in resource.fields:
        fam = families.get(f.name)
        if fam is None:
            continue
        if fam not in COMPATIBLE[f.type]:
            out[f.name] = f"source type {fam} cannot hold catalog type {f.type}"
        elif previous and previous.get(f.name) and previous[f.name] != fam:
            out[f.name] = f"source type changed from {previous[f.name]} to {fam}"
    return out


# --------------------------------------------------------------------------------------------
# value conformance (discard_row / discard_value on retyped columns)
# --------------------------------------------------------------------------------------------


def nonconforming(values: pa.Array, ftype: str) -> pa.Array:
    """Boolean mask: non-null staged text that does not coerce to ``ftype`` (the same rules
    as validation's ``type:`` check, from :mod:`quality.coerce`)."""
    import pandas as pd

    from quality.coerce import coerce_series

    if ftype == "string":
        return pa.array([False] * len(values))
    s = pd.Series(values.to_pylist(), dtype="object").astype("str").where(pd.Series(values.is_valid().to_pylist()))
    _, failed = coerce_series(s, ftype)
    return pa.array(failed.fillna(False).astype(bool).to_numpy())


class Rejects:
    """Rows a drift policy set aside: written to ``rejects.parquet`` (``_source``, ``reason``,
    ``record`` as JSON text) so nothing is silently lost."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / "rejects.parquet"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            self.path.unlink()

    def add(self, source: str, reason: str, record: dict[str, Any]) -> None:
        """Set one row aside."""
        self.rows.append({"_source": source, "reason": reason,
                          "record": json.dumps(record, ensure_ascii=False, default=str)})

    def close(self) -> str | None:
        """Write the file (only when something was set aside); return its path."""
        if not self.rows:
            return None
        pq.write_table(pa.Table.from_pylist(self.rows, schema=pa.schema(
            [("_source", pa.string()), ("reason", pa.string()), ("record", pa.string())])), self.path)
        return str(self.path)


def new_column_name(source_name: str) -> str:
    """The staged name of a new (uncatalogued) source column under ``evolve``."""
    return NEW_PREFIX + str(source_name).strip()


def check_columns(resource: Resource, drift: Drift, *, where: str, header_row: str | None = None) -> None:
    """Column-level policy: under ``freeze`` any new, missing or retyped column is an error."""
    if drift.policy != "freeze" or not drift.any:
        return
    if drift.new:
        raise drift_error(resource, drift.new[0], f"is delivered by {where} but not in the catalog", header_row)
    if drift.missing:
        col = drift.missing[0]
        raise drift_error(resource, resource.field(col).source_name, f"is missing from {where}", header_row,
                          field=col)
    name, why = next(iter(drift.retyped.items()))
    raise drift_error(resource, resource.field(name).source_name, f"is retyped in {where} ({why})", header_row,
                      field=name)


def log_drift(resource: Resource, drift: Drift, where: str) -> None:
    """One WARNING line per delivery that drifted (column names only, never values)."""
    if drift.any:
        log.warning("resource %s: schema drift in %s (policy %s): new %s, missing %s, retyped %s",
                    resource.code, where, drift.policy, scrub_text(", ".join(drift.new)) or "-",
                    drift.missing or "-", drift.retyped or "-")


def split_new(available: Sequence[Any], mapping: Sequence[int | None]) -> list[int]:
    """Indexes of source columns no field maps to (ignoring blank header cells)."""
    used = {i for i in mapping if i is not None}
    return [i for i, n in enumerate(available) if i not in used and n is not None and str(n).strip()]


__all__ = ["COMPATIBLE", "Drift", "POLICIES", "Rejects", "check_columns", "drift_error", "log_drift",
           "new_column_name", "nonconforming", "policy_of", "retyped_columns", "split_new", "type_family"]
