"""Quality reports for source units (数据质量问题反馈报告), per unit and run date, under
``$DATARAIL_HOME/reports/<date>/``:

- ``quality_<unit>.html``: a self-contained page (inline CSS, inline SVG charts, no external
  resource) with the unit's live tickets: state, severity, due date, escalation, dispute,
  counts and percent, a trend of the check over the last runs, the exact rule, masked
  samples and failing keys, how to fix, the change history and the query that reproduces
  the failing rows; the latest run of each of its resources; the tickets struck off by this run;
- ``quality_<unit>.xlsx``: every failing key of every live ticket (uncapped, masked) with
  its delivery row number, and a ticket summary;
- ``data_docs/<unit>/``: Great Expectations Data Docs of the unit's validations of the run;
- ``supervision.html`` (the 挂牌督办 list) and ``index.html`` linking everything.

The files are read outside the warehouse (mailed to the unit, opened from a share), so
everything personal is masked before rendering and every rendered string passes through
:func:`datarail.privacy.scrub_text` once more on its way out (Jinja ``finalize``).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from catalog.models import Catalog, Resource
from datarail.privacy import mask_record, mask_value, scrub_text
from warehouse.sqlfiles import query_file

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MAX_KEYS = 50  # keys listed per ticket; the count is always the full count

STATE_LABELS = {
    "new": "新建 New", "acknowledged": "已确认 Acknowledged", "rectifying": "整改中 Rectifying",
    "disputed": "有异议 Disputed", "reopened": "重新打开 Reopened", "resolved": "已销号 Resolved",
}
SEVERITY_LABELS = {"blocking": "阻断 Blocking", "warning": "警告 Warning"}
DISPUTE_LABELS = {"pending": "待数据中心裁定 awaiting the data centre", "accepted": "异议已采纳 accepted",
                  "rejected": "异议已驳回 rejected"}
TREND_RUNS = 8  # runs shown in each ticket's trend
RUN_STATUS_LABELS = {"loaded": "已入库 loaded", "failed": "失败 failed", "running": "运行中 running",
                     "skipped": "跳过 skipped"}

# How to fix, per check kind (the part of the check id before ':'), Chinese then English.
FIX_HINTS: dict[str, tuple[str, str]] = {
    "type": (
        "字段值无法转换为目录声明的类型（日期格式错误或不存在的日期、非数字等）。请在源系统中按目录类型更正，"
        "日期统一写作 YYYY-MM-DD，数值字段只填数字。",
        "The value does not convert to the field's catalog type (malformed or impossible date, "
        "non-number). Correct it in the source system: write dates as YYYY-MM-DD and numbers as digits only.",
    ),
    "not_null": (
        "必填字段为空。请在源系统补录该字段；如该字段确实允许为空，请向数据管理中心申请修改资源目录。",
        "A required field is empty. Fill it in at the source; if the field may legitimately be empty, "
        "ask the data management centre to change the resource catalog.",
    ),
    "unique": (
        "主键重复：共享同一主键的所有记录都被隔离。请在源系统中合并或删除重复记录，确保每个主键只对应一条记录。",
        "Duplicated primary key: every row sharing the key is quarantined. Merge or delete the duplicates "
        "at the source so that each key identifies exactly one record.",
    ),
    "resident_id": (
        "居民身份证号码不符合 GB 11643：须为18位，末位校验码按加权算法正确，内含出生日期真实且不晚于数据日期。"
        "请对照原始证件核对并更正录入错误。",
        "The resident identity number fails GB 11643: it must have 18 characters, a correct check "
        "character, and a real birth date not after the run date. Check it against the original "
        "document and correct the entry.",
    ),
    "uscc": (
        "统一社会信用代码不符合 GB 32100（字符集不含 I、O、S、V、Z，末位校验码正确）。请对照营业执照核对更正。",
        "The unified social credit code fails GB 32100 (alphabet without I, O, S, V, Z; correct check "
        "character). Check it against the business licence and correct it.",
    ),
    "division_code": (
        "行政区划代码不在参考目录（GB/T 2260）中。请使用有效的六位区划代码，撤并的区划请改为现行代码。",
        "The administrative division code is not in the reference list (GB/T 2260). Use a valid "
        "six-digit code; replace codes of merged or abolished divisions with the current one.",
    ),
    "date_range": (
        "日期超出允许范围（早于最早日期或晚于数据日期）。请核对并更正录入错误的日期。",
        "The date lies outside the allowed range (before the earliest date or after the run date). "
        "Check and correct the mistyped date.",
    ),
    "values": (
        "取值不在该字段的代码集内。请按资源目录规定的代码集更正；如需新增取值，请向数据管理中心申请扩充代码集。",
        "The value is not in the field's value set. Use a value from the catalog's code set; to add a "
        "new value, ask the data management centre to extend the set.",
    ),
    "phone": (
        "电话号码既不是有效的大陆手机号（11位，以13-19开头），也不是有效的固定电话（区号-号码）。"
        "此问题为警告，记录仍会入库共享，请尽快更正。",
        "The phone number is neither a mainland mobile (11 digits starting 13-19) nor a landline "
        "(area code-number). This is a warning: the row still loads and is shared; please correct it soon.",
    ),
    "id_gender": (
        "身份证号第17位（奇数为男、偶数为女）与所填性别不一致。请对照原始证件核对身份证号或性别，二者必有一处录入错误。",
        "The sex digit of the resident ID (17th character: odd = male, even = female) contradicts the declared "
        "gender. Check both against the original document: one of them was entered wrongly.",
    ),
    "date_order": (
        "起始日期晚于截止日期（如有效期起晚于有效期止）。请核对两个日期，更正录入错误或颠倒的日期。",
        "The start date is after the end date (e.g. valid from after valid to). Check both dates and correct "
        "the mistyped or swapped one.",
    ),
    "volume": (
        "本次交付行数远少于近期交付的通常行数，疑似导出不完整。该批数据已整体隔离、未予共享，请检查导出任务并重新交付完整数据。",
        "This delivery holds far fewer rows than the recent deliveries: the export looks truncated. The whole "
        "delivery was held back (nothing of it is shared); check the export job and deliver the complete data again.",
    ),
    "freshness": (
        "最新数据的更新时间早于资源目录声明的更新周期，数据已不新鲜。请检查数据同步/导出任务是否停止，恢复按周期更新。",
        "The newest change delivered is older than the update cycle declared in the catalog: the data is stale. "
        "Check whether the sync or export job stopped and resume updates on the declared cycle.",
    ),
    "exists": (
        "记录引用的人员或单位在基础库（户籍人口、法人库）中不存在。请核对号码是否录入错误；如确属新登记人员，请协调相关部门及时交付。",
        "The record refers to a person or entity that does not exist in the base library (household register, "
        "legal-entity library). Check the number for typos; if the person or entity is newly registered, ask the "
        "owning department to deliver it.",
    ),
}
GENERIC_HINT = ("请核对规则说明并在源系统中更正数据。",
                "Read the rule above and correct the data in the source system.")

CSS = Markup("""
body{font-family:"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",Arial,sans-serif;margin:24px;color:#1f2933;
background:#f7f8fa;line-height:1.5}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #c0392b;
padding-bottom:4px}h3{font-size:16px;margin:0 0 8px}
.sub{color:#52606d;margin:0 0 16px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 12px;font-size:13px}
th,td{border:1px solid #d9e2ec;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border:1px solid #d9e2ec;border-left:4px solid #c0392b;border-radius:4px;
padding:12px 16px;margin:12px 0}
.card.warning{border-left-color:#e67e22}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff;background:#7b8794}
.badge.blocking{background:#c0392b}.badge.warning{background:#e67e22}.badge.overdue{background:#6b1d1d}
.ok{background:#e3f9e5;border:1px solid #8eedc7;padding:12px 16px;border-radius:4px}
.fix{background:#fffbea;border:1px solid #f7d070;padding:8px 12px;border-radius:4px;margin-top:8px}
code{background:#eef2f7;padding:0 4px;border-radius:3px}
ul.keys{columns:3;font-family:monospace;font-size:12px;margin:4px 0}
.muted{color:#7b8794}
.badge.supervised{background:#7d3c98}.badge.disputed{background:#2471a3}
svg.trend{vertical-align:middle;background:#f7f8fa;border:1px solid #d9e2ec}
details{margin:6px 0}summary{cursor:pointer;color:#334e68}
pre.sql{background:#1f2933;color:#e4e7eb;padding:8px 12px;border-radius:4px;overflow-x:auto;font-size:12px;
white-space:pre-wrap}
.links a{margin-right:16px}
""")


def _environment() -> Environment:
    def finalize(value: Any) -> Any:
        # Belt and braces: whatever reaches the page is scrubbed of resident IDs and mobiles,
        # even though every value was masked before rendering.
        if isinstance(value, Markup):
            return value
        if isinstance(value, str):
            return scrub_text(value)
        return value

    return Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, finalize=finalize,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


_INTERVAL_KEY = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z_(\d{4})(\d{2})(\d{2})T\d{6}Z$")


def interval_label(key: str | None) -> str:
    """``20261122T000000Z_20261123T000000Z`` -> ``2026-11-22 ~ 2026-11-23``; other text unchanged."""
    if not key:
        return ""
    m = _INTERVAL_KEY.match(key)
    if not m:
        return key
    g = m.groups()
    return f"{g[0]}-{g[1]}-{g[2]} ~ {g[3]}-{g[4]}-{g[5]}"


def _json(text: str | None, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def mask_key(key: Any, resource: Resource | None) -> str:
    """Display text of one failing key with every personal part masked.

    A key is the JSON text of the primary-key values (a list, or an object by field name);
    components are masked by the semantic type of their primary-key field when the resource
    is known, and the whole text is scrubbed in any case (a malformed resident ID of the
    wrong length is not caught by the scrubber, hence the semantic masking first)."""
    value = _json(key, key) if isinstance(key, str) else key
    pk = list(resource.primary_key) if resource else []
    semantics = {f.name: f.semantic for f in resource.fields} if resource else {}
    if isinstance(value, dict):
        parts = [mask_value(semantics.get(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        parts = [mask_value(semantics.get(pk[i]) if i < len(pk) else None, v) for i, v in enumerate(value)]
    else:
        parts = [mask_value(semantics.get(pk[0]) if len(pk) == 1 else None, value)]
    return scrub_text(" + ".join("" if p is None else str(p) for p in parts)) or ""


def _percent(failed: int | None, evaluated: int | None) -> str:
    if not evaluated:
        return "—"
    return f"{100.0 * (failed or 0) / evaluated:.2f}%"


def _interval_run_date(key: str | None) -> date | None:
    """The run date (last day) of an interval key, or ``None``."""
    m = _INTERVAL_KEY.match(key or "")
    if not m:
        return None
    g = [int(x) for x in m.groups()]
    return date(g[3], g[4], g[5]) - timedelta(days=1)


def _trend_svg(points: list[dict]) -> Markup:
    """A small inline SVG bar chart of a check's failing percent over runs (oldest left)."""
    if not points:
        return Markup("")
    width, height, bar = 16 * len(points), 34, 12
    top = max((p["percent"] for p in points), default=0) or 1.0
    bars = []
    for i, p in enumerate(points):
        h = 0 if not p["failed"] else max(2.0, 28.0 * p["percent"] / top)
        colour = "#c0392b" if p["failed"] else "#3c9d5d"
        title = f"{p['label']}: {p['failed']}/{p['evaluated']} ({p['percent']:.2f}%)"
        bars.append(f'<rect x="{i * 16 + 2}" y="{30 - h:.1f}" width="{bar}" height="{max(h, 1):.1f}" '
                    f'fill="{colour}"><title>{Markup.escape(title)}</title></rect>')
    return Markup(f'<svg class="trend" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="trend">{"".join(bars)}'
                  f'<line x1="0" y1="30.5" x2="{width}" y2="30.5" stroke="#9aa5b1"/></svg>')


def _ticket_view(row: dict, resource: Resource | None, run_date: date, *, trend: list[dict] | None = None,
                 events: list[dict] | None = None) -> dict:
    """Everything the template shows for one ticket, masked."""
    kind = row["check_id"].split(":", 1)[0]
    keys = _json(row["failed_keys"], [])
    keys = keys if isinstance(keys, list) else [keys]
    sample = _json(row["sample"], [])
    sample = [s for s in (sample if isinstance(sample, list) else []) if isinstance(s, dict)]
    if resource is not None:
        sample = [mask_record(resource, s) for s in sample]
    else:
        sample = [{k: scrub_text(v) if isinstance(v, str) else v for k, v in s.items()} for s in sample]
    columns: list[str] = []
    for s in sample:
        columns.extend(k for k in s if k not in columns)
    zh, en = FIX_HINTS.get(kind, GENERIC_HINT)
    due = row["due_date"] or ""
    trend = trend or []
    return {
        "ticket_id": row["ticket_id"],
        "resource": row["resource"],
        "resource_name_zh": row.get("resource_name_zh") or (resource.name_zh if resource else ""),
        "resource_name_en": row.get("resource_name_en") or (resource.name_en if resource else ""),
        "check_id": row["check_id"],
        "kind": kind,
        "field": row.get("field") or "",
        "severity": row["severity"],
        "severity_label": SEVERITY_LABELS.get(row["severity"], row["severity"]),
        "state": row["state"],
        "state_label": STATE_LABELS.get(row["state"], row["state"]),
        "failed": row["failed"],
        "evaluated": row["evaluated"],
        "percent": _percent(row["failed"], row["evaluated"]),
        "rule": row["rule"],
        "assignee": row.get("assignee") or "",
        "due_date": due,
        "overdue": bool(due) and due < run_date.isoformat(),
        "escalated_on": row.get("escalated_on") or "",
        "dispute_reason": row.get("dispute_reason") or "",
        "dispute_comment": row.get("dispute_comment") or "",
        "dispute_status": DISPUTE_LABELS.get(row.get("dispute_status") or "", row.get("dispute_status") or ""),
        "opened_interval": interval_label(row["opened_interval"]),
        "last_interval": interval_label(row["last_interval"]),
        "sample_columns": columns,
        "sample_rows": [[s.get(c) for c in columns] for s in sample],
        "key_count": len(keys),
        "failing_keys": [mask_key(k, resource) for k in keys[:MAX_KEYS]],
        "fix_zh": zh,
        "fix_en": en,
        "reproduce_sql": row.get("reproduce_sql") or "",
        "waived": int(row.get("waived") or 0),
        "observed": row.get("observed"),
        "trend": trend,
        "trend_svg": _trend_svg(trend),
        "events": [{"at": str(e["at"])[:19], "actor": scrub_text(str(e["actor"])), "action": e.get("action") or "",
                    "from": e["from_state"] or "", "to": e["to_state"], "comment": e.get("comment") or ""}
                   for e in (events or [])][-8:],
    }


def _run_view(resource_code: str, name_zh: str, catalog_status: str, run: dict | None) -> dict:
    return {
        "resource": resource_code,
        "name_zh": name_zh,
        "catalog_status": catalog_status,
        "has_run": run is not None,
        "interval": interval_label(run["interval_key"]) if run else "",
        "status": RUN_STATUS_LABELS.get(run["status"], run["status"]) if run else "",
        "extracted": run["extracted"] if run else None,
        "loaded": run["loaded"] if run else None,
        "quarantined": run["quarantined"] if run else None,
        "warned": run["warned"] if run else None,
        "error": (run.get("error") or "") if run else "",
    }


def _trends(conn: sa.Connection, unit: str, cutoff: str) -> dict[tuple[str, str], list[dict]]:
    """(resource, check) -> the last TREND_RUNS results, oldest first."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in query_file(conn, "quality/check_history", {"unit": unit, "cutoff": cutoff}):
        series = out.setdefault((r["resource"], r["check_id"]), [])
        if len(series) < TREND_RUNS:
            series.append({"label": interval_label(r["interval_key"]), "failed": int(r["failed"]),
                           "evaluated": int(r["evaluated"]), "percent": float(r["percent"] or 0)})
    return {k: list(reversed(v)) for k, v in out.items()}


def write_unit_xlsx(engine: sa.Engine, catalog: Catalog, unit: str, tickets: list[dict], path: Path) -> Path:
    """The unit's failing keys, every one of every live ticket, masked, with the delivery row
    number (sheet 不合格主键), and a ticket summary (sheet 工单)."""
    from openpyxl import Workbook

    resources = {r.code: r for r in catalog.resources}
    wb = Workbook(write_only=True)
    summary = wb.create_sheet("工单 Tickets")
    summary.append(["工单 Ticket", "资源 Resource", "名称 Name", "检查项 Check", "级别 Severity", "状态 State",
                    "不合格 Failed", "检查 Evaluated", "比例 Percent", "整改期限 Due", "督办 Supervised since",
                    "异议 Dispute", "规则 Rule"])
    for t in tickets:
        summary.append([t["ticket_id"], t["resource"], t.get("resource_name_zh") or "", t["check_id"],
                        t["severity"], t["state"], t["failed"], t["evaluated"], _percent(t["failed"], t["evaluated"]),
                        t["due_date"], t.get("escalated_on") or "", t.get("dispute_status") or "",
                        scrub_text(t["rule"])])
    limit = 1_000_000  # an XLSX sheet holds 1,048,576 rows: continue on a new sheet
    sheet, n, part = None, 0, 0
    header = ["工单 Ticket", "资源 Resource", "检查项 Check", "级别 Severity", "交付行号 Delivery row",
              "主键（已脱敏）Key (masked)"]
    with engine.connect() as conn:
        for t in tickets:
            resource = resources.get(t["resource"])
            for r in query_file(conn, "reports/failing_keys", {"resource": t["resource"],
                                                               "interval_key": t["last_interval"],
                                                               "check_id": t["check_id"]}):
                if sheet is None or n >= limit:
                    part += 1
                    sheet = wb.create_sheet("不合格主键 Failing keys" + (f" ({part})" if part > 1 else ""))
                    sheet.append(header)
                    n = 0
                sheet.append([t["ticket_id"], t["resource"], t["check_id"], t["severity"], int(r["row_num"]),
                              mask_key(r["row_key"], resource)])
                n += 1
    if sheet is None:
        sheet = wb.create_sheet("不合格主键 Failing keys")
        sheet.append(header)
    wb.properties.creator = "datarail"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def write_unit_reports(engine: sa.Engine, catalog: Catalog, run_date: str, out_dir: Path,
                       gx_results: dict[str, Path] | None = None, *, data_docs: bool = True) -> dict[str, Path]:
    """Write every source unit's report (HTML + XLSX + Data Docs), the supervision list and
    ``index.html`` into ``out_dir``.

    ``gx_results``: resource code -> path of its validation's ``gx_result.json`` (the Data
    Docs render those that exist). Returns ``{unit: html, "<unit>.xlsx": xlsx,
    "<unit>.data_docs": index, "supervision": html, "index": html}``.
    """
    day = date.fromisoformat(run_date)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cutoff = (day + timedelta(days=2)).isoformat()  # runs whose interval ends by the day after run_date
    with engine.connect() as conn:
        tickets = query_file(conn, "reports/open_tickets")
        runs = query_file(conn, "reports/latest_runs", {"cutoff": cutoff})
        resolved = [t for t in query_file(conn, "reports/resolved_tickets")
                    if _interval_run_date(t["last_interval"]) == day]
        events: dict[str, list[dict]] = {}
        for e in query_file(conn, "reports/ticket_events"):
            events.setdefault(e["ticket_id"], []).append(e)
        supervision = query_file(conn, "reports/supervision")

    resources = {r.code: r for r in catalog.resources}
    units = {u.code: u for u in catalog.units}
    unit_codes = [u.code for u in catalog.source_units]
    # A ticket of a unit no longer in the catalog still has to reach someone: report it too.
    unit_codes += sorted({t["unit"] for t in tickets} - set(unit_codes))

    env = _environment()
    unit_tpl, index_tpl = env.get_template("unit_report.html"), env.get_template("index.html")
    sup_tpl = env.get_template("supervision.html")
    written: dict[str, Path] = {}
    index_rows = []
    for code in unit_codes:
        unit = units.get(code)
        mine = [t for t in tickets if t["unit"] == code]
        with engine.connect() as conn:
            trends = _trends(conn, code, cutoff)
        views = [_ticket_view(t, resources.get(t["resource"]), day, trend=trends.get((t["resource"], t["check_id"])),
                              events=events.get(t["ticket_id"])) for t in mine]
        run_by_res = {r["resource"]: r for r in runs if r["unit"] == code}
        run_views = [_run_view(r.code, r.name_zh, r.status, run_by_res.pop(r.code, None))
                     for r in catalog.resources if r.unit == code]
        run_views += [_run_view(c, "", "", run) for c, run in sorted(run_by_res.items())]
        summary = {
            "open": len(views),
            "blocking": sum(v["severity"] == "blocking" for v in views),
            "warning": sum(v["severity"] != "blocking" for v in views),
            "overdue": sum(v["overdue"] for v in views),
            "supervised": sum(bool(v["escalated_on"]) for v in views),
            "disputed": sum(v["state"] == "disputed" for v in views),
            "resolved": sum(t["unit"] == code for t in resolved),
        }
        unit_view = {
            "code": code,
            "name_zh": unit.name_zh if unit else code,
            "name_en": unit.name_en if unit else code,
            "contact_email": unit.contact_email if unit else "",
        }
        xlsx = write_unit_xlsx(engine, catalog, code, mine, out_dir / f"quality_{code}.xlsx")
        written[f"{code}.xlsx"] = xlsx
        docs = None
        if data_docs and gx_results:
            from quality.datadocs import build_data_docs, load_results

            results = load_results([gx_results[r.code] for r in catalog.resources
                                    if r.unit == code and r.code in gx_results])
            docs = build_data_docs(code, results, out_dir / "data_docs" / code, run_date)
            if docs:
                written[f"{code}.data_docs"] = docs
        struck = [{"ticket_id": t["ticket_id"], "resource": t["resource"],
                   "resource_name_zh": t.get("resource_name_zh") or "", "check_id": t["check_id"],
                   "severity_label": SEVERITY_LABELS.get(t["severity"], t["severity"]),
                   "opened_interval": interval_label(t["opened_interval"])}
                  for t in resolved if t["unit"] == code]
        path = out_dir / f"quality_{code}.html"
        path.write_text(unit_tpl.render(css=CSS, run_date=run_date, unit=unit_view, summary=summary,
                                        tickets=views, runs=run_views, max_keys=MAX_KEYS, resolved=struck,
                                        xlsx=xlsx.name,
                                        docs=docs.relative_to(out_dir).as_posix() if docs else ""),
                        encoding="utf-8")
        written[code] = path
        index_rows.append({**unit_view, **summary, "file": path.name, "xlsx": xlsx.name,
                           "docs": docs.relative_to(out_dir).as_posix() if docs else ""})
        log.info("quality report %s: %d open tickets (%d overdue, %d supervised)", code, summary["open"],
                 summary["overdue"], summary["supervised"])

    sup_rows = [{**s, "days_overdue": (day - date.fromisoformat(s["due_date"])).days,
                 "state_label": STATE_LABELS.get(s["state"], s["state"]),
                 "severity_label": SEVERITY_LABELS.get(s["severity"], s["severity"])} for s in supervision]
    sup = out_dir / "supervision.html"
    sup.write_text(sup_tpl.render(css=CSS, run_date=run_date, rows=sup_rows), encoding="utf-8")
    written["supervision"] = sup
    totals = {k: sum(r[k] for r in index_rows)
              for k in ("open", "blocking", "warning", "overdue", "supervised", "disputed", "resolved")}
    index = out_dir / "index.html"
    index.write_text(index_tpl.render(css=CSS, run_date=run_date, units=index_rows, totals=totals,
                                      supervised=len(sup_rows)), encoding="utf-8")
    written["index"] = index
    return written
