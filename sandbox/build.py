"""Write the sandbox source systems: SQL databases, file drops and a JSON API, with defects
injected at known rates and recorded in ``manifest.json``.

Layout of ``out_dir`` (wiped and rewritten by every build)::

    db/<unit>_<system>.sqlite      SQL systems (unless ``sql_urls`` sends one to a server)
    drop/<unit>_<system>/*.csv|xlsx file drops (GBK, UTF-8 with BOM, GB18030, Excel)
    api/<unit>_<system>.json       records served by :mod:`sandbox.api_server`
    connections.json               Airflow connections of the source systems
    manifest.json                  what was written and which checks must fail, per resource

Each defective row carries exactly one defect; the manifest's counts are exact, and tests
recount them from the files. See ``sandbox/README.md`` for the defect kinds and rates.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import logging
import os
import random
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from catalog.models import CYCLE_DAYS, Catalog, Field, Resource, System
from datarail.errors import DatarailError
from quality.divisions import load_divisions
from quality.identifiers import make_resident_id
from quality.suite import change_column
from sandbox.world import DEFAULT_RUN_DATE, DEFAULT_SEED, World, build_world

log = logging.getLogger(__name__)

DEMO_TOKEN = "datarail-sandbox-demo-token"  # fixed: the sandbox API is a local demo, not a secret
TARGET_SHARE = 0.03  # blocking defects per normal resource: stays under the 95% quality threshold
WARNING_SHARE = 0.005  # phone warnings (the row still loads)
# The deliberately bad delivery of the demo: it fails the 95% threshold.
TARGET_OVERRIDES = {"RK-JY-0002": 0.12}
FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)

# Defects per resource: (kind, field); `duplicate` repeats the primary key. Order matters:
# small resources only get the first few kinds.
PLANS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "RK-GA-0001": (("bad_check", "resident_id"), ("duplicate", None), ("missing", "name"),
                   ("unknown_division", "division_code"), ("malformed_date", "birth_date"),
                   ("impossible_date", "birth_date"), ("future_date", "birth_date"), ("bad_value", "gender"),
                   ("gender_flip", "gender")),
    "RK-GA-0002": (("bad_check", "resident_id"), ("duplicate", None), ("missing", "address"),
                   ("malformed_date", "valid_from"), ("future_date", "valid_from"), ("date_swap", "valid_to")),
    "RK-MZ-0001": (("bad_check", "male_id"), ("duplicate", None), ("unknown_division", "reg_division"),
                   ("impossible_date", "reg_date"), ("bad_check", "female_id"), ("bad_value", "reg_type"),
                   ("missing", "female_name")),
    "RK-RS-0001": (("bad_check", "resident_id"), ("bad_check", "employer_uscc"), ("duplicate", None),
                   ("malformed_date", "start_date"), ("future_date", "start_date"),
                   ("unknown_division", "division_code"), ("missing", "name")),
    "RK-RS-0002": (("bad_check", "resident_id"), ("duplicate", None), ("impossible_date", "reg_date"),
                   ("bad_value", "reg_type")),
    "RK-JY-0001": (("bad_check", "resident_id"), ("duplicate", None), ("malformed_date", "graduation_date"),
                   ("missing", "school"), ("bad_value", "level")),
    "RK-JY-0002": (("bad_check", "resident_id"), ("duplicate", None), ("missing", "name"),
                   ("unknown_division", "division_code"), ("malformed_date", "birth_date"),
                   ("impossible_date", "enrol_date"), ("future_date", "birth_date"), ("bad_value", "grade"),
                   ("gender_flip", "gender")),
    "FR-SC-0001": (("bad_check", "uscc"), ("duplicate", None), ("unknown_division", "division_code"),
                   ("malformed_date", "established_date"), ("bad_check", "legal_rep_id")),
    "FR-SC-0002": (("bad_check", "uscc"), ("future_date", "issue_date"), ("missing", "issuing_authority"),
                   ("date_swap", "valid_until")),
    "RK-GJJ-0001": (("bad_check", "resident_id"), ("duplicate", None), ("impossible_date", "open_date"),
                    ("bad_value", "status")),
    "RK-GJJ-0002": (("bad_check", "resident_id"), ("malformed_date", "loan_date")),
    "RK-WJ-0001": (("bad_check", "mother_id"), ("duplicate", None), ("malformed_date", "birth_date"),
                   ("future_date", "issue_date")),
    "RK-WJ-0002": (("bad_check", "resident_id"), ("unknown_division", "practice_division"),
                   ("malformed_date", "first_reg_date")),
    "FR-FG-0001": (("bad_check", "uscc"), ("duplicate", None), ("bad_value", "record_type"),
                   ("date_swap", "valid_until"), ("missing", "authority"), ("unknown_division", "authority_division")),
}
WARNINGS: dict[str, str] = {"RK-GA-0001": "phone", "FR-SC-0001": "phone", "RK-JY-0002": "guardian_phone"}
# Cross-resource warnings: a valid resident ID of nobody in the household register (the
# `exists:` check, run in the warehouse after the load; the row still loads and is flagged).
ORPHANS: dict[str, str] = {"RK-MZ-0001": "male_id"}
BAD_VALUES = {"gender": ["1", "2", "未知"], "reg_type": ["补领", "复婚", "灵活就业"], "level": ["大专", "研究生"],
              "status": ["冻结", "1"], "grade": ["初一", "7年级", "高中一年级"],
              "record_type": ["失信", "警告", "其他"]}
# Cross-source disagreements: rows that pass every check but say something else about a
# person or an entity than the authoritative register does; the base-library build records
# them in quality.conflicts. resource -> ((library, attribute, field, subject field, rows), ...)
CONFLICTS: dict[str, tuple[tuple[str, str, str, str, int], ...]] = {
    "RK-GA-0002": (("population", "address", "address", "resident_id", 4),),  # the card shows the address before a move
    "RK-MZ-0001": (("population", "name", "female_name", "female_id", 3),),  # a homophone typed at the registry
    "RK-JY-0001": (("population", "name", "name", "resident_id", 2),),  # the name at graduation, changed since
    "RK-JY-0002": (("population", "birth_date", "birth_date", "resident_id", 3),),  # the school keeps another date
    "FR-SC-0002": (("legal_entity", "address", "address", "uscc", 2),),  # licence not reissued after a move
    "FR-FG-0001": (("legal_entity", "name", "entity_name", "uscc", 3),  # the name before a change of name
                   ("legal_entity", "legal_rep_name", "legal_rep_name", "uscc", 2)),  # the former representative
}
# Characters of given names and a homophone that registrars type instead.
HOMOPHONES = dict(zip("丽芳华敏娟燕玲红梅英伟军明杰涛斌鹏飞波宇浩凯俊龙林阳峰亮成东海静婷慧颖琳雪月佳欣怡",
                      "莉方桦民鹃艳琳虹玫瑛玮钧铭捷滔彬朋菲博雨皓恺骏隆霖扬锋靓诚栋湖婧亭惠莹林学玥嘉昕贻", strict=True))
BAD_PHONES = ["1381234567", "+86 13812345678", "12345678901", "0571 8812345", "138-1234-5678"]
# Legacy 公安 columns keep dates as 8-digit text; the other SQL systems as ISO text.
SQL_DATE_FORMAT = {("RK-GA-0001", "birth_date"): "%Y%m%d", ("RK-GA-0002", "birth_date"): "%Y%m%d",
                   ("RK-GA-0002", "valid_from"): "%Y%m%d", ("RK-GA-0002", "valid_to"): "%Y%m%d"}


@dataclass(frozen=True)
class BadDate:
    """An impossible calendar date (2019-02-30): written in the shape of its column."""

    y: int
    m: int
    d: int


@dataclass
class Row:
    values: dict[str, Any]
    defect: dict | None = None  # {"kind", "check", "field", "severity"}
    dup_original: bool = False  # a clean row whose key a later extra row repeats
    conflict: dict | None = None  # {"library", "attribute", "field", "subject", "value", "was"}


def _spec_id(resource: Resource, kind: str, match) -> str:
    """The id of the resource's check of ``kind`` that ``match(spec)`` selects (the suite
    in quality/suite.py decides check ids; the sandbox asks it)."""
    from quality.suite import build_specs

    specs = build_specs(resource, run_date=date(2000, 1, 1), divisions=load_divisions())
    found = [s.check_id for s in specs if s.kind == kind and match(s)]
    if len(found) != 1:
        raise DatarailError(f"no single {kind} check for this defect", resource=resource.code)
    return found[0]


def check_id(kind: str, field: Field | None, resource: Resource) -> str:
    """The spec's check id a defect kind trips."""
    if kind == "duplicate":
        return "unique:" + "+".join(resource.primary_key)
    assert field is not None
    if kind == "bad_check":
        return f"{field.semantic}:{field.name}"
    if kind == "gender_flip":
        return _spec_id(resource, "id_gender", lambda s: s.params.get("gender_field") == field.name)
    if kind == "date_swap":
        return _spec_id(resource, "date_order", lambda s: s.params["later"] == field.name)
    if kind == "orphan_ref":
        return f"exists:{field.name}"
    return {"missing": "not_null", "unknown_division": "division_code", "malformed_date": "type",
            "impossible_date": "type", "future_date": "date_range", "bad_value": "values",
            "bad_phone": "phone"}[kind] + f":{field.name}"


# --- defect injection ---------------------------------------------------------------------------

def _counts(n: int, kinds: tuple[tuple[str, str | None], ...], share: float) -> list[tuple[str, str | None]]:
    """Defect instances for ``n`` rows: round-robin over ``kinds`` until the budget of
    quarantined rows is spent (a duplicate costs two: both rows fail ``unique``)."""
    budget = int(n * share)  # tiny resources (small scales) get no defects rather than a high rate
    out: list[tuple[str, str | None]] = []
    used = 0
    while True:
        progressed = False
        for kind in kinds:
            cost = 2 if kind[0] == "duplicate" else 1
            if used + cost <= budget:
                out.append(kind)
                used += cost
                progressed = True
        if not progressed:
            return out


class _Injector:
    def __init__(self, world: World, resource: Resource):
        self.world = world
        self.resource = resource
        self.rng = random.Random(f"{world.seed}:defects:{resource.code}")
        self.run_date = world.run_date
        codes = load_divisions().codes("historic")
        # 33 99xx and friends: shaped like Zhejiang counties, in no edition of the code list.
        self.unknown_codes = [c for c in (f"33{a:02d}{b:02d}" for a in range(90, 100) for b in range(1, 100))
                              if c not in codes]

    def key(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.resource.primary_key)

    def mutate(self, kind: str, field: Field, value: Any) -> Any:
        rng = self.rng
        if kind == "bad_check":
            alphabet = "0123456789X" if field.semantic == "resident_id" else "0123456789ABCDEFGHJKLMNPQRTUWXY"
            return value[:-1] + rng.choice([c for c in alphabet if c != value[-1]])
        if kind == "missing":
            return None
        if kind == "unknown_division":
            return rng.choice(self.unknown_codes)
        if kind == "malformed_date":
            y, m = value.year, value.month
            return rng.choice([f"{y}-13-45", "abc", "不详", "0000-00-00", f"{y}/{m}/"])
        if kind == "impossible_date":
            y = value.year
            choices = [(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31)]
            if not calendar.isleap(y):  # 29 February of a common year
                choices.append((2, 29))
            m, d = rng.choice(choices)
            return BadDate(y, m, d)
        if kind == "future_date":
            return self.run_date + timedelta(days=rng.randint(1, 400))
        if kind == "bad_value":
            return rng.choice([v for v in BAD_VALUES[field.name] if v not in (field.values or ())])
        if kind == "bad_phone":
            return rng.choice(BAD_PHONES)
        if kind == "gender_flip":  # the declared gender contradicts the ID's sex digit
            return {"男": "女", "女": "男"}[value]
        if kind == "orphan_ref":  # a valid ID of the same sex that nobody in the register holds
            born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
            taken = self.world.residents
            for _ in range(1000):
                seq = rng.randrange(0, 500) * 2 + int(value[16]) % 2
                candidate = make_resident_id(value[:6], born, seq)
                if candidate not in taken and candidate != value:
                    return candidate
            raise ValueError("no free resident ID for an orphan reference")
        raise ValueError(kind)

    def eligible(self, kind: str, field: Field | None, row: dict) -> bool:
        """Whether ``row`` can take the defect (its value exists, the damage trips exactly
        the intended check)."""
        if field is None:
            return True
        if row.get(field.name) is None:
            return False
        if kind == "gender_flip":
            return row[field.name] in ("男", "女")
        if kind == "date_swap":  # the later date goes one day before the earlier one, still in range
            earlier = self._earlier(field)
            return (row.get(earlier) is not None and isinstance(row[earlier], date)
                    and row[earlier] - timedelta(days=1) >= (field.min or date(1900, 1, 1)))
        return True

    def _earlier(self, later: Field) -> str:
        for c in self.resource.quality.checks:
            if c.kind == "date_order" and c.fields[1] == later.name:
                return c.fields[0]
        raise DatarailError("no date_order check ends with this field", resource=self.resource.code,
                            field=later.name)

    def run(self, clean: list[dict]) -> list[Row]:
        res = self.resource
        rows = [Row(dict(r)) for r in clean]
        plan = PLANS.get(res.code, ())
        share = TARGET_OVERRIDES.get(res.code, TARGET_SHARE)
        instances = _counts(len(rows), plan, share)
        free = self.world.free_keys.get(res.code)
        order = list(range(len(rows)))
        self.rng.shuffle(order)
        # Registers other resources point at only take defects on unreferenced keys.
        candidates = [i for i in order if free is None or self.key(rows[i].values) in free]
        taken: set[int] = set()
        duplicates: list[Row] = []
        for kind, fname in instances:
            field = res.field(fname) if fname else None
            pick = next((i for i in candidates if i not in taken and self.eligible(kind, field, rows[i].values)),
                        None)
            if pick is None:
                log.debug("no row left for defect %s on %s", kind, res.code)
                continue
            taken.add(pick)
            row = rows[pick]
            cid = check_id(kind, field, res)
            if kind == "duplicate":
                # The source system holds two versions of one record: a stale copy with an older
                # timestamp. Both rows share the key, so both fail `unique:`.
                copy = dict(row.values)
                if copy.get("updated_at"):
                    copy["updated_at"] = copy["updated_at"] - timedelta(days=self.rng.randint(1, 300))
                row.dup_original = True
                duplicates.append(Row(copy, defect={"kind": kind, "check": cid, "field": "+".join(res.primary_key),
                                                    "severity": "blocking"}))
                continue
            if kind == "date_swap":
                row.values[field.name] = row.values[self._earlier(field)] - timedelta(days=1)
            else:
                row.values[field.name] = self.mutate(kind, field, row.values[field.name])
            row.defect = {"kind": kind, "check": cid, "field": field.name, "severity": "blocking"}
        # Warnings (the row still loads): a malformed phone number; a reference to nobody in
        # the register (cross-resource check).
        for kind, fields in (("bad_phone", WARNINGS), ("orphan_ref", ORPHANS)):
            wfield = fields.get(res.code)
            if not wfield:
                continue
            field = res.field(wfield)
            n_warn = max(1, int(len(rows) * WARNING_SHARE))
            for i in [i for i in order if i not in taken and rows[i].values.get(wfield)][:n_warn]:
                taken.add(i)
                rows[i].values[wfield] = self.mutate(kind, field, rows[i].values[wfield])
                rows[i].defect = {"kind": kind, "check": check_id(kind, field, res),
                                  "field": wfield, "severity": "warning"}
        for dup in duplicates:  # extra rows land anywhere in the delivery
            rows.insert(self.rng.randint(0, len(rows)), dup)
        return rows


class _Conflicts:
    """Seeds cross-source disagreements into rows that carry no defect: each one changes one
    attribute of one subject (a person or an entity) to a value the authoritative register does
    not hold, in a shape a real department produces. Its own random stream, so the defects and
    the rendering of every other value stay as they were."""

    def __init__(self, world: World, resource: Resource):
        self.world = world
        self.resource = resource
        self.rng = random.Random(f"{world.seed}:conflicts:{resource.code}")

    def other(self, field: Field, value: Any) -> Any:
        """A different value for ``field`` (None: this row cannot take the change)."""
        rng = self.rng
        if field.type == "date":  # a lunar-calendar or mistyped birthday, never after the run date
            return value - timedelta(days=rng.randint(1, 60))
        if field.semantic == "address":  # another house or flat number of the same street
            m = re.search(r"(\d+)(号|室)$", value)
            if not m:
                return None
            n = int(m.group(1))
            return value[:m.start(1)] + str(n + rng.randint(1, 40)) + m.group(2)
        if field.name == "legal_rep_name":  # the representative before the current one
            people = sorted(r.name for r in self.world.residents.values() if r.father is None)
            return next(n for n in (rng.choice(people) for _ in range(100)) if n != value)
        if field.semantic == "person_name":
            spots = [i for i, ch in enumerate(value) if i > 0 and ch in HOMOPHONES]
            if not spots:
                return None
            i = rng.choice(spots)
            return value[:i] + HOMOPHONES[value[i]] + value[i + 1:]
        if value.endswith("有限公司"):  # an entity name before the change of name
            return value.removesuffix("有限公司") + "有限责任公司"
        return None

    def run(self, rows: list[Row]) -> None:
        res = self.resource
        order = list(range(len(rows)))
        self.rng.shuffle(order)
        changed: set[int] = set()
        for library, attribute, fname, subject, n in CONFLICTS.get(res.code, ()):
            field = res.field(fname)
            subjects: set[Any] = set()
            for i in order:
                if n <= 0:
                    break
                row = rows[i]
                value, who = row.values.get(fname), row.values.get(subject)
                # rows that load (no defect, not a duplicated key); one disagreement per
                # subject and attribute, so each is one conflict and one failing subject
                if (i in changed or row.defect or row.dup_original or value is None or who is None
                        or who in subjects):
                    continue
                new = self.other(field, value)
                if new is None or new == value:
                    continue
                row.values[fname] = new
                row.conflict = {"library": library, "attribute": attribute, "field": fname,
                                "subject": who, "value": _plain(new), "was": _plain(value)}
                subjects.add(who)
                changed.add(i)
                n -= 1


def _summarise(resource: Resource, rows: list[Row], run_date: date) -> dict:
    checks: dict[str, int] = {}
    defects = []
    conflicts = []
    quarantined = 0
    for row in rows:
        if row.conflict:
            conflicts.append({**row.conflict, "key": {k: _plain(row.values[k]) for k in resource.primary_key}})
        blocking = row.dup_original or (row.defect is not None and row.defect["severity"] == "blocking")
        quarantined += blocking
        if row.dup_original:
            cid = "unique:" + "+".join(resource.primary_key)
            checks[cid] = checks.get(cid, 0) + 1
        if row.defect:
            checks[row.defect["check"]] = checks.get(row.defect["check"], 0) + 1
            key = {k: _plain(row.values[k]) for k in resource.primary_key}
            defects.append({**row.defect, "key": key})
    stamps = [r.values["updated_at"] for r in rows if isinstance(r.values.get("updated_at"), datetime)]
    latest = max(stamps) if stamps else None
    stale = latest is not None and (run_date - latest.date()).days > CYCLE_DAYS[resource.update_cycle]
    column = change_column(resource)
    if stale and column and resource.quality.freshness.enabled:
        checks[f"freshness:{column}"] = 1  # a delivery-level check: one failing delivery
    return {"rows": len(rows), "quarantined": quarantined, "checks": dict(sorted(checks.items())),
            "defects": defects, "conflicts": conflicts, "stale": stale,
            "latest_update": latest.isoformat() if latest else None, "status": resource.status}


def _plain(v: Any) -> Any:
    if isinstance(v, BadDate):
        return f"{v.y:04d}-{v.m:02d}-{v.d:02d}"
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


# --- rendering ------------------------------------------------------------------------------------

CSV_DATE_SHAPES = [("iso", 4), ("slash", 2), ("compact", 2), ("chinese", 2)]


def _date_text(y: int, m: int, d: int, shape: str) -> str:
    if shape == "slash":
        return f"{y}/{m}/{d}"
    if shape == "compact":
        return f"{y:04d}{m:02d}{d:02d}"
    if shape == "chinese":
        return f"{y}年{m}月{d}日"
    return f"{y:04d}-{m:02d}-{d:02d}"


def _render_text(v: Any, field: Field, rng: random.Random, *, fixed_format: str | None = None) -> str | None:
    """A value as the text a legacy system or file export holds."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (date, BadDate)):
        y, m, d = (v.year, v.month, v.day) if isinstance(v, date) else (v.y, v.m, v.d)
        if fixed_format == "%Y%m%d":
            return _date_text(y, m, d, "compact")
        if fixed_format:
            return _date_text(y, m, d, "iso")
        shapes, weights = zip(*CSV_DATE_SHAPES, strict=True)
        return _date_text(y, m, d, rng.choices(shapes, weights)[0])
    if isinstance(v, Decimal):
        return f"{v:.2f}" if v == v.quantize(Decimal("0.01")) else str(v)
    return str(v)


def _write_csv(path: Path, resource: Resource, rows: list[Row], encoding: str, rng: random.Random) -> None:
    buf = io.StringIO()
    # Windows-style exports: CRLF line ends, minimal quoting.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([f.source_name for f in resource.fields])
    for row in rows:
        writer.writerow(["" if (t := _render_text(row.values[f.name], f, rng)) is None else t
                         for f in resource.fields])
    path.write_bytes(buf.getvalue().encode(encoding))


def _write_xlsx(path: Path, resource: Resource, rows: list[Row], sheet: str, rng: random.Random,
                fixed: datetime, notes: bool) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    if notes:  # the real reports open with a notes sheet; the data sheet is named in the catalog
        ws.title = "说明"
        ws.append(["本表由住房公积金业务系统按月导出，数据截至导出日。"])
        ws.append(["金额单位：元；日期格式以单元格为准。"])
        ws = wb.create_sheet(sheet)
    else:
        ws.title = sheet
    ws.append([f.source_name for f in resource.fields])
    for row in rows:
        cells = []
        for f in resource.fields:
            v = row.values[f.name]
            if isinstance(v, datetime):
                cells.append(v)
            elif isinstance(v, date):
                # Most dates are real date cells; hand-edited ones arrive as text.
                cells.append(v if rng.random() < 0.7 else _render_text(v, f, rng))
            elif isinstance(v, BadDate):
                cells.append(_render_text(v, f, rng))
            elif isinstance(v, Decimal):
                cells.append(float(v))
            else:
                cells.append(v)
        ws.append(cells)
    for c in ws[1]:
        c.font = Font(bold=True)
    for col in ws.iter_cols(min_row=2):
        for c in col:
            if isinstance(c.value, datetime):
                c.number_format = "yyyy-mm-dd hh:mm:ss"
            elif isinstance(c.value, date):
                c.number_format = "yyyy-mm-dd"
    wb.properties.creator = "住房公积金业务系统"
    wb.properties.created = fixed
    wb.properties.modified = fixed
    raw = io.BytesIO()
    wb.save(raw)
    path.write_bytes(_pin_zip(raw.getvalue(), fixed))


def _pin_zip(data: bytes, fixed: datetime) -> bytes:
    """Rewrite an XLSX so the same content gives the same bytes: fixed zip entry times and
    a fixed `modified` property (openpyxl stamps both with the current time on save)."""
    stamp = fixed.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                              rb"\g<1>" + stamp.encode() + rb"\g<2>", body)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME), body,
                         compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, BadDate):
        return _date_text(v.y, v.m, v.d, "iso")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    return v


def _sql_table(metadata, resource: Resource):
    """The source table: text dates (legacy), a real timestamp column, and no primary key
    constraint (the source holds duplicates); a plain index on the key keeps reads ordered."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite

    plain_dt = sqlite.DATETIME(storage_format="%(year)04d-%(month)02d-%(day)02d "
                                              "%(hour)02d:%(minute)02d:%(second)02d",
                               regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)")
    cols = []
    for f in resource.fields:
        if f.type == "datetime":
            t = sa.DateTime().with_variant(plain_dt, "sqlite")
        elif f.type == "integer":
            t = sa.Integer()
        elif f.type == "decimal":
            t = sa.Numeric(16, 2)
        elif f.type == "date":
            t = sa.String(32)
        else:
            t = sa.String(1000 if f.semantic == "text" else 255)
        cols.append(sa.Column(f.source_name, t, nullable=True, comment=f.description or None))
    table = sa.Table(resource.location.table, metadata, *cols, mysql_charset="utf8mb4",
                     comment=resource.name_zh)
    sa.Index(f"ix_{resource.location.table}_key", *[table.c[resource.field(k).source_name]
                                                    for k in resource.primary_key])
    return table


def _sql_rows(resource: Resource, rows: list[Row], rng: random.Random) -> list[dict]:
    out = []
    for row in rows:
        rec = {}
        for f in resource.fields:
            v = row.values[f.name]
            if f.type == "datetime" and isinstance(v, datetime):
                rec[f.source_name] = v
            elif f.type in ("integer", "decimal") and not isinstance(v, str):
                rec[f.source_name] = v
            else:
                rec[f.source_name] = _render_text(v, f, rng, fixed_format=SQL_DATE_FORMAT.get(
                    (resource.code, f.name), "%Y-%m-%d"))
        out.append(rec)
    return out


def _write_sql(url: str, resources: list[Resource], rows: dict[str, list[Row]], rng: random.Random) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        tables = {r.code: _sql_table(metadata, r) for r in resources}
        with engine.begin() as conn:
            metadata.drop_all(conn)
            metadata.create_all(conn)
            for r in resources:
                data = _sql_rows(r, rows.get(r.code, []), rng)
                if data:
                    conn.execute(tables[r.code].insert(), data)
    finally:
        engine.dispose()


def _conn_from_url(url: str) -> dict:
    import sqlalchemy as sa

    u = sa.make_url(url)
    kind = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}.get(u.get_backend_name())
    if kind is None:
        raise DatarailError(f"unsupported sandbox SQL backend {u.get_backend_name()!r}",
                            hint="use mysql+pymysql://... or postgresql+psycopg2://...")
    extra = {k: v for k, v in u.query.items()}
    return {"conn_type": kind, "host": u.host, "port": u.port, "login": u.username, "password": u.password,
            "schema": u.database, "extra": extra}


def _conn(conn_type: str, **kw) -> dict:
    base = {"conn_type": conn_type, "host": None, "port": None, "login": None, "password": None,
            "schema": None, "extra": {}}
    base.update(kw)
    return base


# --- the build ------------------------------------------------------------------------------------

def _reset(out_dir: Path) -> None:
    """Empty ``out_dir``, refusing to wipe a folder that is not a sandbox build."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DatarailError(f"sandbox output {out_dir} is a file")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / "manifest.json").exists():
            raise DatarailError(f"refusing to wipe {out_dir}: it is not empty and holds no sandbox manifest.json",
                                hint="point the sandbox at an empty or sandbox-only folder")
        for p in entries:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _system_of(catalog: Catalog, resource: Resource) -> System:
    return catalog.unit(resource.unit).system(resource.system)


def build_sandbox(catalog: Catalog, out_dir: Path, *, seed: int = DEFAULT_SEED, run_date: date = DEFAULT_RUN_DATE,
                  scale: float = 1.0, sql_urls: dict[str, str] | None = None) -> dict:
    """Generate every source system of ``catalog`` under ``out_dir`` and return the manifest.

    Deterministic: the same seed, run date and scale give byte-identical files. ``sql_urls``
    maps a SQL system's ``conn_id`` to a SQLAlchemy URL (MariaDB / PostgreSQL) whose tables
    are dropped and re-created there instead of a SQLite file. Resources with status
    ``planned`` get an empty table (or empty file/endpoint) and no records.
    """
    out_dir = Path(out_dir).resolve()
    sql_urls = dict(sql_urls or {})
    _reset(out_dir)
    world = build_world(seed=seed, run_date=run_date, scale=scale)
    fixed = datetime.combine(run_date, time(6, 0))
    mtime = fixed.timestamp()

    rows: dict[str, list[Row]] = {}
    resources_out: dict[str, dict] = {}
    for res in catalog.resources:
        clean = world.records.get(res.code, []) if res.status == "active" else []
        if clean and set(clean[0]) != {f.name for f in res.fields}:
            raise DatarailError("sandbox generator and catalog disagree on the fields",
                                resource=res.code, hint=f"catalog: {[f.name for f in res.fields]}, "
                                                        f"generator: {list(clean[0])}")
        ordered = [{f.name: r[f.name] for f in res.fields} for r in clean]
        rows[res.code] = _Injector(world, res).run(ordered)
        _Conflicts(world, res).run(rows[res.code])
        resources_out[res.code] = _summarise(res, rows[res.code], run_date)

    connections: dict[str, dict] = {}
    month = f"{run_date:%Y-%m}"
    by_system: dict[tuple[str, str], list[Resource]] = {}
    for res in catalog.resources:
        by_system.setdefault((res.unit, res.system), []).append(res)
    for (unit, sys_code), resources in by_system.items():
        system = catalog.unit(unit).system(sys_code)
        name = f"{unit}_{sys_code}"
        rng = random.Random(f"{seed}:render:{name}")
        if system.kind == "sql":
            if system.conn_id in sql_urls:
                _write_sql(sql_urls[system.conn_id], resources, rows, rng)
                connections[system.conn_id] = _conn_from_url(sql_urls[system.conn_id])
            else:
                path = out_dir / "db" / f"{name}.sqlite"
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_sql(f"sqlite:///{path}", resources, rows, rng)
                os.utime(path, (mtime, mtime))
                connections[system.conn_id] = _conn("sqlite", host=str(path))
        elif system.kind == "file":
            folder = out_dir / "drop" / name
            folder.mkdir(parents=True, exist_ok=True)
            for res in resources:
                if res.status != "active":
                    continue
                fname = res.location.file.replace("*", month)
                path = folder / fname
                if fname.endswith(".csv"):
                    enc = {"utf-8": "utf-8-sig"}.get(res.location.encoding or "utf-8", res.location.encoding)
                    _write_csv(path, res, rows[res.code], enc, rng)
                elif fname.endswith(".xlsx"):
                    _write_xlsx(path, res, rows[res.code], res.location.sheet or "贷款信息", rng, fixed,
                                notes=res.location.sheet is not None)
                else:
                    raise DatarailError(f"sandbox cannot write {fname}", resource=res.code)
                os.utime(path, (mtime, mtime))
            connections[system.conn_id] = _conn("fs", extra={"path": str(folder)})
        else:  # http
            endpoints = {}
            for res in resources:
                if res.status != "active":
                    continue
                updated = next((f.source_name for f in res.fields if f.name == "updated_at"), None)
                endpoints[res.location.endpoint] = {
                    "resource": res.code, "pagination": res.location.pagination or "page",
                    "records_key": res.location.records_key, "updated_at_key": updated,
                    "records": [{f.source_name: _json_value(r.values[f.name]) for f in res.fields}
                                for r in rows[res.code]]}
            path = out_dir / "api" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"system": name, "endpoints": endpoints}, ensure_ascii=False, indent=1),
                            encoding="utf-8")
            connections[system.conn_id] = _conn("http", host="127.0.0.1", schema="http",
                                                extra={"token": DEMO_TOKEN})
    unused = set(sql_urls) - set(connections)
    if unused:
        raise DatarailError(f"sql_urls names unknown SQL systems: {sorted(unused)}")

    manifest = {"seed": seed, "run_date": run_date.isoformat(), "scale": scale, "resources": resources_out}
    (out_dir / "connections.json").write_text(json.dumps(connections, ensure_ascii=False, indent=2),
                                              encoding="utf-8")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    log.info("sandbox built in %s: %d resources, %d rows", out_dir, len(resources_out),
             sum(r["rows"] for r in resources_out.values()))
    return manifest
