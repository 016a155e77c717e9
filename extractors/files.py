"""Extract a catalog resource from files a unit drops in a folder (CSV and XLSX).

The connection (``conn_type`` ``fs``) gives the drop folder in ``extra['path']``; the
resource's ``location.file`` is a glob inside it. Matching files are read in sorted name
order and staged as one delivery (``_row`` runs on across files).

CSV: the declared ``location.encoding``, else detected (UTF-8 with or without BOM, else
GB18030, the superset of GBK); decoding is strict, so a file that does not decode cleanly
raises :class:`DecodeError` with the byte offset and line instead of staging mojibake.
The file is read in blocks cut at line ends, never whole.

XLSX: openpyxl in read-only mode; the sheet is ``location.sheet`` or the first; merged
cells (read from the sheet's XML, which read-only mode skips) carry the top-left value into
every cell of the range. Legacy XLS: xlrd, merged cells likewise.

File drops with state (``state`` given, as the pipeline does): every file is fingerprinted
(sha256) and ingested by one data interval only; after staging, the files move to
``<archive>/processed/<interval>/``, a file that cannot be read to ``<archive>/rejected/<interval>/``
with a ``<name>.reason.txt`` beside it (archive: connection extra ``archive_path``, default
``<drop folder>/_archive``). A rerun of an interval reads its own processed files again.

Both: the header row is the first non-blank row (of the first few) whose cells best match
the catalog's source column names, so title rows above it are skipped; blank rows are
skipped; a CSV row with more or fewer cells than the header raises :class:`ExtractError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from catalog.models import Resource
from datarail.errors import DecodeError, ExtractError, SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo, ExtractResult
from extractors.drift import (
    Drift,
    Rejects,
    RetypeWatch,
    drift_error,
    log_drift,
    new_column_name,
    policy_of,
    settle_retyped,
    split_new,
)
from extractors.staging import StagingWriter, WatermarkWindow, resolve_columns, source_timezone, to_text

log = logging.getLogger(__name__)

BLOCK_BYTES = 1 << 20  # decode unit; each block is extended to the next line end
HEADER_SCAN_ROWS = 20  # non-blank rows searched for the header (title blocks are short)
SNIFF_CHARS = 64 * 1024
CANDIDATE_DELIMITERS = ",\t;|"
_BOM = codecs.BOM_UTF8
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
XLS_SUFFIXES = {".xls"}
CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
ARCHIVE_DIR = "_archive"


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


class _BadBytes(Exception):
    """Where a strict decode failed: absolute byte offset and 1-based line."""

    def __init__(self, offset: int, line: int, reason: str):
        self.offset, self.line, self.reason = offset, line, reason
        super().__init__(f"byte {offset} (line {line}): {reason}")


def codec_name(encoding: str) -> str:
    """Canonical codec name (``utf-8``, ``gbk``, ``gb18030``); ``utf-8-sig`` counts as ``utf-8``
    because a BOM is stripped anyway."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ExtractError(f"unknown encoding {encoding!r}",
                           hint="Declare utf-8, gbk or gb18030 in location.encoding") from exc
    return "utf-8" if name in ("utf-8-sig", "utf_8_sig") else name


def _blocks(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield (byte offset, line number, block) with every block ending at a line end.

    Cutting at b'\\n' keeps multi-byte characters whole: in UTF-8, GBK and GB18030 the byte
    0x0A never occurs inside a character, so each block decodes on its own.
    """
    offset, line = 0, 1
    with path.open("rb") as fh:
        while True:
            block = fh.read(BLOCK_BYTES)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += fh.readline()
            yield offset, line, block
            offset += len(block)
            line += block.count(b"\n")


def _decode(block: bytes, codec: str, offset: int, line: int) -> str:
    try:
        return block.decode(codec, "strict")
    except UnicodeDecodeError as exc:
        raise _BadBytes(offset + exc.start, line + block.count(b"\n", 0, exc.start), exc.reason) from None


def _strip_bom(offset: int, block: bytes, codec: str) -> tuple[int, bytes]:
    if offset == 0 and codec == "utf-8" and block.startswith(_BOM):
        return len(_BOM), block[len(_BOM):]
    return offset, block


def first_bad_byte(path: Path, encoding: str) -> _BadBytes | None:
    """Scan the whole file (block by block) and return where it stops decoding, or ``None``."""
    codec = codec_name(encoding)
    for offset, line, block in _blocks(path):
        offset, block = _strip_bom(offset, block, codec)
        try:
            _decode(block, codec, offset, line)
        except _BadBytes as bad:
            return bad
    return None


def detect_encoding(path: Path, *, unit: str | None = None, resource: str | None = None) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else GB18030 when it
    decodes as that; otherwise :class:`DecodeError` naming both failure points."""
    with path.open("rb") as fh:
        if fh.read(len(_BOM)) == _BOM:
            return "utf-8"
    bad_utf8 = first_bad_byte(path, "utf-8")
    if bad_utf8 is None:
        return "utf-8"
    bad_gb = first_bad_byte(path, "gb18030")
    if bad_gb is None:
        log.info("file %s: not UTF-8 (byte %d), detected GB18030", path.name, bad_utf8.offset)
        return "gb18030"
    raise DecodeError(
        f"file {path.name} is neither UTF-8 (invalid at byte {bad_utf8.offset}, line {bad_utf8.line}) "
        f"nor GB18030 (invalid at byte {bad_gb.offset}, line {bad_gb.line})", unit=unit, resource=resource,
        hint="Ask the unit to re-deliver it in UTF-8, or declare location.encoding in the catalog")


def decoded_lines(path: Path, encoding: str, *, unit: str | None = None,
                  resource: str | None = None) -> Iterator[str]:
    """The file's lines (line ends kept, as the csv module wants), decoded strictly.

    A BOM at the start is dropped. Raises :class:`DecodeError` with byte offset and line at
    the first byte that does not decode.
    """
    codec = codec_name(encoding)
    for offset, line, block in _blocks(path):
        offset, block = _strip_bom(offset, block, codec)
        try:
            text = _decode(block, codec, offset, line)
        except _BadBytes as bad:
            raise DecodeError(f"file {path.name} does not decode as {codec} at byte {bad.offset} "
                              f"(line {bad.line}): {bad.reason}", unit=unit, resource=resource,
                              hint="Ask the unit to re-deliver the file in its declared encoding, or fix "
                                   "location.encoding in the catalog") from None
        # newline='' splits on \n, \r\n and \r without translating, like open(newline='').
        yield from io.StringIO(text, newline="")


# --------------------------------------------------------------------------------------------
# header detection
# --------------------------------------------------------------------------------------------


def _norm(cell: Any) -> str:
    return "" if cell is None else str(cell).replace("\ufeff", "").strip().casefold()


def _blank(cells: Sequence[Any]) -> bool:
    return all(_norm(c) == "" for c in cells)


def header_score(cells: Sequence[Any], expected: set[str]) -> int:
    """How many distinct expected (normalised) column names the row contains."""
    return len({_norm(c) for c in cells} & expected)


def scan_header(rows: Iterator[tuple[int, Sequence[Any]]], expected: set[str]
                ) -> tuple[list[tuple[int, Sequence[Any]]], int | None, int]:
    """Read ``(number, cells)`` rows until HEADER_SCAN_ROWS non-blank ones are seen; return them
    (the caller streams on from the same iterator after them) with :func:`pick_header`'s answer."""
    early: list[tuple[int, Sequence[Any]]] = []
    nonblank = 0
    for number, cells in rows:
        early.append((number, cells))
        nonblank += not _blank(cells)
        if nonblank >= HEADER_SCAN_ROWS:
            break
    h, score = pick_header([c for _, c in early], expected)
    return early, h, score


def pick_header(rows: Sequence[Sequence[Any]], expected: set[str]) -> tuple[int | None, int]:
    """(index, score) of the header among ``rows``: the best-matching non-blank row, the
    earliest on a tie; index ``None`` when every row is blank."""
    best, best_score = None, -1
    for i, cells in enumerate(rows):
        if _blank(cells):
            continue
        score = header_score(cells, expected)
        if score > best_score:
            best, best_score = i, score
    return best, max(best_score, 0)


def _no_header(resource: Resource, where: str) -> SchemaDriftError:
    # The rows looked at may be data rows: never quote them (personal data), name the
    # expected columns instead.
    names = ", ".join(f.source_name for f in resource.fields)
    return SchemaDriftError(
        f"{where}: none of the first {HEADER_SCAN_ROWS} non-blank rows names any catalog column "
        f"(expected a header with: {names})", unit=resource.unit, resource=resource.code,
        hint="Ask the unit to deliver the file with its header row, "
             "or fix the fields' `source` in the catalog")


def choose_delimiter(sample: str, expected: set[str]) -> str:
    """The delimiter: csv.Sniffer's guess on ``sample`` (fallback ','), overruled by whichever
    candidate splits some early row into the most expected column names."""
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ","
    best, best_score = sniffed, -1
    for delim in dict.fromkeys([sniffed, *CANDIDATE_DELIMITERS]):
        parsed = csv.reader(io.StringIO(sample, newline=""), delimiter=delim)
        rows = [r for r in parsed if r][:HEADER_SCAN_ROWS]
        score = max((header_score(r, expected) for r in rows), default=0)
        if score > best_score:
            best, best_score = delim, score
    return best


def _expected(resource: Resource) -> set[str]:
    return {_norm(f.source_name) for f in resource.fields}


# --------------------------------------------------------------------------------------------
# readers: yield (values in field order, _source) per data row
# --------------------------------------------------------------------------------------------


def _map_row(cells: Sequence[Any], mapping: list[int | None]) -> list[Any]:
    return [cells[i] if i is not None and i < len(cells) else None for i in mapping]


class _Columns:
    """A file's header mapped to the catalog, with the drift it shows (new and missing columns)."""

    def __init__(self, resource: Resource, header: Sequence[Any], *, where: str, drift: Drift,
                 header_at: str = ""):
        self.mapping = resolve_columns(resource, header, where=where)
        self.new_idx = split_new(header, self.mapping)
        self.new_names = [str(header[i]).strip() for i in self.new_idx]
        missing = [f.name for f, i in zip(resource.fields, self.mapping, strict=True) if i is None]
        for n in self.new_names:
            if n not in drift.new:
                drift.new.append(n)
        for n in missing:
            if n not in drift.missing:
                drift.missing.append(n)
        self.resource, self.where, self.drift, self.header_at = resource, where, drift, header_at
        if drift.policy == "freeze" and missing:
            col = missing[0]
            raise drift_error(resource, resource.field(col).source_name, f"is missing from {where}",
                              "every row (the column is absent from the header)", field=col)

    def row(self, cells: Sequence[Any], source: str) -> tuple[list[Any], str, dict[str, Any]]:
        """(values in field order, _source, {new column: value} for non-blank new values)."""
        extras = {}
        for i, name in zip(self.new_idx, self.new_names, strict=True):
            if i < len(cells) and _norm(cells[i]) != "":
                extras[name] = cells[i]
        if extras and self.drift.policy == "freeze":
            name = next(iter(extras))
            raise drift_error(self.resource, name, f"is delivered by {self.where} but not in the catalog", source)
        return _map_row(cells, self.mapping), source, extras

    def finish(self) -> None:
        """End of the file: under ``freeze`` a new column is an error even when no row has a
        value in it (as for SQL sources); rows with a value failed earlier, naming the row."""
        if self.drift.policy == "freeze" and self.new_names:
            raise drift_error(self.resource, self.new_names[0], f"is delivered by {self.where} but not in the "
                              "catalog", f"{self.header_at} (the header; no row has a value in it)")


def read_csv(path: Path, resource: Resource, *, encoding: str | None = None,
             drift: Drift | None = None) -> Iterator[tuple[list[Any], str, dict[str, Any]]]:
    """Stream the data rows of one CSV file as (values in field order, ``_source``, new-column values)."""
    drift = drift or Drift(policy=policy_of(resource))
    ctx = {"unit": resource.unit, "resource": resource.code}
    enc = codec_name(encoding) if encoding else detect_encoding(path, **ctx)
    lines = decoded_lines(path, enc, **ctx)
    head: list[str] = []
    size = 0
    for text in lines:
        head.append(text)
        size += len(text)
        if size >= SNIFF_CHARS:
            break
    expected = _expected(resource)
    delimiter = choose_delimiter("".join(head), expected)
    # strict: an unterminated quote must not silently swallow the rest of the file.
    reader = csv.reader(chain(head, lines), delimiter=delimiter, strict=True)

    def records() -> Iterator[tuple[int, list[str]]]:
        """(start line, cells) per record; a record may span lines inside quotes."""
        last_line = 0
        try:
            for record in reader:
                yield last_line + 1, record
                last_line = reader.line_num
        except csv.Error as exc:
            raise ExtractError(f"file {path.name} line {last_line + 1}: not valid CSV ({exc})",
                               unit=resource.unit, resource=resource.code) from exc

    # Look at the first records to find the header; the rest stream on from the same reader.
    stream = records()
    early, h, score = scan_header(stream, expected)
    if h is None:
        log.warning("resource %s: file %s is empty, nothing staged from it", resource.code, path.name)
        return
    if score == 0:
        raise _no_header(resource, f"file {path.name}")
    header_line, header = early[h]
    if h:
        log.info("resource %s: file %s: header on line %d, %d row(s) above it skipped",
                 resource.code, path.name, header_line, h)
    cols = _Columns(resource, [c.replace("\ufeff", "").strip() for c in header],
                    where=f"file {path.name} (encoding {enc}, delimiter {delimiter!r})", drift=drift,
                    header_at=f"{path.name}:line {header_line}")
    width = len(header)
    for line, record in chain(early[h + 1:], stream):
        if _blank(record):
            continue
        if len(record) != width:
            raise ExtractError(
                f"file {path.name} line {line}: {len(record)} cells, the header (line {header_line}) "
                f"has {width}", unit=resource.unit, resource=resource.code, row=line,
                hint="A value probably contains an unquoted delimiter or line break: ask the unit "
                     "to re-export the file with quoting")
        yield cols.row(record, f"{path.name}:line {line}")
    cols.finish()


_MERGE_REF = re.compile(rb'<(?:\w+:)?mergeCell\s+ref="([A-Z]+)(\d+):([A-Z]+)(\d+)"')


def _col_index(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ch - 64)
    return n - 1


def xlsx_merged_ranges(path: Path, member: str) -> list[tuple[int, int, int, int]]:
    """Merged ranges of one worksheet as (first row, last row, first col, last col), rows
    1-based and columns 0-based, scanned from the sheet's XML in blocks (read-only openpyxl
    does not report them)."""
    out = []
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        tail = b""
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            data = tail + block
            cut = max(data.rfind(b"<"), 0) if len(block) == 1 << 20 else len(data)
            for m in _MERGE_REF.finditer(data, 0, cut):
                out.append((int(m.group(2)), int(m.group(4)), _col_index(m.group(1)), _col_index(m.group(3))))
            tail = data[cut:]
    return out


class _MergedFill:
    """Carries each merged range's top-left value into every cell of the range while rows
    stream by in order (the anchor row always comes first)."""

    def __init__(self, ranges: Sequence[tuple[int, int, int, int]]):
        self.by_row: dict[int, list[tuple[int, int, tuple[int, int]]]] = {}
        for r1, r2, c1, c2 in ranges:
            if (r1, c1) == (r2, c2):
                continue
            for r in range(r1, r2 + 1):
                self.by_row.setdefault(r, []).append((c1, c2, (r1, c1)))
        self.anchors: dict[tuple[int, int], Any] = {}

    def __bool__(self) -> bool:
        return bool(self.by_row)

    def apply(self, number: int, cells: Sequence[Any]) -> Sequence[Any]:
        spans = self.by_row.get(number)
        if not spans:
            return cells
        cells = list(cells)
        for c1, c2, anchor in spans:
            if anchor[0] == number:
                self.anchors[anchor] = cells[c1] if c1 < len(cells) else None
            value = self.anchors.get(anchor)
            if len(cells) <= c2:
                cells.extend([None] * (c2 + 1 - len(cells)))
            for c in range(c1, c2 + 1):
                if (number, c) != anchor:
                    cells[c] = value
        return cells


def _sheet_rows(resource: Resource, path: Path, title: str, rows: Iterator[tuple[int, Sequence[Any]]],
                drift: Drift) -> Iterator[tuple[list[Any], str, dict[str, Any]]]:
    """Header search, blank-row skipping and width check shared by XLSX and XLS sheets."""
    expected = _expected(resource)
    early, h, score = scan_header(rows, expected)
    if h is None:
        log.warning("resource %s: file %s sheet %s is empty", resource.code, path.name, title)
        return
    if score == 0:
        raise _no_header(resource, f"file {path.name} sheet {title}")
    header_row, header = early[h]
    if h:
        log.info("resource %s: file %s!%s: header on row %d, rows above it skipped",
                 resource.code, path.name, title, header_row)
    names = [None if _norm(c) == "" else str(c).strip() for c in header]
    while names and names[-1] is None:
        names.pop()
    cols = _Columns(resource, names, where=f"file {path.name} sheet {title}", drift=drift,
                    header_at=f"{path.name}:{title}!row {header_row}")
    width = len(names)
    for number, cells in chain(early[h + 1:], rows):
        if _blank(cells):
            continue
        if any(_norm(c) != "" for c in cells[width:]):
            raise ExtractError(
                f"file {path.name} sheet {title} row {number}: a value right of the last header "
                f"column (row {header_row} has {width} columns)", unit=resource.unit,
                resource=resource.code, row=number, hint="Ask the unit to keep every value under a header")
        yield cols.row(cells, f"{path.name}:{title}!row {number}")
    cols.finish()


def read_xlsx(path: Path, resource: Resource, *, sheet: str | None = None,
              drift: Drift | None = None) -> Iterator[tuple[list[Any], str, dict[str, Any]]]:
    """Stream the data rows of one XLSX sheet as (values in field order, ``_source``, new-column values)."""
    # Imported here so SQL and HTTP runs do not pay for it.
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    drift = drift or Drift(policy=policy_of(resource))
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ExtractError(f"file {path.name} is not a readable XLSX workbook ({type(exc).__name__})",
                           unit=resource.unit, resource=resource.code) from exc
    try:
        if sheet:
            if sheet not in wb.sheetnames:
                raise ExtractError(f"file {path.name} has no sheet {sheet!r} (sheets: {wb.sheetnames})",
                                   unit=resource.unit, resource=resource.code,
                                   hint="Fix location.sheet in the catalog or ask the unit")
            ws = wb[sheet]
        else:
            ws = wb.worksheets[0]
        # Writers often record a wrong sheet dimension; read-only mode would trust it and
        # cut rows off. Resetting makes openpyxl read every row present.
        ws.reset_dimensions()
        member = getattr(ws, "_worksheet_path", None)
        fill = _MergedFill(xlsx_merged_ranges(path, member) if member else [])
        rows = ((n, fill.apply(n, cells) if fill else cells)
                for n, cells in enumerate(ws.iter_rows(values_only=True), start=1))
        yield from _sheet_rows(resource, path, ws.title, rows, drift)
    finally:
        wb.close()


def read_xls(path: Path, resource: Resource, *, sheet: str | None = None,
             drift: Drift | None = None) -> Iterator[tuple[list[Any], str, dict[str, Any]]]:
    """Stream the data rows of one legacy XLS (BIFF) sheet through xlrd; merged cells carry
    the top-left value, date cells become datetimes (rendered like XLSX dates)."""
    try:
        import xlrd
    except ImportError as exc:  # pragma: no cover - xlrd is a dependency
        raise ExtractError("reading legacy .xls files needs xlrd", hint="pip install xlrd") from exc

    drift = drift or Drift(policy=policy_of(resource))
    try:
        book = xlrd.open_workbook(str(path), formatting_info=True, on_demand=True)
    except (xlrd.XLRDError, OSError, AssertionError, IndexError, ValueError) as exc:
        raise ExtractError(f"file {path.name} is not a readable XLS workbook ({type(exc).__name__})",
                           unit=resource.unit, resource=resource.code) from exc
    try:
        if sheet:
            if sheet not in book.sheet_names():
                raise ExtractError(f"file {path.name} has no sheet {sheet!r} (sheets: {book.sheet_names()})",
                                   unit=resource.unit, resource=resource.code,
                                   hint="Fix location.sheet in the catalog or ask the unit")
            ws = book.sheet_by_name(sheet)
        else:
            ws = book.sheet_by_index(0)
        fill = _MergedFill([(r1 + 1, r2, c1, c2 - 1) for r1, r2, c1, c2 in ws.merged_cells])

        def value(cell) -> Any:
            if cell.ctype == xlrd.XL_CELL_DATE:
                try:
                    return xlrd.xldate_as_datetime(cell.value, book.datemode)
                except (ValueError, OverflowError):
                    return cell.value
            if cell.ctype == xlrd.XL_CELL_BOOLEAN:
                return bool(cell.value)
            if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                return None
            return cell.value

        rows = ((r + 1, fill.apply(r + 1, [value(c) for c in ws.row(r)])) for r in range(ws.nrows))
        yield from _sheet_rows(resource, path, ws.name, rows, drift)
    finally:
        book.release_resources()


def _read_file(path: Path, resource: Resource, drift: Drift) -> Iterator[tuple[list[Any], str, dict[str, Any]]]:
    loc = resource.location
    suffix = path.suffix.lower()
    log.info("resource %s: reading file %s (%d bytes)", resource.code, path.name, path.stat().st_size)
    if suffix in XLSX_SUFFIXES:
        return read_xlsx(path, resource, sheet=loc.sheet, drift=drift)
    if suffix in XLS_SUFFIXES:
        return read_xls(path, resource, sheet=loc.sheet, drift=drift)
    if suffix in CSV_SUFFIXES:
        return read_csv(path, resource, encoding=loc.encoding, drift=drift)
    raise ExtractError(f"file {path.name}: unsupported file type {suffix or '(none)'}",
                       unit=resource.unit, resource=resource.code, hint="Deliver CSV, XLSX or XLS")


def drop_folder(conn: ConnInfo) -> Path:
    """The drop folder of an ``fs`` connection (``extra['path']``)."""
    path = (conn.extra or {}).get("path")
    if not path:
        raise ExtractError("file connection needs extra.path = the drop folder")
    return Path(path)


def archive_folder(conn: ConnInfo) -> Path:
    """Where ingested and rejected files go: ``extra['archive_path']``, else ``<drop>/_archive``."""
    path = (conn.extra or {}).get("archive_path")
    return Path(path) if path else drop_folder(conn) / ARCHIVE_DIR


def matching_files(folder: Path, pattern: str, *, exclude: Path | None = None) -> list[Path]:
    """Files in ``folder`` matching the glob ``pattern``, in sorted name order (never files
    under ``exclude``, the archive)."""
    def excluded(p: Path) -> bool:
        return exclude is not None and (p == exclude or exclude in p.parents)
    return sorted((p for p in folder.glob(pattern)
                   if p.is_file() and not p.name.startswith(".") and not excluded(p)),
                  key=lambda p: p.relative_to(folder).as_posix())


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists() and target != path:
        target.unlink()
    shutil.move(str(path), str(target))
    return target


def reject_file(path: Path, archive: Path, interval: Interval, reason: str) -> Path:
    """Move a file to ``<archive>/rejected/<interval>/`` with ``<name>.reason.txt`` beside it."""
    target = _move(path, archive / "rejected" / interval.key)
    (target.parent / f"{target.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target


def extract_files(resource: Resource, conn: ConnInfo, interval: Interval, out_dir: Path, *,
                  since: str | None, chunk_rows: int, state=None) -> ExtractResult:
    """Stage every file of ``resource`` in the drop folder under ``out_dir``.

    No matching file is an :class:`ExtractError` (the delivery is missing); an empty or
    header-only file stages nothing from it. For a watermark resource only rows inside the
    interval's watermark window are staged, as for SQL sources.

    With ``state`` (:class:`~extractors.state.ExtractState`): files already ingested by
    another interval are not read again (duplicates move to the rejected archive; when no
    new file is left the result is ``skipped``); a file that cannot be read is moved to the
    rejected archive with its reason and the run fails (nothing staged: the other files
    stay for the rerun); after staging, the ingested files move to the processed archive.
    """
    started = time.monotonic()
    folder = drop_folder(conn)
    if not folder.is_dir():
        raise ExtractError(f"drop folder {folder} does not exist", unit=resource.unit, resource=resource.code)
    pattern = resource.location.file or ""
    archive = archive_folder(conn)
    paths = matching_files(folder, pattern, exclude=archive)
    fingerprints: dict[Path, str] = {}
    duplicates: list[dict[str, Any]] = []
    if state is not None:
        from extractors.state import file_fingerprint

        own = archive / "processed" / interval.key
        rerun = matching_files(own, pattern) if own.is_dir() else []
        rerun_fp = {file_fingerprint(p): p for p in rerun}
        fresh = []
        for p in paths:
            fp = file_fingerprint(p)
            seen = state.file_seen(resource.code, fp)
            reason = None
            if fp in rerun_fp:
                if rerun_fp[fp].name == p.name:  # delivered again for the same interval: replaces its copy
                    rerun.remove(rerun_fp.pop(fp))
                else:
                    reason = (f"duplicate: the same content ({fp[:12]}) was ingested as {rerun_fp[fp].name} "
                              f"by this interval")
            elif seen and seen["status"] == "processed" and seen["interval_key"] != interval.key:
                reason = (f"duplicate: the same content ({fp[:12]}) was ingested as {seen['file_name']} "
                          f"by interval {seen['interval_key']}")
            if reason:
                target = reject_file(p, archive, interval, reason)
                log.warning("resource %s: file %s not ingested again: %s", resource.code, p.name, reason)
                duplicates.append({"file": p.name, "fingerprint": fp, "status": "duplicate", "reason": reason,
                                   "archived_to": str(target)})
                continue
            fingerprints[p] = fp
            fresh.append(p)
        # A new file named like one this interval already ingested is a corrected re-delivery:
        # it replaces the archived copy (which would otherwise be read as well).
        fresh_names = {p.name for p in fresh}
        rerun = [p for p in rerun if p.name not in fresh_names]
        for fp, p in rerun_fp.items():
            fingerprints[p] = fp
        paths = sorted(fresh + rerun, key=lambda p: p.name)
        last = state.last_processed(resource.code) if not paths else None
        if not paths and (duplicates or last):
            res = ExtractResult(resource=resource.code, rows=0, files=[], bytes=0,
                                duration_s=round(time.monotonic() - started, 3), engine="files",
                                source_files=duplicates, rows_read=0)
            res.skipped = ("no new file: every matching file was ingested by an earlier interval"
                           + (f" (latest: {last['file_name']}, interval {last['interval_key']})" if last else ""))
            return res
    if not paths:
        raise ExtractError(f"no file matching {pattern!r} in the drop folder", unit=resource.unit,
                           resource=resource.code, hint="The unit has not delivered this resource yet")
    tz = source_timezone(conn)
    window = WatermarkWindow.for_resource(resource, interval, since, tz)
    wm_index = [f.name for f in resource.fields].index(window.field) if window else None
    drift = Drift(policy=policy_of(resource))
    rejects = Rejects(out_dir) if drift.policy == "discard_row" else None
    watch = RetypeWatch(resource, out_dir)
    evolve = drift.policy == "evolve"
    skipped = 0
    per_file: dict[Path, int] = {}
    current: Path | None = None
    try:
        with StagingWriter(out_dir, resource, chunk_rows=chunk_rows, tz=tz, started=started,
                           midnight_as_date=True, watch=watch) as writer:
            for current in paths:
                per_file[current] = 0
                for values, source, extras in _read_file(current, resource, drift):
                    if evolve and len(drift.new) != len(writer.extra_columns):
                        # a file whose header brings a new column: staged as _new_<name> from now on
                        writer.add_extra_columns([new_column_name(n) for n in drift.new])
                    if window is not None:
                        if not window.admits(values[wm_index]):
                            skipped += 1
                            continue
                        window.observe(values[wm_index])
                    if extras:
                        if rejects is not None:
                            drift.discarded_rows += 1
                            rejects.add(source, "value in new column(s) " + ", ".join(extras),
                                        {**{f.name: to_text(v) for f, v in zip(resource.fields, values, strict=True)},
                                         **{new_column_name(k): to_text(v) for k, v in extras.items()}})
                            continue
                        if drift.policy == "discard_value":
                            drift.discarded_values += len(extras)
                    if evolve and drift.new:
                        values = values + [extras.get(n) for n in drift.new]
                    writer.append(values, source)
                    per_file[current] += 1
                if evolve and len(drift.new) != len(writer.extra_columns):  # header-only file
                    writer.add_extra_columns([new_column_name(n) for n in drift.new])
            current = None
        try:
            staged = settle_retyped(resource, drift, watch, writer, rejects, f"files {pattern}",
                                    on_discard=lambda source: _count_off(per_file, source))
        except SchemaDriftError as exc:  # freeze: the file holding the first offending row is rejected
            current = next((p for p in paths if exc.offender and exc.offender.startswith(f"{p.name}:")), None)
            raise
    except ExtractError as exc:
        if rejects is not None:
            rejects.abort()
        if state is not None and current is not None:
            _reject_bad(state, resource, interval, archive, current, fingerprints.get(current), exc)
        raise
    log_drift(resource, drift, f"files {pattern}")
    res = writer.result() if window is None else writer.result(watermark_before=since, watermark_after=window.after)
    if skipped:
        log.info("resource %s: %d row(s) outside the watermark window skipped", resource.code, skipped)
    res.rows, res.bytes = staged, writer.bytes
    res.engine = "files"
    res.drift = drift.to_dict()
    res.rows_read = res.rows + drift.discarded_rows
    res.rejects_file = rejects.close() if rejects else None
    files_info = list(duplicates)
    for p in paths:
        info = {"file": p.name, "fingerprint": fingerprints.get(p), "rows": per_file.get(p, 0), "status": "processed"}
        if state is not None:
            target = p if p.parent == archive / "processed" / interval.key else _move(p, archive / "processed" / interval.key)
            info["archived_to"] = str(target)
            state.record_file(resource.code, fingerprints[p], file_name=p.name, size_bytes=target.stat().st_size,
                              interval_key=interval.key, status="processed", archived_to=str(target),
                              rows_staged=per_file.get(p, 0))
        files_info.append(info)
    res.source_files = files_info
    return res


def _count_off(per_file: dict[Path, int], source: str) -> None:
    # A row set aside after staging no longer counts as staged from its file.
    for p in per_file:
        if source.startswith(f"{p.name}:"):
            per_file[p] -= 1
            return


def _reject_bad(state, resource: Resource, interval: Interval, archive: Path, path: Path, fp: str | None,
                exc: Exception) -> None:
    """A file that cannot be read: to the rejected archive with the reason, recorded."""
    from extractors.state import file_fingerprint

    fp = fp or file_fingerprint(path)
    reason = str(exc)
    size = path.stat().st_size
    target = reject_file(path, archive, interval, reason)
    state.record_file(resource.code, fp, file_name=path.name, size_bytes=size, interval_key=interval.key,
                      status="rejected", reason=reason, archived_to=str(target))
    log.error("resource %s: file %s rejected and moved to %s: %s", resource.code, path.name, target, reason)
