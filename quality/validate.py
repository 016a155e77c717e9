"""Validate a staged delivery against its catalog entry with Great Expectations.

The checks are the :class:`~quality.suite.CheckSpec` list the catalog entry implies
(:mod:`quality.suite`); this module turns them into GX expectations and runs them with GX's
pandas engine on the staged data, in two passes so memory stays bounded whatever the size
of the delivery:

1. **dataset pass**: a narrow frame (``_row``, the primary key, the change column) of the
   whole delivery: keys unique (every row sharing a duplicated key fails), row volume
   against earlier runs, freshness of the newest change;
2. **row pass**, chunk by chunk (``chunk_rows``): every row-local check (types, required
   fields, GB 11643 / GB 32100 identifiers, division codes, date ranges, value sets, phones,
   sex digit vs gender, date order). Each chunk's passing rows are typed and handed on
   (:func:`validate` concatenates them; :func:`validate_staged` streams them to Parquet).

Failing rows come from GX's own results (``result_format`` COMPLETE with
``unexpected_index_column_names=['_row']``, uncapped); nothing is re-checked outside GX
except the per-row *reason* text (which GX does not produce) for quarantined rows.

Rules: a value that fails ``type:`` is reported only there; a check hides rows another check
already reports (``CheckSpec.excluded_by``: the sex digit is not compared on an invalid ID);
a null optional value fails nothing; a row is quarantined iff it fails at least one blocking
check; a blocking dataset-level failure (``volume``) quarantines the whole delivery; rows
whose key the data centre waived for a check (an accepted dispute) do not fail it.

Personal data: ``CheckResult`` (rule, sample, failed_keys) and the quarantine ``reasons``
are masked and safe to log or put in tickets; the quarantine ``key`` and ``record`` columns
and ``failures`` (raw keys of every failing row) stay inside the warehouse.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datarail.errors import DatarailError
from datarail.privacy import mask_record, mask_value, scrub_text
from quality.suite import BLOCKING, WARNING, CheckSpec, History, build_specs, change_column, division_codes

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from catalog.models import Field, Resource
    from quality.divisions import DivisionReference

log = logging.getLogger(__name__)

__all__ = ["BLOCKING", "WARNING", "CheckResult", "ValidationOutcome", "ValidationError", "History", "validate",
           "validate_staged", "gx_batch_definition", "SAMPLE_SIZE", "DEFAULT_CHUNK_ROWS"]

SAMPLE_SIZE = 5
PARTIAL_SIZE = 20  # masked unexpected values kept per expectation for Data Docs
DEFAULT_CHUNK_ROWS = 100_000
_ROW = "_row"
_SOURCE = "_source"
# COMPLETE: every failing row, uncapped. The GX frames are indexed by ``_row`` (an unnamed
# index), so GX's unexpected_index_list is the failing _row values themselves: asking for
# ``unexpected_index_column_names`` instead makes GX look each failing row up one ``.at``
# at a time (2 s per 50k failures).
_RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


class ValidationError(DatarailError):
    """Validation could not run (bad input frame, an expectation raised inside GX)."""


@dataclass
class CheckResult:
    """The outcome of one check (one expectation) over the whole delivery.

    Row checks count rows (``evaluated`` = rows delivered); dataset-level checks (volume,
    freshness) count the delivery itself (``evaluated`` 1, ``failed`` 0 or 1, no rows)."""

    check_id: str
    kind: str
    field: str
    severity: str
    rule: str
    evaluated: int
    failed: int
    failed_rows: list[int]
    failed_keys: list[str]
    sample: list[dict]
    expectation: str = ""  # the GX expectation type that ran it
    scope: str = "row"
    waived: int = 0  # failing rows the data centre waived (accepted disputes)
    observed: Any = None  # dataset-level checks: the observed value (rows, newest change date)

    @property
    def passed(self) -> bool:
        return self.failed == 0

    @property
    def percent(self) -> float:
        """Failed as a percentage of evaluated (0 for an empty delivery)."""
        return 100.0 * self.failed / self.evaluated if self.evaluated else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (failed_keys masked, sample masked)."""
        return asdict(self)


@dataclass
class ValidationOutcome:
    """What :func:`validate` / :func:`validate_staged` return;
    ``evaluated == n_passed + n_quarantined``.

    ``passed`` / ``quarantined`` / ``failures`` are frames from :func:`validate` and
    ``None`` from :func:`validate_staged`, which wrote them to ``files`` instead."""

    evaluated: int
    passed: pd.DataFrame | None
    quarantined: pd.DataFrame | None
    checks: list[CheckResult]
    gx_success: bool
    gx_statistics: dict
    resource: str = ""
    duration_s: float = 0.0
    n_passed: int = 0
    n_quarantined: int = 0
    failures: pd.DataFrame | None = None  # check_id, _row, key (raw): every failing row, uncapped
    gx_result: dict = field(default_factory=dict)  # merged GX suite result, masked (for Data Docs)
    latest_update: str | None = None  # newest change-column date delivered (ISO), None if none
    files: dict[str, str] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        """Share of rows that passed every blocking check (1.0 for an empty delivery)."""
        return self.n_passed / self.evaluated if self.evaluated else 1.0

    def summary(self) -> dict[str, Any]:
        """Small JSON-able summary for XCom and logs (no row data, no personal data)."""
        return {
            "resource": self.resource, "evaluated": self.evaluated, "passed": self.n_passed,
            "quarantined": self.n_quarantined, "pass_rate": round(self.pass_rate, 6),
            "gx_success": self.gx_success, "gx_statistics": self.gx_statistics,
            "duration_s": round(self.duration_s, 3),
            "failed_checks": {c.check_id: c.failed for c in self.checks if c.failed},
        }


# --- the GX context: built once per process ---------------------------------------------------

_GX_LOCK = threading.Lock()
_GX_STATE: dict[str, Any] = {}


def gx_batch_definition():
    """The cached whole-dataframe batch definition of an ephemeral GX context.

    ``import great_expectations`` costs about 3 s, so it happens once per process, on first
    use, never at import time of this module. GX's batch fingerprint (an MD5 over
    ``hash_pandas_object`` of the whole frame, recomputed for every batch) is switched off:
    it only labels GX's own batch markers, cost 40 % of a million-row validation, and our
    batches are identified by resource and data interval.
    """
    with _GX_LOCK:
        if "batch_definition" not in _GX_STATE:
            from quality import expectations as qx  # first: it sets GX's log levels before importing GX

            qx.quiet_gx_loggers()
            import great_expectations as gx
            import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
            from great_expectations.data_context.types.base import ProgressBarsConfig

            pandas_engine.HASH_THRESHOLD = 0  # see the docstring: no per-batch fingerprint
            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            qx.quiet_gx_loggers()  # again: some GX loggers set their own level on import
            asset = ctx.data_sources.add_pandas("datarail_staged").add_dataframe_asset("staged_frame")
            _GX_STATE["context"] = ctx
            _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole_frame")
        return _GX_STATE["batch_definition"]


# --- GX frames and expectations ---------------------------------------------------------------

_NS_LO = "1678-01-01"
_NS_HI = "2262-04-10"


def _for_gx_between(typed: pd.Series) -> pd.Series:
    """The typed dates as ``datetime64[ns]``.

    GX's pandas ``column_values.between`` compares vectorised only for ``datetime64[ns]``;
    pandas 3 parses to ``datetime64[us]``, which GX then checks one Python call per row
    (0.3 s per 100k rows per column). Values outside the ns range (years before 1678 or
    after 2262) are clipped to its edges first; both edges lie outside any sensible
    [min, run date + offset] window, so the verdict is unchanged unless a field's ``min``
    is before 1678.
    """
    import pandas as pd

    lo, hi = pd.Timestamp(_NS_LO), pd.Timestamp(_NS_HI)
    return typed.clip(lower=lo, upper=hi).astype("datetime64[ns]")


def _value_col(f: Field) -> str:
    """GX column for value checks: the text itself for string fields; for typed fields the
    text with type failures blanked, so such a value is reported only under ``type:``."""
    return f.name if f.type == "string" else f"_v_{f.name}"


def _typed_col(name: str) -> str:
    return f"_t_{name}"


def _gender_col(id_field: str) -> str:
    return f"_g_{id_field}"


def _key_col(name: str) -> str:
    return f"_k_{name}"


def _expectation(spec: CheckSpec, resource: Resource, ctx: _RunContext) -> Any:
    """The GX expectation that runs ``spec`` on the GX frames built below."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from quality.expectations import (
        ExpectColumnPairSexDigitToMatchGender,
        ExpectColumnValuesToBeInRegisteredSet,
        ExpectColumnValuesToBeValidResidentId,
        ExpectColumnValuesToBeValidUscc,
        ExpectColumnValuesToCoerceToType,
    )
    from quality.identifiers import PHONE_PATTERN

    meta = {"check_id": spec.check_id, "severity": spec.severity, "kind": spec.kind, "field": spec.field}
    common = {"meta": meta, "severity": "critical" if spec.severity == BLOCKING else "warning"}
    kind, p = spec.kind, spec.params
    f = resource.field(spec.fields[0]) if spec.fields else None
    if kind == "type":
        return ExpectColumnValuesToCoerceToType(column=f.name, type_=f.type, **common)
    if kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=f.name, **common)
    if kind == "unique":
        cols = [_key_col(k) for k in spec.fields]
        if len(cols) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=cols[0], **common)
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=cols, **common)
    if kind == "resident_id":
        return ExpectColumnValuesToBeValidResidentId(column=_value_col(f), run_date=ctx.run_date.isoformat(),
                                                     division_policy=ctx.policy, division_reference=ctx.ref_key,
                                                     **common)
    if kind == "uscc":
        return ExpectColumnValuesToBeValidUscc(column=_value_col(f), division_policy=ctx.policy,
                                               division_reference=ctx.ref_key, **common)
    if kind == "division_code":
        # The ~6,900 codes travel as a registered key: GX copies an expectation's arguments
        # hundreds of times per run (1.6 s with the whole list inline).
        return ExpectColumnValuesToBeInRegisteredSet(column=_value_col(f), value_set_key=ctx.division_set_key,
                                                     **common)
    if kind == "date_range":
        kwargs: dict[str, Any] = {"min_value": pd.Timestamp(p["min"])}
        if p["max"] is not None:
            if f.type == "datetime":
                # Any time on the last allowed day is in range: compare with the next midnight.
                kwargs.update(max_value=pd.Timestamp(p["max"] + timedelta(days=1)), strict_max=True)
            else:
                kwargs.update(max_value=pd.Timestamp(p["max"]))
        return gxe.ExpectColumnValuesToBeBetween(column=_typed_col(f.name), **kwargs, **common)
    if kind == "values":
        return gxe.ExpectColumnValuesToBeInSet(column=_value_col(f), value_set=list(p["values"]), **common)
    if kind == "phone":
        return gxe.ExpectColumnValuesToMatchRegex(column=_value_col(f), regex=PHONE_PATTERN, **common)
    if kind == "id_gender":
        other = p["gender_field"] or None
        column_b = _value_col(resource.field(other)) if other else _gender_col(f.name)
        return ExpectColumnPairSexDigitToMatchGender(column_A=_value_col(f), column_B=column_b, **common)
    if kind == "date_order":
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=_typed_col(p["later"]), column_B=_typed_col(p["earlier"]), or_equal=True,
            ignore_row_if="either_value_is_missing", **common)
    if kind == "volume":
        return gxe.ExpectTableRowCountToBeBetween(min_value=int(p["min_rows"]), **common)
    if kind == "freshness":
        return gxe.ExpectColumnMaxToBeBetween(column=_typed_col(p["column"]), min_value=pd.Timestamp(p["oldest"]),
                                              **common)
    raise ValidationError(f"no expectation for check kind {kind!r}", resource=resource.code)  # pragma: no cover


def _run_suite(resource: Resource, frame: pd.DataFrame, expectations: list) -> dict[str, Any]:
    """Run the expectations on ``frame``; returns the GX result per check id."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=f"datarail_{resource.code}")
    for e in expectations:
        suite.add_expectation(e)
    batch = gx_batch_definition().get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format=_RESULT_FORMAT)
    by_id: dict[str, Any] = {}
    for r in result.results:
        check_id = r.expectation_config.meta["check_id"]
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise ValidationError(f"expectation {r.expectation_config.type} for {check_id} raised: "
                                  f"{scrub_text(str(info.get('exception_message')))}", resource=resource.code,
                                  field=r.expectation_config.meta.get("field"))
        by_id[check_id] = r
    missing = [e.meta["check_id"] for e in expectations if e.meta["check_id"] not in by_id]
    if missing:
        raise ValidationError(f"GX returned no result for {missing}", resource=resource.code)
    return by_id


# --- accumulating results over chunks ----------------------------------------------------------

@dataclass
class _Acc:
    """Per check: everything gathered chunk by chunk."""

    spec: CheckSpec
    rows: list = field(default_factory=list)  # arrays of failing _row values
    keys: list[str] = field(default_factory=list)  # raw key JSON of failing rows, in order
    sample: list[dict] = field(default_factory=list)
    waived: int = 0
    evaluated: int = 0
    element_count: int = 0
    unexpected_count: int = 0
    missing_count: int = 0
    partial: list = field(default_factory=list)  # masked unexpected values for Data Docs
    config: dict | None = None
    gx_type: str = ""
    observed: Any = None
    dataset_failed: bool = False

    def failed_rows(self) -> list[int]:
        import numpy as np

        return [int(r) for r in np.concatenate(self.rows)] if self.rows else []


@dataclass
class _RunContext:
    run_date: date
    policy: str
    ref_key: str
    division_set_key: str
    history: History


def _json_records(frame: pd.DataFrame) -> list[str]:
    """One JSON text per row; missing values -> null, numpy scalars -> Python."""
    if not len(frame):
        return []
    obj = frame.astype(object).where(frame.notna(), None)
    return [json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()},
                       ensure_ascii=False, default=str) for rec in obj.to_dict("records")]


def _key_texts(frame: pd.DataFrame, pk: list[str]) -> list[str]:
    """The primary key of each row as a JSON list of its raw text values, in key order."""
    if not pk:
        return ["[]"] * len(frame)
    obj = frame[pk].astype(object).where(frame[pk].notna(), None)
    return [json.dumps(list(rec), ensure_ascii=False) for rec in obj.itertuples(index=False, name=None)]


def _mask_key(resource: Resource, key_json: str) -> str:
    """The key JSON with personal key fields masked (for CheckResult, which leaves the warehouse)."""
    values = json.loads(key_json)
    masked = [mask_value(resource.field(k).semantic, v) for k, v in zip(resource.primary_key, values, strict=True)]
    return json.dumps(masked, ensure_ascii=False)


def _shown(f: Field | None, value: Any) -> str:
    """A value as it may appear in a message: masked if personal, scrubbed anyway."""
    return scrub_text(str(mask_value(f.semantic if f else None, value)))


def _masked_unexpected(spec: CheckSpec, resource: Resource, values: Iterable) -> list:
    """GX's unexpected values with personal ones masked (they go into Data Docs)."""
    f = resource.field(spec.fields[0]) if spec.fields else None
    out = []
    for v in values:
        if isinstance(v, dict | list | tuple):
            out.append(scrub_text(json.dumps(v, ensure_ascii=False, default=str)))
        elif isinstance(v, str):
            out.append(_shown(f, v))
        else:
            out.append(scrub_text(str(v)) if v is not None else None)
    return out


# --- the two passes ---------------------------------------------------------------------------

class _Validation:
    """One validation run: specs, GX expectations, accumulators, and both passes."""

    def __init__(self, resource: Resource, *, run_date: date, divisions: DivisionReference, policy: str,
                 history: History | None):
        from quality.divisions import POLICIES
        from quality.expectations import register_division_reference, register_value_set

        if policy not in POLICIES:
            raise ValidationError(f"division policy must be one of {POLICIES}, got {policy!r}",
                                  resource=resource.code, hint="set DATARAIL_DIVISION_POLICY")
        self.resource = resource
        self.divisions = divisions
        self.history = history or History()
        gx_batch_definition()  # first: quiets GX's loggers before anything imports great_expectations
        self.ctx = _RunContext(run_date, policy, register_division_reference(divisions),
                               register_value_set(f"divisions:{divisions.source}:{policy}:{run_date.year}",
                                                  division_codes(divisions, policy, run_date)),
                               self.history)
        self.specs = build_specs(resource, run_date=run_date, divisions=divisions, policy=policy,
                                 history=self.history)
        self.acc = {s.check_id: _Acc(s) for s in self.specs}
        self.row_specs = [s for s in self.specs if s.scope == "row"]
        self.ds_specs = [s for s in self.specs if s.scope == "dataset"]
        # Built once: GX copies an expectation's arguments (pydantic v1) many times per run.
        self.expectations = {s.check_id: _expectation(s, resource, self.ctx) for s in self.specs}
        self.pk = list(resource.primary_key)
        self.names = [f.name for f in resource.fields]
        self.n = 0
        self.n_passed = 0
        self.n_quarantined = 0
        self.latest_update: str | None = None
        self.dataset_blocked: np.ndarray | None = None  # sorted _row values failing a blocking dataset check
        self.dataset_failing: dict[str, np.ndarray] = {}  # check id -> sorted failing _row values
        self.key_counts: dict[str, int] = {}  # duplicated key JSON -> rows sharing it
        self.refused = False  # a blocking dataset-level check failed: the whole delivery is quarantined
        self.warned_missing = False

    # -- dataset pass ------------------------------------------------------------------------

    def dataset_pass(self, chunks: Callable[[], Iterable[pd.DataFrame]]) -> None:
        """Keys unique, volume and freshness over the whole delivery.

        ``chunks()`` yields the delivery's ``_row``, key fields and change column as staged
        text, in pieces (it is called a second time only if some keys look duplicated). Each
        piece is reduced at once to what the checks need, so memory does not grow with the
        key text: ``_row``, a 53-bit hash per key field (null or type-failed keys: not
        judged), the change column typed. GX runs on that compact frame; the rows it finds
        sharing a hash are then confirmed on their real key text (a hash collision is
        dropped, so the verdict is exact)."""
        import numpy as np
        import pandas as pd

        from quality.coerce import coerce_series, field_text

        res = self.resource
        change = change_column(res)
        row_parts, change_parts, bad_parts = [], [], []
        hash_parts: dict[str, list] = {k: [] for k in self.pk}
        for narrow in chunks():
            if _ROW not in narrow.columns:
                raise ValidationError("staged frame has no _row column", resource=res.code,
                                      hint="stage with the extractor contract (extractors/base.py)")
            narrow = narrow.reset_index(drop=True)
            row_parts.append(pd.to_numeric(narrow[_ROW], errors="coerce").to_numpy(dtype="float64"))
            bad = np.zeros(len(narrow), dtype=bool)
            for k in self.pk:
                f = res.field(k)
                text = field_text(narrow, f)
                missing = text.isna().to_numpy()
                if f.type != "string":
                    missing = missing | coerce_series(text, f.type)[1].to_numpy()
                hashed = (pd.util.hash_pandas_object(text.fillna(""), index=False).to_numpy()
                          >> np.uint64(11)).astype("float64")  # 53 bits: exact in a float64
                hashed[missing] = np.nan
                hash_parts[k].append(hashed)
                bad |= missing
            bad_parts.append(bad)
            if change:
                f = res.field(change)
                typed, _failed = coerce_series(field_text(narrow, f), f.type)
                change_parts.append(_for_gx_between(typed).to_numpy())
        rows_f = np.concatenate(row_parts) if row_parts else np.array([], dtype="float64")
        if np.isnan(rows_f).any() or len(np.unique(rows_f)) != len(rows_f):
            raise ValidationError("staged frame has empty, non-numeric or duplicate _row values",
                                  resource=res.code,
                                  hint="_row is the 1-based position in the delivery and must be unique")
        rows = rows_f.astype("int64")
        self.n = n = len(rows)
        cols: dict[str, Any] = {_ROW: rows}
        for k in self.pk:
            cols[_key_col(k)] = np.concatenate(hash_parts[k]) if hash_parts[k] else np.array([], dtype="float64")
        unjudged = np.concatenate(bad_parts) if bad_parts else np.zeros(0, dtype=bool)
        if len(self.pk) > 1:
            for k in self.pk:  # a compound key with a missing part is not judged (not_null reports it)
                cols[_key_col(k)][unjudged] = np.nan
        typed_change = None
        if change:
            typed_change = (np.concatenate(change_parts) if change_parts
                            else np.array([], dtype="datetime64[ns]"))
            cols[_typed_col(change)] = typed_change
            if n and not np.isnat(typed_change).all():
                self.latest_update = pd.Timestamp(typed_change[~np.isnat(typed_change)].max()).date().isoformat()
        del row_parts, change_parts, hash_parts, bad_parts
        frame = pd.DataFrame(cols, index=rows)
        specs = []
        for s in self.ds_specs:
            if s.kind == "freshness" and (typed_change is None or np.isnat(typed_change).all()):
                self._freshness_from_history(s)
                continue
            specs.append(s)
        results = _run_suite(res, frame, [self.expectations[s.check_id] for s in specs]) if specs else {}
        del frame, cols
        for s in specs:
            r = results[s.check_id]
            a = self.acc[s.check_id]
            a.config, a.gx_type = r.expectation_config.to_json_dict(), r.expectation_config.type
            if s.kind == "unique":
                flagged = np.unique(np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64))
                failing, keys = self._confirm_duplicates(flagged, chunks)
                waived = self.history.waivers.get(s.check_id, frozenset())
                if waived and len(failing):
                    keep = np.array([k not in waived for k in keys], dtype=bool)
                    a.waived += int((~keep).sum())
                    failing, keys = failing[keep], [k for k, ok in zip(keys, keep, strict=True) if ok]
                if len(failing):
                    self.key_counts = {k: int(v) for k, v in pd.Series(keys, dtype="str").value_counts().items()}
                    a.rows, a.keys = [failing], keys
                    a.unexpected_count = len(failing)
                    a.partial = [_mask_key(res, k) for k in keys[:PARTIAL_SIZE]]
                self.dataset_failing[s.check_id] = failing
                a.evaluated = a.element_count = n
            else:
                a.evaluated = a.element_count = 1
                a.observed = _plain(r.result.get("observed_value"))
                a.dataset_failed = not r.success
                a.unexpected_count = int(a.dataset_failed)
                if a.dataset_failed and s.severity == BLOCKING:
                    self.refused = True
        blocking = [self.dataset_failing[s.check_id] for s in specs
                    if s.kind == "unique" and s.severity == BLOCKING and s.check_id in self.dataset_failing]
        self.dataset_blocked = np.unique(np.concatenate(blocking)) if blocking else np.array([], dtype=np.int64)
        if self.refused:
            log.warning("%s: a blocking dataset check failed (%s): the whole delivery is quarantined", res.code,
                        [s.check_id for s in specs if self.acc[s.check_id].dataset_failed])

    def _confirm_duplicates(self, flagged: np.ndarray,
                            chunks: Callable[[], Iterable[pd.DataFrame]]) -> tuple[np.ndarray, list[str]]:
        """The rows among ``flagged`` (sharing a key hash) that really share their key text,
        sorted by ``_row``, with their raw key JSON."""
        import numpy as np
        import pandas as pd

        from quality.coerce import field_text

        if not len(flagged):
            return flagged, []
        found_rows, found_keys = [], []
        for narrow in chunks():
            narrow = narrow.reset_index(drop=True)
            here = np.flatnonzero(np.isin(pd.to_numeric(narrow[_ROW]).to_numpy(dtype="int64"), flagged))
            if not len(here):
                continue
            part = narrow.iloc[here]
            text = pd.DataFrame({k: field_text(part, self.resource.field(k)).to_numpy() for k in self.pk})
            found_rows.append(pd.to_numeric(part[_ROW]).to_numpy(dtype="int64"))
            found_keys.extend(_key_texts(text, self.pk))
        rows = np.concatenate(found_rows) if found_rows else np.array([], dtype=np.int64)
        counts = pd.Series(found_keys, dtype="str").value_counts()
        real = np.array([counts[k] > 1 for k in found_keys], dtype=bool)
        rows, keys = rows[real], [k for k, ok in zip(found_keys, real, strict=True) if ok]
        order = np.argsort(rows, kind="stable")
        return rows[order], [keys[i] for i in order]

    def _freshness_from_history(self, s: CheckSpec) -> None:
        """No change values delivered (an empty incremental delivery): judge freshness on the
        newest change earlier runs saw; nothing known at all passes."""
        a = self.acc[s.check_id]
        a.evaluated = a.element_count = 1
        a.gx_type = "history"
        last = self.history.previous_latest_update
        if last:
            self.latest_update = last[:10]
            a.observed = last[:10]
            a.dataset_failed = date.fromisoformat(last[:10]) < s.params["oldest"]
            a.unexpected_count = int(a.dataset_failed)

    # -- row pass ----------------------------------------------------------------------------

    def row_chunk(self, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Validate one chunk of the delivery; returns (passed typed rows, quarantined rows,
        failures: check_id, _row, raw key)."""
        import numpy as np
        import pandas as pd

        from quality.coerce import coerce_text, field_text

        res = self.resource
        raw = raw.reset_index(drop=True)
        rows = raw[_ROW].astype("int64")
        m = len(raw)
        missing = [f.name for f in res.fields if f.name not in raw.columns]
        if missing and not self.warned_missing:
            log.warning("%s: staged frame lacks fields %s; treated as empty", res.code, missing)
            self.warned_missing = True
        text = pd.DataFrame({f.name: field_text(raw, f) for f in res.fields})
        typed_cols, type_failed = coerce_text(res, {f.name: text[f.name] for f in res.fields})

        # The frame GX sees: text columns, blanked text for typed fields, typed dates, constants.
        cols: dict[str, pd.Series] = {_ROW: rows}
        for f in res.fields:
            cols[f.name] = text[f.name]
            if f.type != "string":
                cols[_value_col(f)] = text[f.name].mask(type_failed[f.name])
            if f.type in ("date", "datetime"):
                cols[_typed_col(f.name)] = _for_gx_between(typed_cols[f.name])
        for s in self.row_specs:
            if s.kind == "id_gender" and s.params.get("gender"):
                cols[_gender_col(s.fields[0])] = pd.Series([s.params["gender"]] * m, dtype="str")
        gx_frame = pd.DataFrame(cols)
        gx_frame.index = rows.to_numpy()
        results = _run_suite(res, gx_frame, [self.expectations[s.check_id] for s in self.row_specs])
        row_pos = pd.Series(np.arange(m), index=rows.to_numpy())

        # Failing positions per check, then the "reported once" exclusions, then waivers.
        failing: dict[str, np.ndarray] = {}
        for s in self.row_specs:
            r = results[s.check_id]
            a = self.acc[s.check_id]
            if a.config is None:
                a.config, a.gx_type = r.expectation_config.to_json_dict(), r.expectation_config.type
            ids = np.unique(np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64))
            pos = row_pos.loc[ids].to_numpy() if len(ids) else np.array([], dtype=np.int64)
            if s.kind != "type" and len(pos):
                bad_type = np.zeros(len(pos), dtype=bool)
                for name in s.fields:
                    if name in type_failed:
                        bad_type |= type_failed[name].to_numpy()[pos]
                pos = pos[~bad_type]
            failing[s.check_id] = np.sort(pos)
            a.element_count += int(r.result.get("element_count") or m)
            a.missing_count += int(r.result.get("missing_count") or 0)
        for s in self.row_specs:
            if s.excluded_by and len(failing[s.check_id]):
                hidden = [failing[c] for c in s.excluded_by if c in failing]
                if hidden:
                    failing[s.check_id] = np.setdiff1d(failing[s.check_id], np.concatenate(hidden))

        needed = np.unique(np.concatenate([np.array([], dtype=np.int64), *failing.values()])).astype(np.int64)
        ds_pos = np.array([], dtype=np.int64)
        ds_failing: dict[str, np.ndarray] = {}
        for cid, ds_rows in self.dataset_failing.items():
            here = row_pos.reindex(ds_rows).dropna().astype("int64").to_numpy()
            ds_failing[cid] = np.sort(here)
            ds_pos = np.concatenate([ds_pos, here])
        needed = np.unique(np.concatenate([needed, ds_pos])).astype(np.int64)
        key_text = dict(zip(needed.tolist(), _key_texts(text.iloc[needed], self.pk), strict=True))
        for s in self.row_specs:
            waived = self.history.waivers.get(s.check_id)
            if waived and len(failing[s.check_id]):
                keep = np.array([key_text[i] not in waived for i in failing[s.check_id].tolist()], dtype=bool)
                self.acc[s.check_id].waived += int((~keep).sum())
                failing[s.check_id] = failing[s.check_id][keep]

        blocked = np.zeros(m, dtype=bool)
        if self.refused:
            blocked[:] = True
        for s in self.row_specs:
            if s.severity == BLOCKING and len(failing[s.check_id]):
                blocked[failing[s.check_id]] = True
        if self.dataset_blocked is not None and len(self.dataset_blocked):
            blocked[row_pos.reindex(self.dataset_blocked).dropna().astype("int64").to_numpy()] = True

        # Accumulate evidence (rows, raw keys, masked samples) and build the failures frame.
        sample_cols = [_ROW] + [f.name for f in res.fields if f.name in raw.columns]
        fail_parts = []
        for s in self.specs:
            if s.scope != "row" and s.kind != "unique":
                continue
            pos = failing.get(s.check_id, ds_failing.get(s.check_id))
            if pos is None:
                continue
            a = self.acc[s.check_id]
            if not len(pos):
                continue
            row_ids = rows.to_numpy()[pos]
            keys = [key_text[i] for i in pos.tolist()]
            if s.scope == "row":
                a.rows.append(row_ids)
                a.keys.extend(keys)
                a.unexpected_count += len(pos)
                if len(a.partial) < PARTIAL_SIZE and s.fields:
                    vals = text[s.fields[0]].iloc[pos[:PARTIAL_SIZE - len(a.partial)]].tolist()
                    a.partial.extend(_masked_unexpected(s, res, vals))
            if len(a.sample) < SAMPLE_SIZE:
                frame = raw.iloc[pos[:SAMPLE_SIZE - len(a.sample)]][sample_cols]
                a.sample.extend(mask_record(res, json.loads(rec)) for rec in _json_records(frame))
            fail_parts.append(pd.DataFrame({"check_id": s.check_id, _ROW: row_ids.astype("int64"), "key": keys}))

        # Reasons for the quarantined rows only (rows that load need none).
        q_pos = np.flatnonzero(blocked)
        reasons: dict[int, list[dict]] = {int(i): [] for i in q_pos}
        if len(q_pos):
            qset = set(reasons)
            for s in self.specs:
                if s.kind in ("volume", "freshness"):
                    if self.acc[s.check_id].dataset_failed and s.severity == BLOCKING:
                        msg = self._dataset_message(s)
                        for i in reasons:
                            reasons[i].append({"check": s.check_id, "field": s.field, "message": msg})
                    continue
                pos = failing.get(s.check_id, ds_failing.get(s.check_id))
                if pos is None or not len(pos):
                    continue
                mine = [i for i in pos.tolist() if i in qset]
                if not mine:
                    continue
                for i, msg in self._messages(s, text, mine, key_text).items():
                    reasons[i].append({"check": s.check_id, "field": s.field, "message": msg})
        # Each row's reasons in check order (the order the specs were built).
        order = {s.check_id: n for n, s in enumerate(self.specs)}
        for lst in reasons.values():
            lst.sort(key=lambda r: order[r["check"]])

        keep = ~blocked
        passed = pd.DataFrame({n: typed_cols[n][keep].reset_index(drop=True) for n in self.names})
        passed[_ROW] = rows[keep].to_numpy()
        record_cols = [c for c in raw.columns if c != _ROW]
        if len(q_pos):
            q_keys = [key_text.get(int(i)) for i in q_pos]
            if any(k is None for k in q_keys):  # a refused delivery quarantines rows that failed nothing
                q_keys = _key_texts(text.iloc[q_pos], self.pk)
        else:
            q_keys = []
        quarantined = pd.DataFrame({
            _ROW: rows.to_numpy()[q_pos].astype("int64"),
            "key": pd.Series(q_keys, dtype="str"),
            "reasons": pd.Series([json.dumps(reasons[int(i)], ensure_ascii=False) for i in q_pos], dtype="str"),
            "record": pd.Series(_json_records(raw.iloc[q_pos][record_cols]), dtype="str"),
        })
        failures = (pd.concat(fail_parts, ignore_index=True) if fail_parts
                    else pd.DataFrame({"check_id": pd.Series(dtype="str"), _ROW: pd.Series(dtype="int64"),
                                       "key": pd.Series(dtype="str")}))
        self.n_passed += len(passed)
        self.n_quarantined += len(quarantined)
        return passed, quarantined, failures

    def _dataset_message(self, s: CheckSpec) -> str:
        a = self.acc[s.check_id]
        if s.kind == "volume":
            return (f"delivery of {a.observed} rows is below {s.params['min_rows']} "
                    f"({s.params['min_ratio']:.0%} of the usual {s.params['baseline']:g}) / 交付行数不足")
        return f"newest {s.params['column']} {a.observed} is older than {s.params['oldest']} / 数据不新鲜"

    def _messages(self, s: CheckSpec, text: pd.DataFrame, positions: list[int],
                  key_text: dict[int, str]) -> dict[int, str]:
        """Reason text per failing row position (never unmasked personal data)."""
        from quality.identifiers import resident_id_problem, sex_of_resident_id, uscc_problem

        res, kind, out = self.resource, s.kind, {}
        if kind == "unique":
            for i in positions:
                shared = self.key_counts.get(key_text[i], 2)
                out[i] = f"primary key ({', '.join(s.fields)}) shared by {shared} rows / 主键重复（{shared} 行共用）"
            return out
        if kind == "date_order":
            a, b = s.params["earlier"], s.params["later"]
            va, vb = text[a].iloc[positions].tolist(), text[b].iloc[positions].tolist()
            for i, x, y in zip(positions, va, vb, strict=True):
                out[i] = (f"{a} '{_shown(res.field(a), x)}' is after {b} '{_shown(res.field(b), y)}' / {a} 晚于 {b}")
            return out
        f = res.field(s.fields[0])
        # Column values as a list once: .iat per row costs ~70 us in pandas 3.
        values = text[f.name].iloc[positions].tolist()
        declared = (text[s.params["gender_field"]].iloc[positions].tolist()
                    if kind == "id_gender" and s.params.get("gender_field") else None)
        for n, (i, value) in enumerate(zip(positions, values, strict=True)):
            if kind == "type":
                out[i] = f"{f.name} value '{_shown(f, value)}' is not a valid {f.type}"
            elif kind == "not_null":
                out[i] = f"required field {f.name} is empty / 必填项为空"
            elif kind == "resident_id":
                reason = resident_id_problem(value, run_date=self.ctx.run_date, divisions=self.divisions,
                                             policy=self.ctx.policy)
                out[i] = f"{f.name} '{_shown(f, value)}' fails GB 11643: {reason}"
            elif kind == "uscc":
                reason = uscc_problem(value, divisions=self.divisions, policy=self.ctx.policy)
                out[i] = f"{f.name} '{_shown(f, value)}' fails GB 32100: {reason}"
            elif kind == "division_code":
                out[i] = f"{f.name} '{_shown(f, value)}' is not in the division reference ({self.ctx.policy} policy)"
            elif kind == "date_range":
                lo, hi = s.params["min"], s.params["max"]
                where = f"before {lo}" if hi is None else f"outside {lo} .. {hi}"
                out[i] = f"{f.name} '{_shown(f, value)}' is {where}"
            elif kind == "values":
                out[i] = f"{f.name} '{_shown(f, value)}' is not one of {', '.join(s.params['values'])}"
            elif kind == "phone":
                out[i] = f"warning: {f.name} '{_shown(f, value)}' is not a mainland mobile or landline number"
            elif kind == "id_gender":
                gender = s.params["gender"] or declared[n]
                out[i] = (f"{f.name} '{_shown(f, value)}' has the sex digit of {sex_of_resident_id(value)} "
                          f"but the declared gender is {gender} / 性别与身份证号不符")
            else:  # pragma: no cover - every kind above
                out[i] = f"{s.check_id} failed"
        return out

    # -- results -----------------------------------------------------------------------------

    def results(self) -> tuple[list[CheckResult], bool, dict, dict]:
        """(check results, GX success, GX statistics, merged masked GX result for Data Docs)."""
        res = self.resource
        checks, gx_results = [], []
        for s in self.specs:
            a = self.acc[s.check_id]
            if s.dataset_level:
                failed, rows, keys = int(a.dataset_failed), [], []
            else:
                rows = a.failed_rows()
                order = sorted(range(len(rows)), key=rows.__getitem__)
                rows = [rows[i] for i in order]
                keys = [_mask_key(res, a.keys[i]) for i in order]
                failed = len(rows)
            evaluated = a.evaluated if s.dataset_level else self.n
            checks.append(CheckResult(
                check_id=s.check_id, kind=s.kind, field=s.field, severity=s.severity, rule=s.rule,
                evaluated=evaluated, failed=failed, failed_rows=rows, failed_keys=keys, sample=a.sample,
                expectation=a.gx_type, scope=s.scope, waived=a.waived, observed=a.observed))
            gx_results.append(self._gx_entry(s, a, failed))
        evaluated_n = len(gx_results)
        successes = sum(1 for r in gx_results if r["success"])
        statistics = {"evaluated_expectations": evaluated_n, "successful_expectations": successes,
                      "unsuccessful_expectations": evaluated_n - successes,
                      "success_percent": 100.0 * successes / evaluated_n if evaluated_n else 100.0}
        success = successes == evaluated_n
        gx_result = {"success": success, "results": gx_results, "suite_name": f"datarail_{res.code}",
                     "statistics": statistics,
                     "meta": {"great_expectations_version": _gx_version(), "resource": res.code,
                              "run_date": self.ctx.run_date.isoformat(), "rows": self.n,
                              "validation_time": datetime.now().strftime("%Y%m%dT%H%M%S.%fZ")}}
        return checks, success, statistics, gx_result

    def _gx_entry(self, s: CheckSpec, a: _Acc, failed: int) -> dict:
        """One expectation's result in GX's JSON shape, merged over chunks, values masked."""
        config = a.config or {"type": a.gx_type or s.kind, "kwargs": {}, "meta": {"check_id": s.check_id}}
        config = json.loads(scrub_text(json.dumps(config, ensure_ascii=False, default=str)))
        if s.dataset_level:
            result = {"observed_value": a.observed}
        else:
            element = a.element_count if s.scope == "row" else self.n
            nonmissing = max(element - a.missing_count, 0)
            result = {"element_count": element, "unexpected_count": failed,
                      "unexpected_percent": 100.0 * failed / element if element else 0.0,
                      "missing_count": a.missing_count,
                      "missing_percent": 100.0 * a.missing_count / element if element else 0.0,
                      "unexpected_percent_nonmissing": 100.0 * failed / nonmissing if nonmissing else 0.0,
                      "partial_unexpected_list": a.partial[:PARTIAL_SIZE]}
        return {"success": failed == 0, "expectation_config": config, "result": result, "meta": {},
                "exception_info": {"raised_exception": False, "exception_message": None,
                                   "exception_traceback": None}}

    def outcome(self, started: float, **frames: Any) -> ValidationOutcome:
        checks, success, statistics, gx_result = self.results()
        outcome = ValidationOutcome(
            evaluated=self.n, checks=checks, gx_success=success, gx_statistics=statistics,
            resource=self.resource.code, n_passed=self.n_passed, n_quarantined=self.n_quarantined,
            gx_result=gx_result, latest_update=self.latest_update, duration_s=time.perf_counter() - started,
            **frames)
        if outcome.evaluated != outcome.n_passed + outcome.n_quarantined:  # pragma: no cover - invariant
            raise ValidationError("row counts do not reconcile after validation", resource=self.resource.code)
        log.info("validated %s: %d rows, %d passed, %d quarantined, %d checks (%d failing) in %.2f s",
                 self.resource.code, self.n, self.n_passed, self.n_quarantined, len(checks),
                 sum(1 for c in checks if c.failed), outcome.duration_s)
        return outcome


def _plain(value: Any) -> Any:
    """A GX observed value as JSON-able text/number."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:19]
    if hasattr(value, "item"):
        return value.item()
    return value


def _gx_version() -> str:
    import great_expectations as gx

    return gx.__version__


_LIBC: list = []


def _release_arrow_memory() -> None:
    """Hand freed memory back to the OS between chunks: Arrow's pool and glibc's malloc both
    keep freed pages for reuse, and across the chunks of a million-row delivery that kept the
    process ~60 MB above what it holds (measured; see quality/README.md)."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if not _LIBC:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _LIBC.append(libc if libc is not None and hasattr(libc, "malloc_trim") else None)
        except OSError:  # not glibc: nothing to trim
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0].malloc_trim(0)


def _chunks(raw: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(raw), 1), size):
        yield raw.iloc[start:start + size]


# --- entry points -------------------------------------------------------------------------------

def validate(resource: Resource, raw: pd.DataFrame, *, run_date: date, divisions: DivisionReference,
             division_policy: str = "historic", history: History | None = None,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ValidationOutcome:
    """Validate one staged delivery of ``resource`` held in memory (see the module docstring).

    ``raw`` follows the staging contract: one text column per catalog field, ``_row``
    (unique ints) and optionally ``_source``. ``division_policy`` is ``historic``,
    ``current`` or ``at_year`` (normally ``Settings.division_policy``). ``history`` carries
    earlier runs' volumes, newest change and waivers (:func:`quality.evidence.load_history`).

    Raises :class:`ValidationError` if ``_row`` is missing or not unique, or if an
    expectation raised inside GX (a failed check never raises).
    """
    import pandas as pd

    started = time.perf_counter()
    run = _Validation(resource, run_date=run_date, divisions=divisions, policy=division_policy, history=history)
    raw = raw.reset_index(drop=True)
    run.dataset_pass(lambda: (_narrow(resource, chunk) for chunk in _chunks(raw, chunk_rows)))
    parts = [run.row_chunk(chunk) for chunk in _chunks(raw, chunk_rows)]
    passed = pd.concat([p[0] for p in parts], ignore_index=True)
    quarantined = pd.concat([p[1] for p in parts], ignore_index=True)
    failures = pd.concat([p[2] for p in parts], ignore_index=True)
    return run.outcome(started, passed=passed, quarantined=quarantined, failures=failures)


def _narrow_columns(resource: Resource) -> list[str]:
    cols = [_ROW, *resource.primary_key]
    change = change_column(resource)
    if change and change not in cols:
        cols.append(change)
    return cols


def _narrow(resource: Resource, raw: pd.DataFrame) -> pd.DataFrame:
    return raw[[c for c in _narrow_columns(resource) if c in raw.columns]]


def passed_schema(resource: Resource):
    """The Arrow schema of ``passed.parquet``: catalog types, plus ``_row``."""
    import pyarrow as pa

    types = {"string": pa.string(), "integer": pa.int64(), "decimal": pa.float64(), "date": pa.timestamp("us"),
             "datetime": pa.timestamp("us"), "boolean": pa.bool_()}
    return pa.schema([pa.field(f.name, types[f.type]) for f in resource.fields] + [pa.field(_ROW, pa.int64())])


def _writer_schemas(resource: Resource) -> dict:
    import pyarrow as pa

    return {
        "passed": passed_schema(resource),
        "quarantined": pa.schema([(_ROW, pa.int64()), ("key", pa.string()), ("reasons", pa.string()),
                                  ("record", pa.string())]),
        "failures": pa.schema([("check_id", pa.string()), (_ROW, pa.int64()), ("key", pa.string())]),
    }


def validate_staged(resource: Resource, files: list[str | Path], out_dir: Path, *, run_date: date,
                    divisions: DivisionReference, division_policy: str = "historic",
                    history: History | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ValidationOutcome:
    """Validate a staged delivery straight from its Parquet parts, streaming.

    Reads the key and change columns of every part for the dataset pass, then the parts in
    chunks of ``chunk_rows`` rows for the row pass, writing ``passed.parquet`` (typed),
    ``quarantined.parquet`` and ``failures.parquet`` (check id, ``_row``, raw key of every
    failing row) into ``out_dir`` as it goes; memory is bounded by the chunk size. Returns the
    outcome with ``passed``/``quarantined``/``failures`` ``None`` and the paths in ``files``.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from extractors.staging import PARQUET_WRITE

    started = time.perf_counter()
    run = _Validation(resource, run_date=run_date, divisions=divisions, policy=division_policy, history=history)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(f) for f in files]
    names = [f.name for f in resource.fields]
    wanted = _narrow_columns(resource)

    def narrow_chunks() -> Iterator[pd.DataFrame]:
        for p in paths:
            pf = pq.ParquetFile(p, pre_buffer=False)
            cols = [c for c in wanted if c in set(pf.schema_arrow.names)]
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols, use_threads=False):
                yield batch.to_pandas()
                del batch
                _release_arrow_memory()

    run.dataset_pass(narrow_chunks)
    _release_arrow_memory()
    schemas = _writer_schemas(resource)
    targets = {k: out_dir / f"{k}.parquet" for k in schemas}
    writers = {k: pq.ParquetWriter(targets[k], schemas[k], **PARQUET_WRITE) for k in schemas}
    try:
        def emit(parts: tuple) -> None:
            for k, frame in zip(("passed", "quarantined", "failures"), parts, strict=True):
                if len(frame) or k == "passed":
                    writers[k].write_table(pa.Table.from_pandas(frame, schema=schemas[k], preserve_index=False))

        seen = False
        for p in paths:
            # pre_buffer off and one thread: reading a million rows then holds ~40 MB less
            # (measured), at no cost on two cores.
            pf = pq.ParquetFile(p, pre_buffer=False)
            columns = [c for c in pf.schema_arrow.names if c in set(names) | {_ROW, _SOURCE}]
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns, use_threads=False):
                emit(run.row_chunk(batch.to_pandas()))
                del batch
                _release_arrow_memory()
                seen = True
        if not seen:  # an empty delivery still runs the row suite once (every check evaluated)
            empty = pd.DataFrame({_ROW: pd.Series(dtype="int64"), **{n: pd.Series(dtype="str") for n in names}})
            emit(run.row_chunk(empty))
    finally:
        for w in writers.values():
            w.close()
    return run.outcome(started, passed=None, quarantined=None, failures=None,
                       files={k: str(v) for k, v in targets.items()})
