"""Leadership export of one run date's metric snapshot (定期通报): a long-format CSV for
machines and an Excel bulletin (工作通报) for people.

Both are built from the warehouse alone (``meta.metric_snapshots``, ``meta.need_status``
and the ``meta.catalog_*`` snapshot) and are byte-for-byte reproducible: the workbook's
properties and its zip entries carry the run date, never the wall clock, so rerunning a
date rewrites the same files.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.writer.excel import ExcelWriter

from warehouse.sqlfiles import query_file

log = logging.getLogger(__name__)

CSV_COLUMNS = ("metric", "scope_type", "scope", "numerator", "denominator", "value")

REASON_LABELS = {
    "no_resource": "无数据资源",
    "not_delivered": "未按时提供",
    "not_shared": "不予共享",
    "not_granted": "未授权",
    "stale": "数据不新鲜",
    "failing_quality": "质量不达标",
}
REASON_LABELS_EN = {
    "no_resource": "no resource", "not_delivered": "not delivered on time", "not_shared": "not shared",
    "not_granted": "not granted", "stale": "stale", "failing_quality": "failing quality",
}

SHEET_SUMMARY, SHEET_ITEMS, SHEET_UNITS, SHEET_UNMET = "总览 Summary", "事项 Items", "单位 Units", "未满足需求 Unmet needs"
PCT, INT = "0.00%", "#,##0"
_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="DDE6F0")
_TITLE_FONT = Font(bold=True, size=14)


def metrics_table(engine: sa.Engine, run_date: str) -> list[dict]:
    """Every metric snapshot row of ``run_date`` (metric, scope_type, scope, numerator,
    denominator, value), in a stable order; what ``datarail metrics --json`` prints."""
    with engine.connect() as conn:
        return query_file(conn, "reports/metric_snapshots", {"run_date": run_date})


def _num(v: Any) -> str:
    """CSV text of a number: integral values without a decimal point, others rounded to 6 places."""
    if v is None:
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(round(f, 6))


def _ratio(row: dict | None) -> float | None:
    """The fraction of a snapshot row, from numerator ÷ denominator when both exist."""
    if not row:
        return None
    if row.get("denominator"):
        return float(row["numerator"] or 0) / float(row["denominator"])
    return None if row.get("value") is None else float(row["value"])


def _n_of(row: dict | None) -> str | None:
    if not row or row.get("denominator") is None:
        return None
    return f"{_int(row['numerator'])}/{_int(row['denominator'])}"


def _int(v: Any) -> int | None:
    return None if v is None else int(round(float(v)))


def _write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r["metric"], r["scope_type"], r["scope"],
                    _num(r["numerator"]), _num(r["denominator"]), _num(r["value"])])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def _table(ws, top: int, headers: list[str], rows: list[list], formats: dict[int, str] | None = None,
           widths: list[int] | None = None) -> int:
    """Write a header row and data rows starting at row ``top``; return the next free row."""
    for c, h in enumerate(headers, 1):
        cell = ws.cell(row=top, column=c, value=h)
        cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for r, values in enumerate(rows, top + 1):
        for c, v in enumerate(values, 1):
            cell = ws.cell(row=r, column=c, value=v)
            if formats and c in formats and isinstance(v, int | float):
                cell.number_format = formats[c]
    for c, w in enumerate(widths or [], 1):
        ws.column_dimensions[get_column_letter(c)].width = w
    return top + len(rows) + 1


def _summary_sheet(ws, run_date: str, snap: dict, regions: list[dict]) -> None:
    ws["A1"] = f"数据共享工作通报 Data sharing bulletin · {run_date}"
    ws["A1"].font = _TITLE_FONT
    ws["A2"] = f"数据日期 Run date: {run_date}"
    ratio = snap.get(("sharing_ratio", "overall"))
    items = snap.get(("items_fully_served", "overall"))
    needs = snap.get(("needs_met", "overall")) or ratio
    rows_in = _int((snap.get(("exchange_rows_in", "overall")) or {}).get("value"))
    rows_out = _int((snap.get(("exchange_rows_out", "overall")) or {}).get("value"))
    total = None if rows_in is None and rows_out is None else (rows_in or 0) + (rows_out or 0)
    rows = [
        ["数据共享比例 Sharing ratio", _ratio(ratio), _n_of(ratio), "已满足的共享需求 ÷ 全部共享需求 needs met ÷ all needs"],
        ["事项全部满足 Items fully served", _ratio(items), _n_of(items),
         "全部需求均已满足的事项 ÷ 全部事项 items with every need met ÷ all items"],
        ["已满足需求 Needs met", _int(needs["numerator"]) if needs else None, _n_of(needs),
         "由已发布、新鲜、质量达标的共享数据满足 met by published, fresh, quality-passing data"],
        ["数据交换量（流入）Exchange rows in", rows_in, None, "本期归集入中心的记录数 rows extracted into the centre"],
        ["数据交换量（流出）Exchange rows out", rows_out, None, "本期共享发布的记录数 rows published for sharing"],
        ["数据交换量（合计）Exchange volume", total, None, "流入 + 流出 in + out"],
    ]
    nxt = _table(ws, 4, ["指标 Metric", "数值 Value", "n/N", "说明 Note"], rows, widths=[34, 16, 12, 60])
    # Per-row formats: ratios as percents, counts with thousands separators.
    for r, fmt in zip(range(5, 11), (PCT, PCT, INT, INT, INT, INT), strict=True):
        ws.cell(row=r, column=2).number_format = fmt
    if regions:
        ws.cell(row=nxt + 1, column=1, value="按地区共享比例 Sharing ratio by region").font = _HEADER_FONT
        _table(ws, nxt + 2, ["地区代码 Region", "共享比例 Sharing ratio", "n/N"],
               [[r["scope"], _ratio(r), _n_of(r)] for r in regions], formats={2: PCT})
    ws.freeze_panes = "A5"


def _items_sheet(ws, items: list[dict]) -> None:
    rows = []
    for i in items:
        needs, met = int(i["needs"] or 0), int(i["met"] or 0)
        full = needs > 0 and met == needs
        rows.append([i["item"], i["item_name_zh"], i["item_name_en"], i["handling_unit"], needs, met,
                     met / needs if needs else None, "是 yes" if full else "否 no"])
    _table(ws, 1, ["事项编码 Code", "事项名称 Name", "Name (en)", "办理单位 Handling unit", "需求数 Needs",
                   "已满足 Met", "共享比例 Ratio", "全部满足 Fully served"], rows,
           formats={7: PCT}, widths=[22, 36, 36, 14, 10, 10, 12, 14])
    ws.freeze_panes = "A2"


def _units_sheet(ws, units: list[dict], snaps: list[dict]) -> None:
    by: dict[tuple[str, str], dict] = {}
    for s in snaps:
        if s["metric"] in ("provision_rate", "structuring_rate", "open_tickets", "overdue_tickets"):
            if s["scope_type"] != "overall":
                by[(s["metric"], s["scope"])] = s
        elif s["metric"] == "sharing_ratio" and s["scope_type"] in ("consumer_unit", "source_unit"):
            by[(s["scope_type"], s["scope"])] = s
    names = {u["code"]: u for u in units}
    codes = [u["code"] for u in units] + sorted({scope for _, scope in by} - set(names))
    rows = []
    for code in codes:
        u = names.get(code, {})
        prov, struct = by.get(("provision_rate", code)), by.get(("structuring_rate", code))
        open_t, over_t = by.get(("open_tickets", code)), by.get(("overdue_tickets", code))
        rows.append([code, u.get("name_zh"), u.get("name_en"),
                     _ratio(prov), _n_of(prov), _ratio(struct), _n_of(struct),
                     _int(open_t["value"]) if open_t else None, _int(over_t["value"]) if over_t else None,
                     _ratio(by.get(("source_unit", code))), _ratio(by.get(("consumer_unit", code)))])
    _table(ws, 1, ["单位代码 Code", "单位名称 Name", "Name (en)", "数据提供率 Provision rate", "已提供/应提供 n/N",
                   "数据结构化率 Structuring rate", "结构化/已提供 n/N", "未销号工单 Open tickets",
                   "超期工单 Overdue tickets", "共享比例（数源）Sharing ratio as source",
                   "共享比例（用数）Sharing ratio as consumer"], rows,
           formats={4: PCT, 6: PCT, 10: PCT, 11: PCT}, widths=[10, 26, 40, 14, 12, 14, 12, 12, 12, 16, 16])
    ws.freeze_panes = "A2"


def _unmet_sheet(ws, unmet: list[dict]) -> None:
    rows = [[u["item"], u["item_name_zh"], u["need"], u["material_zh"],
             REASON_LABELS.get(u["reason"] or "", u["reason"]), u["reason"], REASON_LABELS_EN.get(u["reason"] or ""),
             u["resource"], u["resource_name_zh"], u["provider_unit"]] for u in unmet]
    _table(ws, 1, ["事项编码 Item", "事项名称 Item name", "需求编码 Need", "材料 Material", "原因 Reason",
                   "原因代码 Reason code", "Reason (en)", "数据资源 Resource", "资源名称 Resource name",
                   "数源单位 Provider unit"], rows, widths=[22, 30, 22, 30, 14, 16, 22, 14, 26, 12])
    ws.freeze_panes = "A2"


def _reproducible_xlsx(wb: Workbook, stamp: datetime) -> bytes:
    """The workbook's bytes with properties and zip timestamps fixed to ``stamp``.

    ``openpyxl.save_workbook`` stamps the wall clock into docProps/core.xml and the zip
    entries, so it is bypassed: ExcelWriter keeps our properties, and the archive is
    rewritten with every entry dated ``stamp``."""
    wb.properties.created = stamp
    wb.properties.modified = stamp
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        ExcelWriter(wb, archive).write_data()
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=stamp.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def write_leadership_export(engine: sa.Engine, run_date: str, out_dir: Path) -> dict[str, Path]:
    """Write ``metrics_<run_date>.csv`` (long format) and ``bulletin_<run_date>.xlsx`` (sheets
    总览 Summary, 事项 Items, 单位 Units, 未满足需求 Unmet needs) into ``out_dir``.

    Returns ``{"csv": path, "xlsx": path}``. A run date without a snapshot still gets both
    files (empty tables) and a warning in the log: compute the metrics first."""
    day = date.fromisoformat(run_date)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        snaps = query_file(conn, "reports/metric_snapshots", {"run_date": run_date})
        items = query_file(conn, "reports/item_needs", {"run_date": run_date})
        unmet = query_file(conn, "reports/unmet_needs", {"run_date": run_date})
        units = query_file(conn, "reports/units")
    if not snaps:
        log.warning("no metric snapshot for %s: run `datarail metrics` (compute) first; exporting empty tables",
                    run_date)

    csv_path = out_dir / f"metrics_{run_date}.csv"
    _write_csv(snaps, csv_path)

    overall = {(s["metric"], s["scope_type"]): s for s in snaps if s["scope_type"] == "overall"}
    regions = [s for s in snaps if s["metric"] == "sharing_ratio" and s["scope_type"] == "region"]
    wb = Workbook()
    _summary_sheet(wb.active, run_date, overall, regions)
    wb.active.title = SHEET_SUMMARY
    _items_sheet(wb.create_sheet(SHEET_ITEMS), items)
    _units_sheet(wb.create_sheet(SHEET_UNITS), units, snaps)
    _unmet_sheet(wb.create_sheet(SHEET_UNMET), unmet)
    wb.properties.creator = "datarail"
    wb.properties.title = f"数据共享工作通报 {run_date}"
    xlsx_path = out_dir / f"bulletin_{run_date}.xlsx"
    xlsx_path.write_bytes(_reproducible_xlsx(wb, datetime(day.year, day.month, day.day)))
    log.info("leadership export %s: %d metric rows, %d items, %d unmet needs", run_date, len(snaps), len(items),
             len(unmet))
    return {"csv": csv_path, "xlsx": xlsx_path}
