"""The checks a catalog entry implies: one :class:`CheckSpec` per check, with its id,
severity, scope and the exact rule as one sentence in Chinese and English.

Nothing here imports Great Expectations: :mod:`quality.validate` turns the specs into
expectations, :mod:`quality.crosscheck` runs the warehouse ones, and the sandbox asks
:func:`check_ids` which ids its injected defects trip, so the three never disagree.

Scopes (where a check runs, see ``quality/README.md``):

- ``row``: row-local rules, run by GX on the staged Parquet chunk by chunk;
- ``dataset``: rules over the whole delivery (keys unique, row volume, freshness), run by GX
  on a narrow frame of the delivery's keys and change column;
- ``warehouse``: cross-resource references, run by GX's SQL engine in the warehouse after
  the load (the referenced resource may come from another unit's run).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from catalog.models import CYCLE_DAYS
from datarail.errors import DatarailError

if TYPE_CHECKING:
    from catalog.models import Catalog, Field, Resource
    from quality.divisions import DivisionReference

BLOCKING = "blocking"
WARNING = "warning"
DEFAULT_MIN_DATE = date(1900, 1, 1)
SAMPLE_SIZE_DEFAULT = 5  # masked sample records kept per check
SCOPES = ("row", "dataset", "warehouse")

# Default severity per kind; the catalog overrides per check id or kind (quality.severity).
DEFAULT_SEVERITY = {
    "type": BLOCKING, "not_null": BLOCKING, "unique": BLOCKING, "resident_id": BLOCKING, "uscc": BLOCKING,
    "division_code": BLOCKING, "date_range": BLOCKING, "values": BLOCKING, "phone": WARNING,
    "id_gender": BLOCKING, "date_order": BLOCKING, "volume": BLOCKING, "freshness": WARNING, "exists": WARNING,
}
# Kinds that judge the delivery as a whole: evaluated counts deliveries (1), not rows.
DATASET_LEVEL = frozenset({"volume", "freshness"})
# Base libraries an `exists` check may reference: (table, column).
LIBRARIES = {"population": ("base", "population", "resident_id"),
             "legal_entity": ("base", "legal_entity", "uscc")}
GENDER_MALE, GENDER_FEMALE = "男", "女"

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


class SuiteError(DatarailError):
    """The catalog asks for a check that cannot be built (unknown reference, bad key)."""


@dataclass
class History:
    """What validation needs from earlier runs, read from the warehouse by the pipeline
    (:func:`quality.evidence.load_history`); empty for a first run or a test.

    ``previous_rows``: rows delivered by the latest loaded runs of EARLIER intervals, newest
    first. ``previous_latest_update``: the newest change those runs saw (ISO text).
    ``waivers``: per check id, the raw key JSON texts the data centre accepted as false
    positives (an accepted dispute); they no longer fail that check.
    """

    previous_rows: list[int] = field(default_factory=list)
    previous_latest_update: str | None = None
    waivers: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass
class CheckSpec:
    """One check: what it reads, how bad a failure is, and its exact rule text."""

    check_id: str
    kind: str
    field: str  # display field: the field, 'a+b' for a pair / compound key, '' for the delivery
    fields: tuple[str, ...]  # catalog fields the check reads
    severity: str
    scope: str  # row | dataset | warehouse
    rule: str
    params: dict[str, Any] = field(default_factory=dict)
    # Checks whose failure on the same row hides this one (a fault is reported once).
    excluded_by: tuple[str, ...] = ()

    @property
    def dataset_level(self) -> bool:
        return self.kind in DATASET_LEVEL


# --- rule texts -------------------------------------------------------------------------------

def rule_type(f: Field) -> str:
    zh, en = _TYPE_RULES[f.type]
    return f"{f.name} {zh} / {f.name} {en}"


def rule_not_null(f: Field) -> str:
    return f"{f.name} 为必填项，不得为空 / {f.name} is required and must not be empty"


def rule_unique(pk: tuple[str, ...]) -> str:
    zh_k, en_k = "、".join(pk), ", ".join(pk)
    return (f"主键（{zh_k}）不得重复，共用同一主键值的每一行均不通过 / primary key ({en_k}) must be unique; "
            "every row sharing a duplicated key fails")


def rule_resident_id(f: Field, run_date: date, policy: str, divisions: DivisionReference) -> str:
    return (f"{f.name} 身份证号须符合 GB 11643：18 位，前 17 位为数字，校验码按加权因子 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 "
            f"计算（加权和模 11 对应 10X98765432），出生日期为真实日期（不早于 1880 年）且不晚于运行日期 {run_date}，"
            f"出生地代码在行政区划代码表（{divisions.source}，{policy} 口径）中 / "
            f"{f.name} resident ID per GB 11643: 18 characters, 17 digits then the check character computed with "
            "weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 (weighted sum mod 11 indexes 10X98765432), a real birth "
            f"date (year 1880 or later) not after the run date {run_date}, and a birthplace code in the division "
            f"reference ({divisions.source}, {policy} policy)")


def rule_uscc(f: Field, policy: str, divisions: DivisionReference) -> str:
    return (f"{f.name} 统一社会信用代码须符合 GB 32100：18 位，字符取自 0-9 A-H J-N P Q R T U W X Y（不含 I O S V Z），"
            f"第 3-8 位为登记管理机关行政区划代码（在 {divisions.source} 中，{policy} 口径；100000 为国家级），"
            "第 9-17 位组织机构代码的校验码符合 GB 11714，末位校验码按模 31 计算正确 / "
            f"{f.name} unified social credit code per GB 32100: 18 characters over 0-9 A-H J-N P Q R T U W X Y "
            "(no I O S V Z), positions 3-8 the registering authority's division code (in "
            f"{divisions.source}, {policy} policy; 100000 = national), the organisation code in positions 9-17 "
            "with its GB 11714 check character, and the mod-31 check character last")


def rule_division(f: Field, policy: str, divisions: DivisionReference, n_codes: int, run_date: date) -> str:
    scope_zh = {"historic": "曾经有效的代码", "current": "现行有效的代码",
                "at_year": f"{run_date.year} 年有效的代码"}[policy]
    scope_en = {"historic": "any code ever valid", "current": "codes valid today",
                "at_year": f"codes valid in {run_date.year}"}[policy]
    return (f"{f.name} 须为行政区划代码表（GB/T 2260，{divisions.source}）中{scope_zh}（{policy} 口径，共 {n_codes} 个）/ "
            f"{f.name} must be a GB/T 2260 division code in the reference list ({divisions.source}): "
            f"{scope_en} ({policy} policy, {n_codes} codes)")


def rule_date_range(f: Field, lo: date, hi: date | None, run_date: date) -> str:
    if hi is None:
        return f"{f.name} 不得早于 {lo} / {f.name} must not be before {lo}"
    offset = f.max_offset_days or 0
    return (f"{f.name} 须在 {lo} 至 {hi}（运行日期 {run_date} 加 {offset} 天）之间 / {f.name} must be between "
            f"{lo} and {hi} (run date {run_date} + {offset} days), inclusive")


def rule_values(f: Field) -> str:
    return (f"{f.name} 须为以下值之一：{'、'.join(f.values or ())} / {f.name} must be one of: "
            f"{', '.join(f.values or ())}")


def rule_phone(f: Field) -> str:
    return (f"{f.name} 应为大陆手机号（1[3-9] 开头共 11 位）或固定电话（0 开头的 2-3 位区号，可带“-”，号码 7-8 位）；"
            f"不符时仅警告，行照常入库 / {f.name} should be a mainland mobile number (1[3-9] followed by 9 digits) "
            "or a landline (0 + 2-3 digit area code, optional '-', 7-8 digits); a warning only, the row still loads")


def rule_id_gender(id_field: str, gender_field: str | None, gender: str | None) -> str:
    if gender_field:
        return (f"{id_field} 第 17 位（顺序码末位）奇数为男、偶数为女，须与 {gender_field} 所填性别一致 / the 17th "
                f"character of {id_field} (odd = male, even = female, GB 11643) must match the declared gender "
                f"in {gender_field}")
    en = "male" if gender == GENDER_MALE else "female"
    return (f"{id_field} 第 17 位（奇数为男、偶数为女）须表明性别为{gender} / the 17th character of {id_field} "
            f"(odd = male, even = female, GB 11643) must say {en}")


def rule_date_order(a: str, b: str) -> str:
    return (f"{a} 不得晚于 {b}（两者均有值时）/ {a} must not be after {b} (when both are given)")


def rule_volume(spec_params: dict) -> str:
    runs, ratio = spec_params["runs"], spec_params["min_ratio"]
    base = spec_params.get("baseline")
    if base is None:
        have = spec_params["history"]
        return (f"本次交付行数不得少于最近 {runs} 次交付行数中位数的 {ratio:.0%}（历史不足 {spec_params['min_history']} 次，"
                f"现有 {have} 次：暂不判定）/ a delivery must hold at least {ratio:.0%} of the median rows of the "
                f"last {runs} deliveries (fewer than {spec_params['min_history']} earlier runs, {have} so far: "
                "no baseline yet, passes)")
    return (f"本次交付行数不得少于最近 {len(spec_params['previous'])} 次交付行数中位数 {base:g} 的 {ratio:.0%}"
            f"（即至少 {spec_params['min_rows']} 行）/ a delivery must hold at least {ratio:.0%} of the median "
            f"({base:g}) of the last {len(spec_params['previous'])} deliveries, i.e. {spec_params['min_rows']} rows")


def rule_freshness(column: str, cycle: str, max_age: int, run_date: date) -> str:
    oldest = run_date - timedelta(days=max_age)
    return (f"最新一条记录的 {column} 不得早于 {oldest}（更新周期 {cycle}，最多 {max_age} 天）/ the newest {column} "
            f"delivered must be on or after {oldest} (update cycle {cycle}: at most {max_age} days before the "
            f"run date {run_date})")


def rule_exists(f: str, ref_label: str) -> str:
    return (f"{f} 的每个非空值须存在于{ref_label}中 / every non-null {f} must exist in {ref_label}")


# --- building ---------------------------------------------------------------------------------

def date_bounds(f: Field, run_date: date) -> tuple[date, date | None]:
    """[min, max] of a date field: ``min`` (default 1900-01-01), run date + ``max_offset_days``."""
    lo = f.min or DEFAULT_MIN_DATE
    hi = None if f.max_offset_days is None else run_date + timedelta(days=f.max_offset_days)
    return lo, hi


def division_codes(divisions: DivisionReference, policy: str, run_date: date) -> frozenset[str]:
    """The codes a plain division-code field may hold under ``policy``."""
    if policy == "at_year":
        # A plain division-code field has no birth year: "at_year" means valid in the run year.
        return frozenset(c for c in divisions.codes("historic")
                         if divisions.is_known(c, policy="at_year", year=run_date.year))
    return divisions.codes(policy)


def change_column(resource: Resource) -> str | None:
    """The field freshness is judged on: the catalog's choice, the watermark column, or
    ``updated_at``; ``None`` when the resource has none (freshness is not checked)."""
    rules = resource.quality.freshness
    names = {f.name for f in resource.fields}
    for c in (rules.column, resource.change_tracking.column, "updated_at"):
        if c and c in names:
            return c
    return None


def _id_gender_pairs(resource: Resource) -> list[tuple[str, str | None, str | None, str | None]]:
    """(id field, gender field, fixed gender, severity) pairs: explicit ones, else the automatic
    pairing of the only resident-ID field with the only gender field."""
    explicit = [(c.field, c.gender_field, c.gender, c.severity) for c in resource.quality.checks
                if c.kind == "id_gender"]
    if explicit or not resource.quality.auto_id_gender:
        return explicit
    ids = [f.name for f in resource.fields if f.semantic == "resident_id"]
    genders = [f.name for f in resource.fields if f.semantic == "gender"]
    return [(ids[0], genders[0], None, None)] if len(ids) == 1 and len(genders) == 1 else []


def _severity(resource: Resource, check_id: str, kind: str, explicit: str | None = None) -> str:
    return explicit or resource.quality.severity_for(check_id, DEFAULT_SEVERITY[kind])


def volume_params(resource: Resource, history: History | None) -> dict | None:
    """The volume rule's parameters for this delivery, or ``None`` when it is switched off."""
    rules = resource.quality.volume
    enabled = rules.enabled if rules.enabled is not None else resource.change_tracking.mode == "snapshot"
    if not enabled:
        return None
    previous = list((history.previous_rows if history else [])[:rules.runs])
    params: dict[str, Any] = {"runs": rules.runs, "min_ratio": rules.min_ratio, "min_history": rules.min_history,
                              "history": len(previous), "previous": previous, "baseline": None, "min_rows": 0}
    if len(previous) >= rules.min_history:
        base = statistics.median(previous)
        params.update(baseline=base, min_rows=math.ceil(rules.min_ratio * base))
    return params


def build_specs(resource: Resource, *, run_date: date, divisions: DivisionReference, policy: str = "historic",
                history: History | None = None) -> list[CheckSpec]:
    """Every ``row`` and ``dataset`` check of ``resource`` in a stable order (the warehouse
    checks come from :func:`warehouse_specs`, which needs the whole catalog)."""
    specs: list[CheckSpec] = []

    def add(check_id: str, kind: str, fld: str, fields: tuple[str, ...], rule: str, scope: str = "row",
            severity: str | None = None, excluded_by: tuple[str, ...] = (), **params: Any) -> None:
        specs.append(CheckSpec(check_id, kind, fld, fields, _severity(resource, check_id, kind, severity), scope,
                               rule, params, excluded_by))

    for f in resource.fields:
        if f.type != "string":
            add(f"type:{f.name}", "type", f.name, (f.name,), rule_type(f), type_=f.type)
    for f in resource.fields:
        if f.required:
            add(f"not_null:{f.name}", "not_null", f.name, (f.name,), rule_not_null(f))
    pk = tuple(resource.primary_key)
    if pk:
        add(f"unique:{'+'.join(pk)}", "unique", "+".join(pk), pk, rule_unique(pk), scope="dataset")
    n_codes = None
    for f in resource.fields:
        if f.semantic == "resident_id":
            add(f"resident_id:{f.name}", "resident_id", f.name, (f.name,),
                rule_resident_id(f, run_date, policy, divisions), policy=policy)
        elif f.semantic == "uscc":
            add(f"uscc:{f.name}", "uscc", f.name, (f.name,), rule_uscc(f, policy, divisions), policy=policy)
        elif f.semantic == "division_code":
            if n_codes is None:
                n_codes = len(division_codes(divisions, policy, run_date))
            add(f"division_code:{f.name}", "division_code", f.name, (f.name,),
                rule_division(f, policy, divisions, n_codes, run_date), policy=policy)
    for f in resource.fields:
        if f.type in ("date", "datetime"):
            lo, hi = date_bounds(f, run_date)
            add(f"date_range:{f.name}", "date_range", f.name, (f.name,), rule_date_range(f, lo, hi, run_date),
                min=lo, max=hi)
    for f in resource.fields:
        if f.values:
            add(f"values:{f.name}", "values", f.name, (f.name,), rule_values(f), values=tuple(f.values))
    for f in resource.fields:
        if f.semantic == "phone":
            add(f"phone:{f.name}", "phone", f.name, (f.name,), rule_phone(f))
    names = {f.name for f in resource.fields}
    for id_field, gender_field, gender, severity in _id_gender_pairs(resource):
        hidden = (f"resident_id:{id_field}",) + ((f"values:{gender_field}",)
                                                 if gender_field and resource.field(gender_field).values else ())
        add(f"id_gender:{id_field}", "id_gender", id_field, tuple(x for x in (id_field, gender_field) if x),
            rule_id_gender(id_field, gender_field, gender), severity=severity, excluded_by=hidden,
            gender_field=gender_field, gender=gender)
    for c in resource.quality.checks:
        if c.kind == "date_order":
            a, b = c.fields
            for n in (a, b):
                if resource.field(n).type not in ("date", "datetime"):
                    raise SuiteError(f"date_order field {n!r} is not a date", resource=resource.code,
                                     field=n, hint="date_order compares two date or datetime fields")
            add(f"date_order:{a}+{b}", "date_order", f"{a}+{b}", (a, b), rule_date_order(a, b),
                severity=c.severity, excluded_by=(f"date_range:{a}", f"date_range:{b}"), earlier=a, later=b)
    vol = volume_params(resource, history)
    if vol is not None:
        add("volume:rows", "volume", "", (), rule_volume(vol), scope="dataset",
            severity=resource.quality.severity_for("volume:rows", resource.quality.volume.severity), **vol)
    column = change_column(resource) if resource.quality.freshness.enabled else None
    if column and column in names:
        max_age = resource.quality.freshness.max_age_days
        max_age = CYCLE_DAYS[resource.update_cycle] if max_age is None else max_age
        add(f"freshness:{column}", "freshness", column, (column,),
            rule_freshness(column, resource.update_cycle, max_age, run_date), scope="dataset",
            severity=resource.quality.severity_for(f"freshness:{column}", resource.quality.freshness.severity),
            column=column, max_age_days=max_age, oldest=run_date - timedelta(days=max_age))
    return specs


def _exists_pairs(resource: Resource) -> list[tuple[str, str, str | None]]:
    """(field, ref, severity) of the resource's exists checks: explicit, else the licence holder."""
    explicit = [(c.field, c.ref, c.severity) for c in resource.quality.checks if c.kind == "exists"]
    if explicit or not resource.quality.auto_licence_holder or resource.base_library != "licence":
        return explicit
    for semantic, library in (("resident_id", "population"), ("uscc", "legal_entity")):
        holder = next((f.name for f in resource.fields if f.semantic == semantic), None)
        if holder:
            return [(holder, library, None)]
    return []


def warehouse_specs(resource: Resource, catalog: Catalog) -> list[CheckSpec]:
    """The cross-resource checks of ``resource`` (scope ``warehouse``), references resolved
    against the catalog: ``params`` carry the referencing ods table and the referenced
    ``(schema, table, column)``."""
    specs = []
    for fname, ref, severity in _exists_pairs(resource):
        if ref in LIBRARIES:
            schema, table, column = LIBRARIES[ref]
            label = {"population": "人口综合库 base.population（居民身份号码）the population library",
                     "legal_entity": "法人综合库 base.legal_entity（统一社会信用代码）the legal-entity library"}[ref]
        else:
            try:
                target = catalog.resource(ref)
            except KeyError:
                raise SuiteError(f"exists check on {fname} references unknown {ref!r}", resource=resource.code,
                                 field=fname, hint="ref is a resource code, population or legal_entity") from None
            if len(target.primary_key) != 1:
                raise SuiteError(f"exists check on {fname}: {ref} has a compound primary key",
                                 resource=resource.code, field=fname,
                                 hint="reference a resource whose primary key is one field")
            schema, table, column = "ods", target.table, target.primary_key[0]
            label = f"{target.name_zh} {ref}（{column}）{target.name_en}"
        check_id = f"exists:{fname}"
        specs.append(CheckSpec(check_id, "exists", fname, (fname,), _severity(resource, check_id, "exists", severity),
                               "warehouse", rule_exists(fname, label),
                               {"ref": ref, "ref_schema": schema, "ref_table": table, "ref_column": column,
                                "table": resource.table}))
    return specs


def check_ids(resource: Resource, catalog: Catalog | None = None) -> list[str]:
    """Every check id the resource's catalog entry implies (independent of run data)."""
    from quality.divisions import load_divisions

    ids = [s.check_id for s in build_specs(resource, run_date=date(2000, 1, 1), divisions=load_divisions(),
                                           history=History(previous_rows=[1, 1, 1]))]
    if catalog is not None:
        ids += [s.check_id for s in warehouse_specs(resource, catalog)]
    return ids
