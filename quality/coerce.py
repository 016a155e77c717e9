"""Type coercion of staged text into the catalog's field types.

Staged Parquet holds every field as text (see ``extractors/base.py``). Validation first
coerces each field to its declared type; a non-null value that does not coerce is a
``type:<field>`` failure and nothing else is checked on it.

Accepted shapes:

- date: ``2018-05-16``, ``2018/5/16``, ``2018.5.16``, ``20180516``, ``2018年5月16日``, and
  any datetime shape below (the time is dropped). Impossible dates (``2019-02-30``) fail.
- datetime: the date shapes (midnight) plus a time ``HH:MM[:SS[.ffffff]]`` after a space
  or ``T`` (``2018-05-16 08:30:00``, ``2018-05-16T08:30:00``, ``2018/5/16 8:30``), an
  optional ``Z`` / ``±HH:MM`` offset (converted to China Standard Time, UTC+8, and dropped),
  and ``20180516083000``.
- integer: optional sign, digits, optional ``.0…`` (``12.0`` is 12); ``1,234`` with
  thousands separators. -> pandas ``Int64``.
- decimal: any number pandas parses, thousands separators allowed. -> ``float64``.
- boolean: true/false, t/f, yes/no, y/n, 1/0, 是/否 (case-insensitive). -> pandas ``boolean``
  (nullable; plain ``bool`` cannot hold a null).
- string: unchanged.

Dates come out as ``datetime64[us]`` (pandas 3's unit; covers years 1-9999, so an early
typo such as ``1066-01-01`` is a ``date_range`` failure, not a type failure).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from datarail.errors import DatarailError

if TYPE_CHECKING:
    import pandas as pd

    from catalog.models import Field, Resource

_DATE_PART = (
    r"(?P<y>\d{4})(?P<sep>[-/.])(?P<mo>\d{1,2})(?P=sep)(?P<d>\d{1,2})",  # 2018-05-16, 2018/5/16, 2018.5.16
    r"(?P<y>\d{4})年(?P<mo>\d{1,2})月(?P<d>\d{1,2})日",  # 2018年5月16日
)
_TIME_PART = (r"(?:[ T](?P<hh>\d{1,2}):(?P<mi>\d{2})(?::(?P<ss>\d{2})(?:\.(?P<frac>\d{1,6}))?)?)?"
              r"(?P<tz>Z|[+-]\d{2}:?\d{2})?")
_SHAPES = tuple(re.compile(f"^{d}{_TIME_PART}$", re.ASCII) for d in _DATE_PART) + (
    # 20180516 and 20180516083000
    re.compile(r"^(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})(?:(?P<hh>\d{2})(?P<mi>\d{2})(?P<ss>\d{2}))?$",
               re.ASCII),
)
_CST = timezone(timedelta(hours=8))
_TRUE = frozenset({"true", "t", "yes", "y", "1", "是"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "否"})
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$", re.ASCII)


class CoercionError(DatarailError, ValueError):
    """A value does not coerce to its field's type. Carries no value text: the value may be
    personal data."""


def parse_datetime(text: str | None) -> datetime | None:
    """Parse one date or datetime text in any accepted shape; ``None``/blank -> ``None``.

    Raises :class:`CoercionError` (a ``ValueError``) for an unknown shape or an impossible
    date or time. An offset (``Z``, ``+08:00``) is converted to UTC+8 and dropped.
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    for shape in _SHAPES:
        m = shape.match(text)
        if m:
            break
    else:
        raise CoercionError("not a recognised date/time shape")
    g = m.groupdict()
    tz = g.get("tz")
    try:
        value = datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g.get("hh") or 0), int(g.get("mi") or 0),
                         int(g.get("ss") or 0), int((g.get("frac") or "0").ljust(6, "0")))
    except ValueError as exc:
        raise CoercionError("impossible date or time") from exc
    if tz:
        if tz == "Z":
            offset = timedelta(0)
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        value = value.replace(tzinfo=timezone(offset)).astimezone(_CST).replace(tzinfo=None)
    return value


def parse_date(text: str | None) -> date | None:
    """Parse one date text (``2018-05-16``, ``2018/5/16``, ``2018.5.16``, ``20180516``,
    ``2018年5月16日``, or a datetime shape whose time is dropped); ``None``/blank -> ``None``.

    Raises :class:`CoercionError` (a ``ValueError``) when the text is not a real date.
    """
    value = parse_datetime(text)
    return value.date() if value is not None else None


def _strings(raw: pd.Series) -> pd.Series:
    """The column as trimmed text with '' -> null (the staging contract, enforced again
    because a test or a hand-made frame may not follow it)."""
    import pandas as pd

    if raw.dtype == object or not pd.api.types.is_string_dtype(raw.dtype):
        raw = raw.astype("str")
    # Staged text is already trimmed with '' as null (the contract): look before copying, so
    # a million-row column is not duplicated for nothing.
    import pyarrow as pa
    import pyarrow.compute as pc

    # (Arrow's regex kernel: pandas' str.contains runs this pattern one Python call per value.)
    arr = pa.array(raw, from_pandas=True)
    # Trimming and comparing byte lengths is 5x faster than a regex over the values.
    lengths = pc.binary_length(arr)
    edged = pc.any(pc.not_equal(pc.binary_length(pc.utf8_trim_whitespace(arr)), lengths)).as_py()
    if not edged and not (pc.min(lengths).as_py() == 0):
        return raw
    s = raw.str.strip()
    return s.mask((s == "").fillna(False).astype(bool))


_ISO_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"


def _iso_fast_path(s: pd.Series, kind: str) -> pd.Series:
    """ISO text (``2018-05-16``, ``2018-05-16 08:30:00``) parsed by Arrow's vectorised
    ``strptime`` (3x faster than ``pd.to_datetime``); everything else stays NaT for the slow
    path. Only zero-padded shapes are taken here, so a value the fast path accepts is
    exactly what :func:`parse_datetime` would return (its components are read back);
    impossible dates fall through to the slow path, which rejects them."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    # Month, hour, minute and second in range by shape, so only the day of month can roll over.
    pattern = _ISO_DATE if kind == "date" else _ISO_DATE + " (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    fmt = "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M:%S"
    arr = pa.array(s.astype("str"), type=pa.large_string(), from_pandas=True)
    shaped = pc.match_substring_regex(arr, f"^{pattern}$")
    candidate = pc.if_else(shaped, arr, pa.scalar(None, pa.large_string()))
    parsed = pc.strptime(candidate, format=fmt, unit="us", error_is_null=True)
    # Arrow's strptime rolls an impossible day over (2019-02-30 -> 2019-03-02) and takes
    # year 0: keep a value only if its day and year read back as written.
    day = pc.cast(pc.utf8_slice_codeunits(candidate, 8, 10), pa.int64())
    same = pc.and_(pc.greater_equal(pc.year(parsed), 1), pc.equal(pc.day(parsed), day))
    parsed = pc.if_else(pc.fill_null(same, False), parsed, pa.scalar(None, pa.timestamp("us")))
    return pd.Series(parsed.to_numpy(zero_copy_only=False), index=s.index).astype("datetime64[us]")


def _coerce_temporal(s: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    import pandas as pd

    typed = _iso_fast_path(s, kind)
    rest = s.notna() & typed.isna()
    if rest.any():
        # Slow shapes: parse each distinct text once (dirty columns repeat their values).
        parsed: dict[str, datetime | None] = {}
        for text in s[rest].unique():
            try:
                parsed[text] = parse_datetime(text)
            except CoercionError:
                parsed[text] = None
        filled = pd.to_datetime(s[rest].map(parsed), errors="coerce").astype("datetime64[us]")
        typed = typed.where(~rest, filled)
    if kind == "date":
        typed = typed.dt.floor("D")
    failed = s.notna() & typed.isna()
    return typed, failed


def _coerce_number(s: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    import numpy as np
    import pandas as pd

    # Plain decimal text (the usual case) converts in one vectorised cast; only the rest
    # (thousands separators, exponents, junk) goes through pd.to_numeric.
    plain = s.str.fullmatch(r"[+-]?[0-9]{1,15}(?:\.[0-9]{1,15})?").fillna(False).astype(bool)
    num = pd.Series(np.nan, index=s.index, dtype="float64")
    if plain.any():
        num[plain] = s[plain].astype("float64")
    rest = s.notna() & ~plain
    if rest.any():
        text = s[rest]
        commas = text.str.contains(",", regex=False).fillna(False).astype(bool)
        if commas.any():
            ok = text[commas].str.fullmatch(_THOUSANDS.pattern[1:-1]).fillna(False).astype(bool)
            text = text.copy()
            text[ok[ok].index] = text[ok[ok].index].str.replace(",", "", regex=False)
        num[rest] = pd.to_numeric(text, errors="coerce").astype("float64")
    # to_numeric accepts 'inf' and 'nan'; neither is a number a source should deliver.
    num = num.where(np.isfinite(num))
    if kind == "integer":
        integral = num.notna() & (num == np.floor(num)) & (num.abs() < 2**53)
        typed = num.where(integral).astype("Int64")
    else:
        typed = num
    failed = s.notna() & typed.isna()
    return typed, failed


def _coerce_boolean(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    import pandas as pd

    low = s.str.lower()
    typed = pd.Series(pd.NA, index=s.index, dtype="boolean")
    typed[low.isin(_TRUE)] = True
    typed[low.isin(_FALSE)] = False
    failed = s.notna() & typed.isna()
    return typed, failed


def coerce_series(s: pd.Series, type_: str) -> tuple[pd.Series, pd.Series]:
    """Coerce one text column (already trimmed, nulls as nulls) to ``type_``; returns the
    typed Series and a boolean mask of non-null values that failed."""
    import pandas as pd

    if type_ in ("date", "datetime"):
        return _coerce_temporal(s, type_)
    if type_ in ("integer", "decimal"):
        return _coerce_number(s, type_)
    if type_ == "boolean":
        return _coerce_boolean(s)
    return s, pd.Series(False, index=s.index)


def field_text(raw: pd.DataFrame, field: Field) -> pd.Series:
    """The field's staged column as trimmed text ('' -> null); all-null if the column is
    missing (validation then reports ``not_null`` for a required field)."""
    import pandas as pd

    if field.name not in raw.columns:
        return pd.Series(None, index=raw.index, dtype="str")
    return _strings(raw[field.name])


def coerce_frame(resource: Resource, raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Coerce a staged frame to the catalog's types.

    Returns ``(typed, failures)``: ``typed`` has one column per catalog field (in catalog
    order) plus ``_row`` (and ``_source`` if present), values that failed set to null;
    ``failures[field]`` is a boolean Series marking rows whose non-null value failed
    (all False for string fields).
    """
    import pandas as pd

    text = {f.name: field_text(raw, f) for f in resource.fields}
    typed, failures = coerce_text(resource, text)
    cols = {f.name: typed[f.name] for f in resource.fields}
    for extra in ("_row", "_source"):
        if extra in raw.columns:
            cols[extra] = raw[extra]
    return pd.DataFrame(cols, index=raw.index), failures


def coerce_text(resource: Resource, text: dict[str, pd.Series]) -> tuple[dict[str, pd.Series],
                                                                          dict[str, pd.Series]]:
    """Coerce already-trimmed text columns (``field_text``) to the catalog's types: (typed
    column per field, failure mask per field). String fields pass through uncopied."""
    typed: dict[str, pd.Series] = {}
    failures: dict[str, pd.Series] = {}
    for f in resource.fields:
        value, failed = coerce_series(text[f.name], f.type)
        typed[f.name] = value
        failures[f.name] = failed.astype(bool)
    return typed, failures
