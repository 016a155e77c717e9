"""Export the published sharing list (共享清单) of one run date: the machine-readable menu
consumer units order from, as JSON (for systems) and CSV (for people, opened in Excel).

Both files are rebuilt from ``share.sharing_list`` alone, so rerunning a date rewrites the
same bytes. The list holds metadata, not records; every text still passes through
:func:`datarail.privacy.scrub_text` on its way out, as everything leaving the warehouse does.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from datarail.privacy import scrub_text
from warehouse.sqlfiles import query_file

log = logging.getLogger(__name__)

CSV_COLUMNS = ("run_date", "resource", "name_zh", "name_en", "provider_unit", "table_name", "sharing_type",
               "sharing_condition", "granted_to", "update_cycle", "base_library", "field_count", "fields",
               "shared_rows", "latest_update", "pass_rate", "quality_status")


def _parse(text: str | None, default: Any, *, resource: str, column: str) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        # A malformed cell should not sink the whole list; say which one so it gets fixed.
        log.warning("sharing list: %s.%s is not valid JSON; exported as text", resource, column)
        return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def sharing_entries(engine: sa.Engine, run_date: str) -> list[dict]:
    """The sharing list of ``run_date`` as dicts, ``fields`` and ``granted_to`` parsed from
    their JSON text, ordered by resource code."""
    with engine.connect() as conn:
        rows = query_file(conn, "reports/sharing_list", {"run_date": run_date})
    out = []
    for r in rows:
        entry = dict(r)
        entry["granted_to"] = _parse(r["granted_to"], [], resource=r["resource"], column="granted_to")
        entry["fields"] = _parse(r["fields"], [], resource=r["resource"], column="fields")
        entry["shared_rows"] = None if r["shared_rows"] is None else int(r["shared_rows"])
        entry["pass_rate"] = None if r["pass_rate"] is None else float(r["pass_rate"])
        out.append(_scrub(entry))
    return out


def _field_text(fields: Any) -> tuple[int, str]:
    """(count, ``name:type;...``) of the parsed fields column, for the flat CSV."""
    if not isinstance(fields, list):
        return 0, str(fields or "")
    parts = []
    for f in fields:
        if isinstance(f, dict):
            parts.append(f"{f.get('name', '')}:{f['type']}" if f.get("type") else str(f.get("name", "")))
        else:
            parts.append(str(f))
    return len(fields), ";".join(parts)


def write_sharing_list(engine: sa.Engine, run_date: str, out_dir: Path) -> dict[str, Path]:
    """Write ``sharing_list_<run_date>.json`` (UTF-8, a list of entries) and
    ``sharing_list_<run_date>.csv`` (UTF-8 with BOM, so Excel shows the Chinese) into
    ``out_dir``; return ``{"json": path, "csv": path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = sharing_entries(engine, run_date)
    if not entries:
        log.warning("sharing list for %s is empty: nothing published for that date (run publish first?)", run_date)

    json_path = out_dir / f"sharing_list_{run_date}.json"
    json_path.write_text(json.dumps(entries, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n")  # CRLF: what Excel writes and expects
    w.writerow(CSV_COLUMNS)
    for e in entries:
        count, text = _field_text(e["fields"])
        granted = e["granted_to"]
        w.writerow([e["run_date"], e["resource"], e["name_zh"], e["name_en"], e["provider_unit"], e["table_name"],
                    e["sharing_type"], e["sharing_condition"] or "",
                    ";".join(map(str, granted)) if isinstance(granted, list) else granted,
                    e["update_cycle"], e["base_library"], count, text, e["shared_rows"],
                    e["latest_update"] or "", "" if e["pass_rate"] is None else round(e["pass_rate"], 6),
                    e["quality_status"]])
    csv_path = out_dir / f"sharing_list_{run_date}.csv"
    csv_path.write_text(buf.getvalue(), encoding="utf-8-sig", newline="")
    log.info("sharing list %s: %d resources exported", run_date, len(entries))
    return {"json": json_path, "csv": csv_path}
