"""Validate a staged delivery against its catalog entry with Great Expectations.

:func:`validate` coerces the staged text to the catalog's types, builds an expectation
suite from the catalog's fields, runs it with GX's pandas engine on the staged frame and
splits the rows into ``passed`` (typed, ready to load) and ``quarantined`` (raw, with
reasons). Failing rows come from GX's own result (``result_format`` COMPLETE with
``unexpected_index_column_names=['_row']``, uncapped); nothing is re-checked outside GX
except the per-row *reason* text (which GX does not produce) for the rows GX failed.

Check ids, severities and rules are the shared table in ``quality/README.md``:

==========================  =========================================  ==========
check id                    GX expectation                             severity
==========================  =========================================  ==========
``type:<f>``                ExpectColumnValuesToCoerceToType (custom)  blocking
``not_null:<f>``            ExpectColumnValuesToNotBeNull              blocking
``unique:<k1>+<k2>``        ExpectColumnValuesToBeUnique /             blocking
                            ExpectCompoundColumnsToBeUnique
``resident_id:<f>``         ExpectColumnValuesToBeValidResidentId      blocking
``uscc:<f>``                ExpectColumnValuesToBeValidUscc            blocking
``division_code:<f>``       ExpectColumnValuesToBeInSet                blocking
``date_range:<f>``          ExpectColumnValuesToBeBetween (Timestamps) blocking
``values:<f>``              ExpectColumnValuesToBeInSet                blocking
``phone:<f>``               ExpectColumnValuesToMatchRegex             warning
==========================  =========================================  ==========

Rules: a value that fails ``type:`` is reported only there; a null optional value fails
nothing (GX map expectations skip nulls); a row is quarantined iff it fails at least one
blocking check.

Personal data: ``CheckResult`` (rule, sample, failed_keys) and the quarantine ``reasons``
are masked and safe to log or put in tickets; the quarantine ``key`` and ``record`` columns
are raw and stay inside the warehouse.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from datarail.errors import DatarailError
from datarail.privacy import mask_record, mask_value, scrub_text

if TYPE_CHECKING:
    import pandas as pd

    from catalog.models import Field, Resource
    from quality.divisions import DivisionReference

log = logging.getLogger(__name__)

BLOCKING = "blocking"
WARNING = "warning"
DEFAULT_MIN_DATE = date(1900, 1, 1)
SAMPLE_SIZE = 5
_ROW = "_row"

_DATE_SHAPES = "2018-05-16, 2018/5/16, 2018.5.16, 20180516, 2018年5月16日"
_TYPE_RULES = {
    "date": (f"须为真实日期，接受格式 {_DATE_SHAPES}",
             f"must be a real calendar date in an accepted shape ({_DATE_SHAPES})"),
    "datetime": (f"须为真实日期时间，接受格式 {_DATE_SHAPES}，可带时间 08:30[:00]（空格或 T 分隔）",
                 f"must be a real date-time: a date in an accepted shape ({_DATE_SHAPES}) "
                 "optionally followed by a time 08:30[:00] after a space or T"),
    "integer": ("须为整数", "must be an integer"),
    "decimal": ("须为数值", "must be a number"),
    "boolean": ("须为布尔值（是/否、true/false、1/0、y/n）", "must be a boolean (是/否, true/false, 1/0, y/n)"),
}


class ValidationError(DatarailError):
    """Validation could not run (bad input frame, an expectation raised inside GX)."""


@dataclass
class CheckResult:
    """The outcome of one check (one expectation) over the whole delivery."""

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

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (failed_keys masked, sample masked)."""
        return asdict(self)


@dataclass
class ValidationOutcome:
    """What :func:`validate` returns; ``evaluated == len(passed) + len(quarantined)``."""

    evaluated: int
    passed: pd.DataFrame
    quarantined: pd.DataFrame
    checks: list[CheckResult]
    gx_success: bool
    gx_statistics: dict
    resource: str = ""
    duration_s: float = 0.0

    @property
    def pass_rate(self) -> float:
        """Share of rows that passed every blocking check (1.0 for an empty delivery)."""
        return len(self.passed) / self.evaluated if self.evaluated else 1.0

    def summary(self) -> dict[str, Any]:
        """Small JSON-able summary for XCom and logs (no row data, no personal data)."""
        return {
            "resource": self.resource, "evaluated": self.evaluated, "passed": len(self.passed),
            "quarantined": len(self.quarantined), "pass_rate": round(self.pass_rate, 6),
            "gx_success": self.gx_success, "gx_statistics": self.gx_statistics,
            "duration_s": round(self.duration_s, 3),
            "failed_checks": {c.check_id: c.failed for c in self.checks if c.failed},
        }


@dataclass
class _Check:
    check_id: str
    kind: str
    field: str
    fields: tuple[str, ...]  # catalog fields the check reads (type failures there are excluded)
    severity: str
    rule: str
    expectation: Any = None
    extra: dict = field(default_factory=dict)


# --- the GX context: built once per process ---------------------------------------------------

_GX_LOCK = threading.Lock()
_GX_STATE: dict[str, Any] = {}


def gx_batch_definition():
    """The cached (ephemeral context, pandas datasource, whole-dataframe batch definition).

    ``import great_expectations`` costs about 3 s, so it happens once per process, on first
    use, never at import time of this module.
    """
    with _GX_LOCK:
        if "batch_definition" not in _GX_STATE:
            from quality import expectations as qx  # first: it sets GX's log levels before importing GX

            qx.quiet_gx_loggers()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            qx.quiet_gx_loggers()  # again: some GX loggers set their own level on import
            asset = ctx.data_sources.add_pandas("datarail_staged").add_dataframe_asset("staged_frame")
            _GX_STATE["context"] = ctx
            _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole_frame")
        return _GX_STATE["batch_definition"]


# --- rule texts -------------------------------------------------------------------------------

def _rule_type(f: Field) -> str:
    zh, en = _TYPE_RULES[f.type]
    return f"{f.name} {zh} / {f.name} {en}"


def _rule_not_null(f: Field) -> str:
    return f"{f.name} 为必填项，不得为空 / {f.name} is required and must not be empty"


def _rule_unique(pk: tuple[str, ...]) -> str:
    zh_k, en_k = "、".join(pk), ", ".join(pk)
    return (f"主键（{zh_k}）不得重复，共用同一主键值的每一行均不通过 / primary key ({en_k}) must be unique; "
            "every row sharing a duplicated key fails")


def _rule_resident_id(f: Field, run_date: date, policy: str, divisions: DivisionReference) -> str:
    return (f"{f.name} 身份证号须符合 GB 11643：18 位，前 17 位为数字，校验码按加权因子 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 "
            f"计算（加权和模 11 对应 10X98765432），出生日期为真实日期（不早于 1880 年）且不晚于运行日期 {run_date}，"
            f"出生地代码在行政区划代码表（{divisions.source}，{policy} 口径）中 / "
            f"{f.name} resident ID per GB 11643: 18 characters, 17 digits then the check character computed with "
            "weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 (weighted sum mod 11 indexes 10X98765432), a real birth "
            f"date (year 1880 or later) not after the run date {run_date}, and a birthplace code in the division "
            f"reference ({divisions.source}, {policy} policy)")


def _rule_uscc(f: Field) -> str:
    return (f"{f.name} 统一社会信用代码须符合 GB 32100：18 位，字符取自 0-9 A-H J-N P Q R T U W X Y（不含 I O S V Z），"
            "第 3-8 位为数字，第 9-17 位组织机构代码的校验码符合 GB 11714，末位校验码按模 31 计算正确 / "
            f"{f.name} unified social credit code per GB 32100: 18 characters over 0-9 A-H J-N P Q R T U W X Y "
            "(no I O S V Z), positions 3-8 digits, the organisation code in positions 9-17 with its GB 11714 "
            "check character, and the mod-31 check character last")


def _rule_division(f: Field, policy: str, divisions: DivisionReference, n_codes: int, run_date: date) -> str:
    scope_zh = {"historic": "曾经有效的代码", "current": "现行有效的代码",
                "at_year": f"{run_date.year} 年有效的代码"}[policy]
    scope_en = {"historic": "any code ever valid", "current": "codes valid today",
                "at_year": f"codes valid in {run_date.year}"}[policy]
    return (f"{f.name} 须为行政区划代码表（GB/T 2260，{divisions.source}）中{scope_zh}（{policy} 口径，共 {n_codes} 个）/ "
            f"{f.name} must be a GB/T 2260 division code in the reference list ({divisions.source}): "
            f"{scope_en} ({policy} policy, {n_codes} codes)")


def _rule_date_range(f: Field, lo: date, hi: date | None, run_date: date) -> str:
    if hi is None:
        return f"{f.name} 不得早于 {lo} / {f.name} must not be before {lo}"
    offset = f.max_offset_days or 0
    return (f"{f.name} 须在 {lo} 至 {hi}（运行日期 {run_date} 加 {offset} 天）之间 / {f.name} must be between "
            f"{lo} and {hi} (run date {run_date} + {offset} days), inclusive")


def _rule_values(f: Field) -> str:
    return (f"{f.name} 须为以下值之一：{'、'.join(f.values or ())} / {f.name} must be one of: "
            f"{', '.join(f.values or ())}")


def _rule_phone(f: Field) -> str:
    return (f"{f.name} 应为大陆手机号（1[3-9] 开头共 11 位）或固定电话（0 开头的 2-3 位区号，可带“-”，号码 7-8 位）；"
            f"不符时仅警告，行照常入库 / {f.name} should be a mainland mobile number (1[3-9] followed by 9 digits) "
            "or a landline (0 + 2-3 digit area code, optional '-', 7-8 digits); a warning only, the row still loads")


# --- suite --------------------------------------------------------------------------------------

def _date_bounds(f: Field, run_date: date) -> tuple[date, date | None]:
    lo = f.min or DEFAULT_MIN_DATE
    hi = None if f.max_offset_days is None else run_date + timedelta(days=f.max_offset_days)
    return lo, hi


def _build_checks(resource: Resource, *, run_date: date, divisions: DivisionReference,
                  policy: str, gx_frame: pd.DataFrame | None = None) -> list[_Check]:
    """One :class:`_Check` per check the catalog entry implies, in a stable order.

    ``gx_frame`` (the frame GX will validate) narrows division-code value sets to the
    reference codes present in it; without it those sets are empty (for inspection only).
    """
    import great_expectations.expectations as gxe  # validate() built the context first: GX is quiet
    import pandas as pd

    from quality.expectations import (
        ExpectColumnValuesToBeValidResidentId,
        ExpectColumnValuesToBeValidUscc,
        ExpectColumnValuesToCoerceToType,
        register_division_reference,
    )
    from quality.identifiers import PHONE_PATTERN

    checks: list[_Check] = []

    def add(check_id, kind, fld, fields, severity, rule, expectation_cls, **kwargs):
        meta = {"check_id": check_id, "severity": severity, "kind": kind, "field": fld}
        expectation = expectation_cls(meta=meta, severity="critical" if severity == BLOCKING else "warning",
                                      **kwargs)
        checks.append(_Check(check_id, kind, fld, fields, severity, rule, expectation))

    ref_key = register_division_reference(divisions)
    reference_codes: frozenset[str] | None = None
    for f in resource.fields:
        if f.type != "string":
            add(f"type:{f.name}", "type", f.name, (f.name,), BLOCKING, _rule_type(f),
                ExpectColumnValuesToCoerceToType, column=f.name, type_=f.type)
    for f in resource.fields:
        if f.required:
            add(f"not_null:{f.name}", "not_null", f.name, (f.name,), BLOCKING, _rule_not_null(f),
                gxe.ExpectColumnValuesToNotBeNull, column=f.name)
    pk = tuple(resource.primary_key)
    if len(pk) == 1:
        add(f"unique:{pk[0]}", "unique", pk[0], pk, BLOCKING, _rule_unique(pk),
            gxe.ExpectColumnValuesToBeUnique, column=_value_col(resource.field(pk[0])))
    elif len(pk) > 1:
        add(f"unique:{'+'.join(pk)}", "unique", "+".join(pk), pk, BLOCKING, _rule_unique(pk),
            gxe.ExpectCompoundColumnsToBeUnique, column_list=[_value_col(resource.field(k)) for k in pk])
    for f in resource.fields:
        col = _value_col(f)
        if f.semantic == "resident_id":
            add(f"resident_id:{f.name}", "resident_id", f.name, (f.name,), BLOCKING,
                _rule_resident_id(f, run_date, policy, divisions), ExpectColumnValuesToBeValidResidentId,
                column=col, run_date=run_date.isoformat(), division_policy=policy, division_reference=ref_key)
        elif f.semantic == "uscc":
            add(f"uscc:{f.name}", "uscc", f.name, (f.name,), BLOCKING, _rule_uscc(f),
                ExpectColumnValuesToBeValidUscc, column=col)
        elif f.semantic == "division_code":
            if reference_codes is None:
                reference_codes = _division_codes(divisions, policy, run_date)
            # GX copies an expectation's kwargs (pydantic v1 .dict()) hundreds of times per
            # run: with the whole list (~6,900 codes) that alone took 1.6 s. The reference
            # codes that occur in this delivery give exactly the same verdict per row.
            present = set(gx_frame[col].dropna().unique().tolist()) if gx_frame is not None else set()
            add(f"division_code:{f.name}", "division_code", f.name, (f.name,), BLOCKING,
                _rule_division(f, policy, divisions, len(reference_codes), run_date),
                gxe.ExpectColumnValuesToBeInSet, column=col, value_set=sorted(present & reference_codes))
    for f in resource.fields:
        if f.type in ("date", "datetime"):
            lo, hi = _date_bounds(f, run_date)
            kwargs: dict[str, Any] = {"min_value": pd.Timestamp(lo)}
            if hi is not None:
                if f.type == "datetime":
                    # Any time on the last allowed day is in range: compare with the next midnight.
                    kwargs.update(max_value=pd.Timestamp(hi + timedelta(days=1)), strict_max=True)
                else:
                    kwargs.update(max_value=pd.Timestamp(hi))
            add(f"date_range:{f.name}", "date_range", f.name, (f.name,), BLOCKING,
                _rule_date_range(f, lo, hi, run_date), gxe.ExpectColumnValuesToBeBetween,
                column=_typed_col(f), **kwargs)
            checks[-1].extra = {"min": lo, "max": hi}
    for f in resource.fields:
        if f.values:
            add(f"values:{f.name}", "values", f.name, (f.name,), BLOCKING, _rule_values(f),
                gxe.ExpectColumnValuesToBeInSet, column=_value_col(f), value_set=list(f.values))
    for f in resource.fields:
        if f.semantic == "phone":
            add(f"phone:{f.name}", "phone", f.name, (f.name,), WARNING, _rule_phone(f),
                gxe.ExpectColumnValuesToMatchRegex, column=_value_col(f), regex=PHONE_PATTERN)
    return checks


def _division_codes(divisions: DivisionReference, policy: str, run_date: date) -> frozenset[str]:
    if policy == "at_year":
        # A plain division-code field has no birth year: "at_year" means valid in the run year.
        return frozenset(c for c in divisions.codes("historic")
                         if divisions.is_known(c, policy="at_year", year=run_date.year))
    return divisions.codes(policy)


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


def _typed_col(f: Field) -> str:
    return f"_t_{f.name}"


# --- messages -----------------------------------------------------------------------------------

def _shown(f: Field, value: Any) -> str:
    """A value as it may appear in a message: masked if personal, scrubbed anyway."""
    return scrub_text(str(mask_value(f.semantic, value)))


def _messages(check: _Check, resource: Resource, text: pd.DataFrame, rows: list[int],
              run_date: date, divisions: DivisionReference, policy: str,
              key_counts: dict[int, int]) -> dict[int, str]:
    """Reason text per failing row position (never unmasked personal data)."""
    from quality.identifiers import resident_id_problem, uscc_problem

    kind = check.kind
    out: dict[int, str] = {}
    if kind == "unique":
        for i in rows:
            out[i] = (f"primary key ({', '.join(check.fields)}) shared by {key_counts.get(i, 2)} rows "
                      f"/ 主键重复（{key_counts.get(i, 2)} 行共用）")
        return out
    f = resource.field(check.field)
    col = text[f.name]
    for i in rows:
        value = col.iat[i]
        if kind == "type":
            out[i] = f"{f.name} value '{_shown(f, value)}' is not a valid {f.type}"
        elif kind == "not_null":
            out[i] = f"required field {f.name} is empty / 必填项为空"
        elif kind == "resident_id":
            reason = resident_id_problem(value, run_date=run_date, divisions=divisions, policy=policy)
            out[i] = f"{f.name} '{_shown(f, value)}' fails GB 11643: {reason}"
        elif kind == "uscc":
            out[i] = f"{f.name} '{_shown(f, value)}' fails GB 32100: {uscc_problem(value)}"
        elif kind == "division_code":
            out[i] = f"{f.name} '{_shown(f, value)}' is not in the division reference ({policy} policy)"
        elif kind == "date_range":
            lo, hi = check.extra["min"], check.extra["max"]
            where = f"before {lo}" if hi is None else f"outside {lo} .. {hi}"
            out[i] = f"{f.name} '{_shown(f, value)}' is {where}"
        elif kind == "values":
            out[i] = f"{f.name} '{_shown(f, value)}' is not one of {', '.join(f.values or ())}"
        elif kind == "phone":
            out[i] = f"warning: {f.name} '{_shown(f, value)}' is not a mainland mobile or landline number"
        else:  # pragma: no cover - every kind above
            out[i] = f"{check.check_id} failed"
    return out


def _json_records(frame: pd.DataFrame) -> list[str]:
    """One JSON text per row; missing values -> null, numpy scalars -> Python."""
    if not len(frame):
        return []
    obj = frame.astype(object).where(frame.notna(), None)
    return [json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()},
                       ensure_ascii=False, default=str) for rec in obj.to_dict("records")]


# --- validate ----------------------------------------------------------------------------------

def validate(resource: Resource, raw: pd.DataFrame, *, run_date: date, divisions: DivisionReference,
             division_policy: str = "historic") -> ValidationOutcome:
    """Validate one staged delivery of ``resource`` (see the module docstring).

    ``raw`` follows the staging contract: one text column per catalog field, ``_row``
    (unique ints) and optionally ``_source``. ``division_policy`` is ``historic``,
    ``current`` or ``at_year`` (normally ``Settings.division_policy``).

    Raises :class:`ValidationError` if ``_row`` is missing or not unique, or if an
    expectation raised inside GX (a failed check never raises).
    """
    import numpy as np
    import pandas as pd

    from quality.coerce import coerce_frame, field_text
    from quality.divisions import POLICIES

    started = time.perf_counter()
    if division_policy not in POLICIES:
        raise ValidationError(f"division policy must be one of {POLICIES}, got {division_policy!r}",
                              resource=resource.code, hint="set DATARAIL_DIVISION_POLICY")
    if _ROW not in raw.columns:
        raise ValidationError("staged frame has no _row column", resource=resource.code,
                              hint="stage with the extractor contract (extractors/base.py)")
    raw = raw.reset_index(drop=True)
    rows = pd.to_numeric(raw[_ROW], errors="coerce")
    if rows.isna().any() or rows.duplicated().any():
        raise ValidationError("staged frame has empty, non-numeric or duplicate _row values",
                              resource=resource.code,
                              hint="_row is the 1-based position in the delivery and must be unique")
    rows = rows.astype("int64")
    n = len(raw)
    missing = [f.name for f in resource.fields if f.name not in raw.columns]
    if missing:
        log.warning("%s: staged frame lacks fields %s; treated as empty", resource.code, missing)

    typed, type_failed = coerce_frame(resource, raw)
    text = pd.DataFrame({f.name: field_text(raw, f) for f in resource.fields})

    # The frame GX sees: text columns, blanked text for typed fields, typed dates, and _row.
    cols: dict[str, pd.Series] = {_ROW: rows}
    for f in resource.fields:
        cols[f.name] = text[f.name]
        if f.type != "string":
            cols[_value_col(f)] = text[f.name].mask(type_failed[f.name])
        if f.type in ("date", "datetime"):
            cols[_typed_col(f)] = _for_gx_between(typed[f.name])
    gx_frame = pd.DataFrame(cols)

    gx_batch_definition()  # first: quiets GX's loggers before anything imports great_expectations
    checks = _build_checks(resource, run_date=run_date, divisions=divisions, policy=division_policy,
                           gx_frame=gx_frame)
    results, gx_success, gx_statistics = _run_gx(resource, gx_frame, checks)

    # Pass 1: failing row positions per check, from GX's unexpected_index_list.
    row_pos = pd.Series(np.arange(n), index=rows.to_numpy())
    failing: dict[str, np.ndarray] = {}
    for check in checks:
        res = results[check.check_id]
        failed_row_ids = sorted({int(d[_ROW]) for d in res.result.get("unexpected_index_list") or []})
        positions = row_pos.loc[failed_row_ids].to_numpy() if failed_row_ids else np.array([], dtype=np.int64)
        if check.kind != "type" and len(positions):
            # A value that fails type: is reported only there (guards compound keys too).
            bad_type = np.zeros(len(positions), dtype=bool)
            for name in check.fields:
                bad_type |= type_failed[name].to_numpy()[positions]
            positions = positions[~bad_type]
        failing[check.check_id] = np.sort(positions)

    # Key JSON only for rows that failed something (json.dumps per row is the slow part).
    pk = list(resource.primary_key)
    needed = np.unique(np.concatenate([np.array([], dtype=np.int64), *failing.values()])).astype(np.int64)
    key_text: dict[int, str] = dict(zip(needed.tolist(), _json_records(text[pk].iloc[needed]) if pk
                                        else ["{}"] * len(needed), strict=True))

    # Pass 2: results, reasons and the blocking mask.
    check_results: list[CheckResult] = []
    blocking_fail = np.zeros(n, dtype=bool)
    reasons: dict[int, list[dict]] = {}
    sample_cols = [_ROW] + [f.name for f in resource.fields if f.name in raw.columns]
    for check in checks:
        positions = failing[check.check_id]
        key_counts: dict[int, int] = {}
        if check.kind == "unique" and len(positions):
            keys = pd.Series([key_text[i] for i in positions.tolist()], index=positions)
            key_counts = keys.map(keys.value_counts()).to_dict()
        messages = _messages(check, resource, text, positions.tolist(), run_date, divisions, division_policy,
                             key_counts)
        for i in positions.tolist():
            reasons.setdefault(i, []).append({"check": check.check_id, "field": check.field,
                                              "message": messages[i]})
        if check.severity == BLOCKING and len(positions):
            blocking_fail[positions] = True
        sample_frame = raw.iloc[positions[:SAMPLE_SIZE]][sample_cols]
        sample = [mask_record(resource, json.loads(rec)) for rec in _json_records(sample_frame)]
        check_results.append(CheckResult(
            check_id=check.check_id, kind=check.kind, field=check.field, severity=check.severity,
            rule=check.rule, evaluated=n, failed=len(positions),
            failed_rows=[int(r) for r in rows.to_numpy()[positions]],
            failed_keys=[_mask_key(resource, key_text[i]) for i in positions.tolist()],
            sample=sample, expectation=results[check.check_id].expectation_config.type))

    field_names = [f.name for f in resource.fields]
    passed = typed.loc[~blocking_fail, field_names].copy()
    passed.insert(len(field_names), _ROW, rows[~blocking_fail].to_numpy())
    passed = passed.reset_index(drop=True)
    q_pos = np.flatnonzero(blocking_fail)
    record_cols = [c for c in raw.columns if c != _ROW]
    quarantined = pd.DataFrame({
        _ROW: rows.to_numpy()[q_pos].astype("int64"),
        "key": [key_text[i] for i in q_pos],
        "reasons": [json.dumps(reasons[i], ensure_ascii=False) for i in q_pos],
        "record": _json_records(raw.iloc[q_pos][record_cols]),
    })
    outcome = ValidationOutcome(
        evaluated=n, passed=passed, quarantined=quarantined, checks=check_results,
        gx_success=gx_success, gx_statistics=gx_statistics, resource=resource.code,
        duration_s=time.perf_counter() - started)
    if outcome.evaluated != len(outcome.passed) + len(outcome.quarantined):  # pragma: no cover - invariant
        raise ValidationError("row counts do not reconcile after validation", resource=resource.code)
    log.info("validated %s: %d rows, %d passed, %d quarantined, %d checks (%d failing) in %.2f s",
             resource.code, n, len(passed), len(quarantined), len(check_results),
             sum(1 for c in check_results if c.failed), outcome.duration_s)
    return outcome


def _run_gx(resource: Resource, frame: pd.DataFrame,
            checks: list[_Check]) -> tuple[dict[str, Any], bool, dict[str, Any]]:
    """Run the suite on ``frame``; returns (GX result per check id, GX success, statistics)."""
    import great_expectations as gx

    batch_definition = gx_batch_definition()
    suite = gx.ExpectationSuite(name=f"datarail_{resource.code}")
    for check in checks:
        suite.add_expectation(check.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": [_ROW],
        "return_unexpected_index_query": False})
    by_id: dict[str, Any] = {}
    for r in result.results:
        check_id = r.expectation_config.meta["check_id"]
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise ValidationError(f"expectation {r.expectation_config.type} for {check_id} raised: "
                                  f"{scrub_text(str(info.get('exception_message')))}", resource=resource.code,
                                  field=r.expectation_config.meta.get("field"))
        by_id[check_id] = r
    missing = [c.check_id for c in checks if c.check_id not in by_id]
    if missing:
        raise ValidationError(f"GX returned no result for {missing}", resource=resource.code)
    statistics = {k: (float(v) if isinstance(v, float) else int(v) if v is not None else None)
                  for k, v in dict(result.statistics).items()}
    return by_id, bool(result.success), statistics


def _mask_key(resource: Resource, key_json: str) -> str:
    """The key JSON with personal key fields masked (for CheckResult, which leaves the warehouse)."""
    key = json.loads(key_json)
    masked = {k: mask_value(resource.field(k).semantic, v) for k, v in key.items()}
    return json.dumps(masked, ensure_ascii=False)
