"""Extract a catalog resource from files a unit drops in a folder (CSV and XLSX).

The connection (``conn_type`` ``fs``) gives the drop folder in ``extra['path']``; the
resource's ``location.file`` is a glob inside it. Matching files are read in sorted name
order and staged as one delivery (``_row`` runs on across files).

CSV: the declared ``location.encoding``, else detected (UTF-8 with or without BOM, else
GB18030, the superset of GBK); decoding is strict, so a file that does not decode cleanly
raises :class:`DecodeError` with the byte offset and line instead of staging mojibake.
The file is read in blocks cut at line ends, never whole.

XLSX: openpyxl in read-only mode; the sheet is ``location.sheet`` or the first.

Both: the header row is the first non-blank row (of the first few) whose cells best match
the catalog's source column names, so title rows above it are skipped; blank rows are
skipped; a CSV row with more or fewer cells than the header raises :class:`ExtractError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from catalog.models import Resource
from datarail.errors import DecodeError, ExtractError, SchemaDriftError
from datarail.interval import Interval
from extractors.base import ConnInfo, ExtractResult
from extractors.staging import StagingWriter, WatermarkWindow, resolve_columns, source_timezone

log = logging.getLogger(__name__)

BLOCK_BYTES = 1 << 20  # decode unit; each block is extended to the next line end
HEADER_SCAN_ROWS = 20  # non-blank rows searched for the header (title blocks are short)
SNIFF_CHARS = 64 * 1024
CANDIDATE_DELIMITERS = ",\t;|"
_BOM = codecs.BOM_UTF8
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
CSV_SUFFIXES = {".csv", ".txt", ".tsv"}


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


def read_csv(path: Path, resource: Resource, *,
             encoding: str | None = None) -> Iterator[tuple[list[Any], str]]:
    """Stream the data rows of one CSV file as (values in field order, ``_source``)."""
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
    early: list[tuple[int, list[str]]] = []
    nonblank = 0
    for line, record in stream:
        early.append((line, record))
        nonblank += not _blank(record)
        if nonblank >= HEADER_SCAN_ROWS:
            break
    h, score = pick_header([r for _, r in early], expected)
    if h is None:
        log.warning("resource %s: file %s is empty, nothing staged from it", resource.code, path.name)
        return
    if score == 0:
        raise _no_header(resource, f"file {path.name}")
    header_line, header = early[h]
    if h:
        log.info("resource %s: file %s: header on line %d, %d row(s) above it skipped",
                 resource.code, path.name, header_line, h)
    mapping = resolve_columns(resource, [c.replace("\ufeff", "").strip() for c in header],
                              where=f"file {path.name} (encoding {enc}, delimiter {delimiter!r})")
    width = len(header)
    for line, record in chain(early[h + 1:], stream):
        if _blank(record):
            continue
        if len(record) != width:
            raise ExtractError(
                f"file {path.name} line {line}: {len(record)} cells, the header (line {header_line}) "
                f"has {width}", unit=resource.unit, resource=resource.code,
                hint="A value probably contains an unquoted delimiter or line break: ask the unit "
                     "to re-export the file with quoting")
        yield _map_row(record, mapping), f"{path.name}:line {line}"


def read_xlsx(path: Path, resource: Resource, *, sheet: str | None = None) -> Iterator[tuple[list[Any], str]]:
    """Stream the data rows of one XLSX sheet as (values in field order, ``_source``)."""
    # Imported here so SQL and HTTP runs do not pay for it.
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

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
        rows = enumerate(ws.iter_rows(values_only=True), start=1)
        expected = _expected(resource)
        early: list[tuple[int, tuple]] = []
        nonblank = 0
        for number, cells in rows:
            early.append((number, cells))
            nonblank += not _blank(cells)
            if nonblank >= HEADER_SCAN_ROWS:
                break
        h, score = pick_header([c for _, c in early], expected)
        if h is None:
            log.warning("resource %s: file %s sheet %s is empty", resource.code, path.name, ws.title)
            return
        if score == 0:
            raise _no_header(resource, f"file {path.name} sheet {ws.title}")
        header_row, header = early[h]
        if h:
            log.info("resource %s: file %s!%s: header on row %d, rows above it skipped",
                     resource.code, path.name, ws.title, header_row)
        names = [None if _norm(c) == "" else str(c).strip() for c in header]
        while names and names[-1] is None:
            names.pop()
        mapping = resolve_columns(resource, names, where=f"file {path.name} sheet {ws.title}")
        width = len(names)
        for number, cells in chain(early[h + 1:], rows):
            if _blank(cells):
                continue
            if any(_norm(c) != "" for c in cells[width:]):
                raise ExtractError(
                    f"file {path.name} sheet {ws.title} row {number}: a value right of the last header "
                    f"column (row {header_row} has {width} columns)", unit=resource.unit,
                    resource=resource.code, hint="Ask the unit to keep every value under a header")
            yield _map_row(cells, mapping), f"{path.name}:{ws.title}!row {number}"
    finally:
        wb.close()


def _readers(paths: Iterable[Path], resource: Resource) -> Iterator[tuple[list[Any], str]]:
    loc = resource.location
    for path in paths:
        suffix = path.suffix.lower()
        log.info("resource %s: reading file %s (%d bytes)", resource.code, path.name, path.stat().st_size)
        if suffix in XLSX_SUFFIXES:
            yield from read_xlsx(path, resource, sheet=loc.sheet)
        elif suffix in CSV_SUFFIXES:
            yield from read_csv(path, resource, encoding=loc.encoding)
        else:
            raise ExtractError(f"file {path.name}: unsupported file type {suffix or '(none)'}",
                               unit=resource.unit, resource=resource.code,
                               hint="Deliver CSV or XLSX (legacy .xls: save as .xlsx)")


def drop_folder(conn: ConnInfo) -> Path:
    """The drop folder of an ``fs`` connection (``extra['path']``)."""
    path = (conn.extra or {}).get("path")
    if not path:
        raise ExtractError("file connection needs extra.path = the drop folder")
    return Path(path)


def matching_files(folder: Path, pattern: str) -> list[Path]:
    """Files in ``folder`` matching the glob ``pattern``, in sorted name order."""
    return sorted((p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(folder).as_posix())


def extract_files(resource: Resource, conn: ConnInfo, interval: Interval, out_dir: Path, *,
                  since: str | None, chunk_rows: int) -> ExtractResult:
    """Stage every file of ``resource`` in the drop folder under ``out_dir``.

    No matching file is an :class:`ExtractError` (the delivery is missing); an empty or
    header-only file stages nothing from it. For a watermark resource only rows inside the
    interval's watermark window are staged, as for SQL sources.
    """
    started = time.monotonic()
    folder = drop_folder(conn)
    if not folder.is_dir():
        raise ExtractError(f"drop folder {folder} does not exist", unit=resource.unit, resource=resource.code)
    pattern = resource.location.file or ""
    paths = matching_files(folder, pattern)
    if not paths:
        raise ExtractError(f"no file matching {pattern!r} in the drop folder", unit=resource.unit,
                           resource=resource.code, hint="The unit has not delivered this resource yet")
    tz = source_timezone(conn)
    window = WatermarkWindow.for_resource(resource, interval, since, tz)
    wm_index = [f.name for f in resource.fields].index(window.field) if window else None
    skipped = 0
    with StagingWriter(out_dir, resource, chunk_rows=chunk_rows, tz=tz, started=started,
                       midnight_as_date=True) as writer:
        for values, source in _readers(paths, resource):
            if window is not None:
                if not window.admits(values[wm_index]):
                    skipped += 1
                    continue
                window.observe(values[wm_index])
            writer.append(values, source)
    if window is None:
        return writer.result()
    if skipped:
        log.info("resource %s: %d row(s) outside the watermark window skipped", resource.code, skipped)
    return writer.result(watermark_before=since, watermark_after=window.after)
