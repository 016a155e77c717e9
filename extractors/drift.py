"""Schema drift: compare what a source delivers with the catalog, and apply the resource's
policy (``Resource.schema_drift``).

Detected, per delivery:

- **new** columns: the source has a column no catalog field maps to;
- **missing** columns: a catalog field has no source column (a missing *required*,
  primary-key or watermark column is always a :class:`SchemaDriftError`, whatever the policy);
- **retyped** columns. Typed sources (SQL): the source column's type cannot hold the
  field's catalog type (a ``date`` field read from an ``INTEGER`` column), or its type
  changed since the last delivery (the state keeps the source schema last seen). Untyped
  sources (files, JSON APIs): more than half of the field's non-empty values in the
  delivery do not fit the catalog type (:class:`RetypeWatch`).

The same policies hold for every source kind: SQL, file drops (CSV, XLSX, XLS) and JSON APIs.

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


# Shapes every value of which coerces (checked in Arrow, no Python per value); only the rest
# goes through quality.coerce. Years 1000-2999, days that exist in the month whatever the
# year (29 February is left to the slow path's calendar check).
_MONTH_DAY = (r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
              r"|(?:0[13578]|1[02])-31)")
_ISO_DAY = r"[12][0-9]{3}-" + _MONTH_DAY
_SURE = {
    "integer": r"^[+-]?[0-9]{1,15}$",
    "decimal": r"^[+-]?[0-9]{1,15}(?:\.[0-9]{1,15})?$",
    "date": f"^{_ISO_DAY}$",
    "datetime": f"^{_ISO_DAY}(?: (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])?$",
}


def nonconforming(values: pa.Array | pa.ChunkedArray, ftype: str) -> pa.Array:
    """Boolean mask (no nulls): non-null staged text that does not coerce to ``ftype`` (the
    same rules as validation's ``type:`` check, :mod:`quality.coerce`).

    Vectorised: values of a shape that always coerces (``2018-05-16``, ``1234``) are settled
    by an Arrow regex; only the others (other date shapes, junk) go through
    :func:`quality.coerce.coerce_series`. A clean 50,000-value chunk costs a few ms.
    """
    import numpy as np
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    if ftype == "string" or n == 0 or values.null_count == n:
        return pa.array(np.zeros(n, dtype=bool))
    if ftype == "boolean":
        from quality.coerce import _FALSE, _TRUE

        ok = pc.is_in(pc.utf8_lower(values), value_set=pa.array(sorted(_TRUE | _FALSE)))
        return pc.fill_null(pc.and_(pc.is_valid(values), pc.invert(ok)), False)
    sure = pc.fill_null(pc.match_substring_regex(values, _SURE[ftype]), True)  # nulls: nothing to check
    rest = pc.indices_nonzero(pc.invert(sure))
    bad = np.zeros(n, dtype=bool)
    if len(rest):
        from quality.coerce import coerce_series

        _, failed = coerce_series(pc.take(values, rest).to_pandas(), ftype)
        bad[rest.to_numpy()] = failed.fillna(False).astype(bool).to_numpy()
    return pa.array(bad)


class Rejects:
    """Rows a drift policy set aside: written to ``rejects.parquet`` (``_source``, ``reason``,
    ``record`` as JSON text) so nothing is silently lost. Streamed in row groups of
    ``batch_rows``: memory stays bounded however many rows are set aside."""

    SCHEMA = pa.schema([("_source", pa.string()), ("reason", pa.string()), ("record", pa.string())])

    def __init__(self, out_dir: Path, *, batch_rows: int = 10_000):
        self.path = Path(out_dir) / "rejects.parquet"
        self._tmp = self.path.with_name(".rejects.parquet.inprogress")
        self.batch_rows = batch_rows
        self.rows: list[dict[str, Any]] = []
        self.count = 0
        self._writer: pq.ParquetWriter | None = None
        for p in (self.path, self._tmp):
            if p.exists():
                p.unlink()

    def add(self, source: str, reason: str, record: dict[str, Any]) -> None:
        """Set one row aside."""
        self.rows.append({"_source": source, "reason": reason,
                          "record": json.dumps(record, ensure_ascii=False, default=str)})
        self.count += 1
        if len(self.rows) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        if self._writer is None:
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.SCHEMA)
        self._writer.write_table(pa.Table.from_pylist(self.rows, schema=self.SCHEMA))
        self.rows = []

    def close(self) -> str | None:
        """Write the file (only when something was set aside); return its path."""
        if not self.count:
            return None
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        self._tmp.replace(self.path)
        return str(self.path)

    def abort(self) -> None:
        """Forget everything (the run failed: nothing stays staged)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.rows, self.count = [], 0
        for p in (self.path, self._tmp):
            if p.exists():
                p.unlink()


# --------------------------------------------------------------------------------------------
# retyped columns of untyped sources (files, JSON APIs): judged on the delivered values
# --------------------------------------------------------------------------------------------

RETYPE_SHARE = 0.5  # retyped when MORE than this share of a column's non-empty values does not fit
FLAGS_FILE = ".drift-flags.parquet"


def json_misfit(value: Any, ftype: str) -> bool:
    """A JSON value whose kind no scalar field of ``ftype`` takes: an object or an array
    (any type), or a boolean where the catalog declares something other than a boolean."""
    return isinstance(value, (dict, list)) or (isinstance(value, bool) and ftype != "boolean")


class RetypeWatch:
    """Detect retyped columns of a file drop or JSON API from the values of one delivery.

    Files and APIs carry no column types, so a column is judged by what it delivers: a field
    is **retyped** when more than half (``RETYPE_SHARE``) of its non-empty values in the
    delivery do not fit the catalog type, i.e. do not coerce to it by validation's rules
    (:func:`nonconforming`) or, from a JSON API, arrive as an object, an array or a boolean
    where a scalar of another type is declared (:func:`json_misfit`). A few bad values in a
    healthy column are not drift: validation quarantines them.

    The writer calls :meth:`note` per row (raw values, JSON kinds) and :meth:`chunk` per
    row group (staged text: vectorised coercion check); only counts and the first offending
    row of each field are kept. Under ``discard_row`` / ``discard_value`` each row group's
    misfit flags are also spilled to a hidden Parquet file beside the staged parts, so that
    :meth:`apply` can set rows or values aside after the delivery is judged, row group by
    row group: memory stays bounded by the chunk size.
    """

    def __init__(self, resource: Resource, out_dir: Path, *, json_kinds: bool = False):
        self.resource = resource
        self.policy = policy_of(resource)
        self.types = [f.type for f in resource.fields]
        self.json_kinds = json_kinds
        # string fields fit any text; from JSON they can still receive objects/arrays/booleans
        self.candidates = [i for i, t in enumerate(self.types) if json_kinds or t != "string"]
        self.values = dict.fromkeys(self.candidates, 0)
        self.bad = dict.fromkeys(self.candidates, 0)
        self.kind_bad = dict.fromkeys(self.candidates, 0)
        self.first: dict[int, str] = {}
        self._raw: dict[int, list[int]] = {i: [] for i in self.candidates}
        self._where: list[Any] = []
        self._pending = 0
        self.spill = self.policy in ("discard_row", "discard_value") and bool(self.candidates)
        self.flags_path = Path(out_dir) / FLAGS_FILE
        self._flags: pq.ParquetWriter | None = None
        self._flag_schema = pa.schema([(f"f{i}", pa.bool_()) for i in self.candidates])
        if self.flags_path.exists():
            self.flags_path.unlink()

    def note(self, values: Sequence[Any], where: Any = None) -> None:
        """One appended row's raw values (before rendering): remember JSON misfits.
        ``where`` names the row in an error (e.g. ``("page 2", 7)``); default its ``_source``."""
        if not self.json_kinds:
            return
        for i in self.candidates:
            if json_misfit(values[i], self.types[i]):
                self._raw[i].append(self._pending)
        self._where.append(where)
        self._pending += 1

    def chunk(self, arrays: Sequence[pa.Array], sources: pa.Array, first_row: int) -> None:
        """One row group about to be written (staged text in field order)."""
        import numpy as np

        n = len(sources)
        if self.json_kinds and self._pending != n:
            raise RuntimeError(f"drift watch out of step: {self._pending} rows noted, {n} written")
        flags = []
        for i in self.candidates:
            text = arrays[i]
            flag = nonconforming(text, self.types[i]).to_numpy(zero_copy_only=False).copy()
            if self._raw[i]:
                kind = np.zeros(n, dtype=bool)
                kind[self._raw[i]] = True
                self.kind_bad[i] += int(kind.sum())
                flag |= kind
            self.values[i] += n - text.null_count
            nbad = int(flag.sum())
            self.bad[i] += nbad
            if nbad and i not in self.first:
                at = int(flag.argmax())
                where = self._where[at] if self.json_kinds and self._where[at] is not None else None
                self.first[i] = (f"{where[0]}, record {where[1]}" if isinstance(where, tuple)
                                 else str(where or sources[at].as_py()))
            flags.append(pa.array(flag))
        if self.spill:
            if self._flags is None:
                self._flags = pq.ParquetWriter(self.flags_path, self._flag_schema)
            self._flags.write_batch(pa.RecordBatch.from_arrays(flags, schema=self._flag_schema), row_group_size=n)
        self._raw = {i: [] for i in self.candidates}
        self._where = []
        self._pending = 0

    def decide(self) -> dict[str, str]:
        """The retyped fields of the delivery: {field name: why} (counts, never values)."""
        out = {}
        for i in self.candidates:
            bad, seen = self.bad[i], self.values[i]
            if bad and bad > RETYPE_SHARE * seen:
                why = f"{bad} of {seen} non-empty values do not fit catalog type {self.types[i]}"
                if self.kind_bad[i]:
                    why += f" ({self.kind_bad[i]} arrive as a JSON object, array or boolean)"
                out[self.resource.fields[i].name] = why
        return out

    def offender(self, name: str) -> str | None:
        """Where the first value of field ``name`` that does not fit was delivered."""
        return self.first.get([f.name for f in self.resource.fields].index(name))

    def close(self) -> None:
        """Finish the flags file (after the last row group)."""
        if self._flags is not None:
            self._flags.close()
            self._flags = None

    def cleanup(self) -> None:
        """Remove the flags file."""
        self.close()
        if self.flags_path.exists():
            self.flags_path.unlink()

    def apply(self, files: Sequence[str | Path], drift: Drift, rejects: Rejects | None, *,
              on_discard: Any = None) -> int:
        """Apply ``discard_row`` / ``discard_value`` to the retyped fields in ``drift.retyped``,
        rewriting the staged part files row group by row group (rows set aside go to
        ``rejects``, ``_row`` is renumbered; nulled values are counted). Returns the rows
        left staged. A no-op (but for the count) when nothing is retyped. ``on_discard(source)``
        is called for every row set aside."""
        import numpy as np
        import pyarrow.compute as pc

        from extractors.staging import PARQUET_WRITE

        self.close()
        names = [f.name for f in self.resource.fields]
        hit = [i for i in self.candidates if names[i] in drift.retyped]
        if not hit or not self.spill:
            self.cleanup()
            return sum(pq.read_metadata(f).num_rows for f in files)
        flags = pq.ParquetFile(self.flags_path)
        group = 0
        kept = 0
        for path in map(Path, files):
            pf = pq.ParquetFile(path)
            tmp = path.with_name(f".{path.name}.inprogress")
            with pq.ParquetWriter(tmp, pf.schema_arrow, **PARQUET_WRITE) as out:
                for g in range(pf.num_row_groups):
                    t = pf.read_row_group(g)
                    fl = flags.read_row_group(group)
                    group += 1
                    if fl.num_rows != t.num_rows:
                        raise RuntimeError(f"drift flags out of step with {path.name} row group {g}")
                    masks = {i: fl.column(f"f{i}").combine_chunks() for i in hit}
                    if self.policy == "discard_value":
                        for i in hit:
                            drift.discarded_values += pc.sum(masks[i]).as_py() or 0
                            pos = t.schema.get_field_index(names[i])
                            t = t.set_column(pos, t.schema.field(pos), pc.if_else(masks[i], pa.scalar(None, pa.string()),
                                                                       t.column(pos).combine_chunks()))
                    else:
                        bad = masks[hit[0]]
                        for i in hit[1:]:
                            bad = pc.or_(bad, masks[i])
                        idx = pc.indices_nonzero(bad).to_pylist()
                        if idx:
                            sources = t.column("_source")
                            for k in idx:
                                record = {n: t.column(n)[k].as_py() for n in t.column_names
                                          if n not in ("_row", "_source")}
                                reason = "; ".join(f"{names[i]}: not a {self.types[i]}" for i in hit
                                                   if masks[i][k].as_py())
                                rejects.add(sources[k].as_py(), reason, record)
                                if on_discard is not None:
                                    on_discard(sources[k].as_py())
                            drift.discarded_rows += len(idx)
                            t = t.filter(pc.invert(bad))
                        pos = t.schema.get_field_index("_row")
                        t = t.set_column(pos, t.schema.field(pos), pa.array(np.arange(kept + 1, kept + t.num_rows + 1,
                                                                         dtype=np.int64)))
                    if t.num_rows:
                        out.write_table(t, row_group_size=t.num_rows)
                    kept += t.num_rows
            tmp.replace(path)
        self.cleanup()
        return kept


def settle_retyped(resource: Resource, drift: Drift, watch: RetypeWatch, writer: Any, rejects: Rejects | None,
                   where: str, *, on_discard: Any = None) -> int:
    """After an untyped delivery is staged (the writer closed): judge its retyped columns
    (:class:`RetypeWatch`) and apply the policy; returns the rows left staged.

    ``evolve`` records them (the staged text is typed by validation, which quarantines what
    does not coerce); ``freeze`` removes what was staged and raises :class:`SchemaDriftError`
    naming the resource, the column and the first offending row (also in its ``offender``);
    ``discard_row`` / ``discard_value`` rewrite the staged parts (:meth:`RetypeWatch.apply`).
    """
    drift.retyped = watch.decide()
    if drift.retyped and drift.policy == "freeze":
        name, why = next(iter(drift.retyped.items()))
        offender = watch.offender(name)
        writer.abort()
        err = drift_error(resource, resource.field(name).source_name, f"is retyped in {where} ({why})",
                          offender, field=name)
        err.offender = offender
        raise err
    if drift.retyped and drift.policy in ("discard_row", "discard_value"):
        before_rows, before_values = drift.discarded_rows, drift.discarded_values
        staged = watch.apply(writer.files, drift, rejects, on_discard=on_discard)
        log.warning("resource %s: retyped column(s) %s under %s: %d row(s) set aside, %d value(s) nulled",
                    resource.code, list(drift.retyped), drift.policy, drift.discarded_rows - before_rows,
                    drift.discarded_values - before_values)
        return staged
    watch.cleanup()
    return writer.rows


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


__all__ = ["COMPATIBLE", "Drift", "POLICIES", "RETYPE_SHARE", "Rejects", "RetypeWatch", "check_columns",
           "drift_error", "json_misfit", "log_drift", "new_column_name", "nonconforming", "policy_of",
           "retyped_columns", "settle_retyped", "split_new", "type_family"]
