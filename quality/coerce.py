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
    s = raw.str.strip()
    return s.mask(s == "")


def _coerce_temporal(s: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    import pandas as pd

    fmt = "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M:%S"
    typed = pd.to_datetime(s, format=fmt, errors="coerce").astype("datetime64[us]")
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

    text = s
    commas = s.str.contains(",", regex=False).fillna(False).astype(bool)
    if commas.any():
        ok = s[commas].str.fullmatch(_THOUSANDS.pattern[1:-1]).fillna(False).astype(bool)
        text = s.copy()
        text[ok[ok].index] = s[ok[ok].index].str.replace(",", "", regex=False)
    num = pd.to_numeric(text, errors="coerce").astype("float64")
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

    cols: dict[str, pd.Series] = {}
    failures: dict[str, pd.Series] = {}
    for f in resource.fields:
        typed, failed = coerce_series(field_text(raw, f), f.type)
        cols[f.name] = typed
        failures[f.name] = failed.astype(bool)
    for extra in ("_row", "_source"):
        if extra in raw.columns:
            cols[extra] = raw[extra]
    return pd.DataFrame(cols, index=raw.index), failures
