"""Identifier rules: resident identity numbers (GB 11643), unified social credit codes
(GB 32100 with the embedded GB 11714 organisation code) and phone numbers.

Each rule exists twice: a scalar ``*_problem(value)`` that returns ``None`` for a valid
value or a short reason, and a vectorised ``*_problems(series)`` that returns the same
reasons for a whole pandas Series (``None`` where valid or null). Validation runs on up to
a million rows, so the vectorised forms do the arithmetic in numpy and fall back to
Python only for the few rows that need a reason. Tests assert that both agree.

Reasons are short fixed English phrases (never the value itself), so they are safe to put
in tickets and logs.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
from stdnum.cn import ric as _ric
from stdnum.cn import uscc as _uscc

if TYPE_CHECKING:
    import pandas as pd

    from quality.divisions import DivisionReference

def isin_large(series: pd.Series, values) -> pd.Series:
    """``series.isin(values)`` for a large reference set (the ~6,900 division codes): pandas'
    Arrow-backed ``isin`` converts every reference value to a scalar on each call; a column
    holds few distinct codes, so decide those and look only them up."""
    present = series.dropna().unique()
    return series.isin([v for v in present if v in values])


# --- resident identity number (GB 11643) -------------------------------------------------

RID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
RID_CHECK = "10X98765432"  # indexed by (weighted sum mod 11)
RID_SHAPE = re.compile(r"^\d{17}[\dX]$", re.ASCII)
# Earliest plausible birth year: the number was introduced in 1984/1999, so holders were
# born after the 1880s; anything earlier is a typo, not a very old resident.
RID_MIN_BIRTH_YEAR = 1880

RID_REASONS = ("length", "characters", "check character", "birth date", "birth date in the future",
               "birthplace code unknown")


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for 17 digits (python-stdnum's implementation)."""
    # stdnum's calc_check_digit expects the whole number and ignores its last character.
    return _ric.calc_check_digit(first17 + "0")


def make_resident_id(birthplace: str, birth: date, sequence: int) -> str:
    """Build a valid resident ID (for test data and the sandbox generator).

    ``sequence`` is the 3-digit order code; odd means male.
    """
    body = f"{birthplace}{birth:%Y%m%d}{sequence:03d}"
    if len(body) != 17 or not body.isdigit():
        raise ValueError("birthplace must be 6 digits and sequence 0-999")
    return body + resident_id_check_char(body)


def _birthplace_known(code: str, year: int, divisions: DivisionReference, policy: str) -> bool:
    if policy == "at_year":
        return divisions.is_known(code, policy="at_year", year=year)
    return divisions.is_known(code, policy=policy)


def resident_id_problem(value: str | None, *, run_date: date, divisions: DivisionReference | None = None,
                        policy: str = "historic") -> str | None:
    """Why ``value`` is not a valid GB 11643 resident ID, or ``None`` if it is.

    Checks, in order: 18 characters; 17 ASCII digits then a digit or upper-case ``X``; the
    check character (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2, sum mod 11 indexes
    ``10X98765432``); the embedded birth date is a real date (year >= 1880); it is not after
    ``run_date``; the 6-digit birthplace code is in the division reference under ``policy``
    (``historic`` / ``current`` / ``at_year`` = valid in the birth year). ``divisions=None``
    loads python-stdnum's list. A null value has no problem (``not_null`` covers it).
    """
    if value is None:
        return None
    if len(value) != 18:
        return "length"
    if not RID_SHAPE.match(value):
        return "characters"
    try:
        expected = resident_id_check_char(value[:17])
    except Exception:  # stdnum may raise on input it does not expect; the shape check makes this rare
        return "characters"
    if value[17] != expected:
        return "check character"
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "birth date"
    if born.year < RID_MIN_BIRTH_YEAR:
        return "birth date"
    if born > run_date:
        return "birth date in the future"
    if divisions is None:
        from quality.divisions import load_divisions
        divisions = load_divisions()
    if not _birthplace_known(value[:6], born.year, divisions, policy):
        return "birthplace code unknown"
    return None


def _digits_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII strings of exactly ``width`` chars -> (n, width) uint8 matrix of their bytes."""
    raw = np.array(values, dtype=f"S{width}")
    return raw.view(np.uint8).reshape(len(values), width)


def resident_id_problems(series: pd.Series, *, run_date: date, divisions: DivisionReference | None = None,
                         policy: str = "historic") -> pd.Series:
    """Vectorised :func:`resident_id_problem`: a Series (same index) of reasons, ``None`` where
    the value is valid or null. About 0.1 s per 100k rows."""
    import pandas as pd

    out = pd.Series([None] * len(series), dtype=object)
    # Work on positions: label assignment below must not depend on a unique caller index.
    s = series.reset_index(drop=True)
    s = s[s.notna()].astype(str)
    if s.empty:
        return out.set_axis(series.index)
    lengths = s.str.len()
    out[lengths[lengths != 18].index] = "length"
    s = s[lengths == 18]
    shaped = s.str.fullmatch(r"\d{17}[\dX]").fillna(False).astype(bool)
    # str.fullmatch's \d matches any Unicode digit; the byte matrix below needs ASCII.
    ascii_ok = s.str.isascii().fillna(False).astype(bool)
    bad_chars = ~(shaped & ascii_ok)
    out[s[bad_chars].index] = "characters"
    s = s[~bad_chars]
    if s.empty:
        return out.set_axis(series.index)
    m = _digits_matrix(s.to_numpy(dtype=object), 18)
    digits = m[:, :17].astype(np.int64) - 48
    expected = np.frombuffer(RID_CHECK.encode(), dtype=np.uint8)[(digits @ RID_WEIGHTS) % 11]
    bad_check = m[:, 17] != expected
    out[s.index[bad_check]] = "check character"
    s = s[~bad_check]
    if s.empty:
        return out.set_axis(series.index)
    born = pd.to_datetime(s.str.slice(6, 14), format="%Y%m%d", errors="coerce")
    bad_birth = born.isna() | (born.dt.year < RID_MIN_BIRTH_YEAR)
    out[s.index[bad_birth.to_numpy()]] = "birth date"
    future = (~bad_birth) & (born > pd.Timestamp(run_date))
    out[s.index[future.to_numpy()]] = "birth date in the future"
    keep = ~(bad_birth | future).to_numpy()
    s = s[keep]
    born = born[keep]
    if s.empty:
        return out.set_axis(series.index)
    if divisions is None:
        from quality.divisions import load_divisions
        divisions = load_divisions()
    places = s.str.slice(0, 6)
    if policy == "at_year":
        # Few distinct (code, year) pairs even in a million rows: decide each pair once.
        pairs = pd.DataFrame({"code": places.to_numpy(), "year": born.dt.year.to_numpy()}, index=s.index)
        uniq = pairs.drop_duplicates()
        known = {(c, int(y)) for c, y in zip(uniq["code"], uniq["year"], strict=True)
                 if divisions.is_known(c, policy="at_year", year=int(y))}
        ok = np.fromiter(((c, int(y)) in known for c, y in zip(pairs["code"], pairs["year"], strict=True)),
                         dtype=bool, count=len(pairs))
    else:
        ok = isin_large(places, divisions.codes(policy)).to_numpy()
    out[s.index[~ok]] = "birthplace code unknown"
    return out.set_axis(series.index)


def sex_of_resident_id(value: str | None) -> str | None:
    """'男' or '女' from a resident ID's 17th character (odd = male), ``None`` when the value
    is not 17 ASCII digits + a check character."""
    if value is None or not RID_SHAPE.match(value):
        return None
    return "男" if int(value[16]) % 2 else "女"


def sex_of_resident_ids(series: pd.Series) -> pd.Series:
    """Vectorised :func:`sex_of_resident_id` (object Series of '男' / '女' / ``None``)."""
    import pandas as pd

    s = series.astype("str") if series.dtype == object else series
    shaped = s.str.fullmatch(r"[0-9]{17}[0-9X]").fillna(False).astype(bool).to_numpy()
    digit = pd.to_numeric(s.str.slice(16, 17), errors="coerce").to_numpy()
    out = np.where(digit % 2 == 1, "男", "女").astype(object)
    out[~shaped] = None
    return pd.Series(out, index=series.index, dtype=object)


# --- unified social credit code (GB 32100) and organisation code (GB 11714) -----------------

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I O S V Z
USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
# Positions: 1 registration authority, 2 entity type, 3-8 division code (digits),
# 9-17 organisation code (8 body chars + GB 11714 check), 18 GB 32100 check.
USCC_SHAPE = re.compile(r"^[0-9A-HJ-NP-RTUW-Y]{2}\d{6}[0-9A-HJ-NP-RTUW-Y]{10}$", re.ASCII)

# Byte -> value lookup tables for the vectorised form (255 = not allowed).
_USCC_VALUE = np.full(256, 255, dtype=np.int64)
for _i, _c in enumerate(USCC_ALPHABET):
    _USCC_VALUE[ord(_c)] = _i
# GB 11714 values characters 0-9 as 0-9 and A-Z as 10-35 (its own scale, not the USCC one).
_ORG_VALUE = np.full(256, 255, dtype=np.int64)
for _i, _c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    _ORG_VALUE[ord(_c)] = _i

USCC_REASONS = ("length", "characters", "organisation code check character", "check character",
                "division code unknown")
# Positions 3-8 of codes issued by national authorities (e.g. the State Administration for
# Market Regulation) hold 100000, which is not a GB/T 2260 code.
USCC_NATIONAL_DIVISION = "100000"


def _uscc_division_known(code: str, divisions: DivisionReference, policy: str) -> bool:
    if code == USCC_NATIONAL_DIVISION:
        return True
    # A credit code carries no issue year: at_year reads as "ever valid", like historic.
    return divisions.is_known(code, policy="historic" if policy == "at_year" else policy)


def org_code_check_char(body8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body:
    11 - (sum of values x 3 7 9 10 5 8 4 2 mod 11); 10 -> 'X', 11 -> '0'."""
    total = sum(int(_ORG_VALUE[ord(c)]) * int(w) for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character (mod 31) of the first 17 characters (python-stdnum)."""
    # stdnum zips its 17 weights against the input, so the 17 characters are enough here.
    return _uscc.calc_check_digit(first17)


def make_uscc(prefix: str, division: str, org_body: str) -> str:
    """Build a valid USCC from a 2-char prefix (authority + type, e.g. '91'), a 6-digit
    division code and an 8-char organisation code body (for test data and the sandbox)."""
    org = org_body + org_code_check_char(org_body)
    first17 = f"{prefix}{division}{org}"
    if not USCC_SHAPE.match(first17 + "0"):
        raise ValueError("prefix/division/org_body outside the GB 32100 alphabet or lengths")
    return first17 + uscc_check_char(first17)


def uscc_problem(value: str | None, *, divisions: DivisionReference | None = None,
                 policy: str = "historic") -> str | None:
    """Why ``value`` is not a valid GB 32100 unified social credit code, or ``None``.

    Checks, in order: 18 characters; alphabet 0-9 A-H J-N P Q R T U W X Y (no I O S V Z,
    upper case) with positions 3-8 digits; the embedded organisation code's GB 11714 check
    character (position 17); the mod-31 check character (position 18); the registering
    authority's division code (positions 3-8) in the division reference under ``policy``
    (``100000``, national authorities, always passes; ``divisions=None`` loads
    python-stdnum's list). Null: no problem.
    """
    if value is None:
        return None
    if len(value) != 18:
        return "length"
    if not USCC_SHAPE.match(value):
        return "characters"
    if value[16] != org_code_check_char(value[8:16]):
        return "organisation code check character"
    try:
        expected = uscc_check_char(value[:17])
    except Exception:  # stdnum raises ValueError on characters outside its alphabet
        return "characters"
    if value[17] != expected:
        return "check character"
    if divisions is None:
        from quality.divisions import load_divisions
        divisions = load_divisions()
    if not _uscc_division_known(value[2:8], divisions, policy):
        return "division code unknown"
    return None


def uscc_problems(series: pd.Series, *, divisions: DivisionReference | None = None,
                  policy: str = "historic") -> pd.Series:
    """Vectorised :func:`uscc_problem` over a Series: reasons, ``None`` where valid or null."""
    import pandas as pd

    out = pd.Series([None] * len(series), dtype=object)
    s = series.reset_index(drop=True)
    s = s[s.notna()].astype(str)
    lengths = s.str.len()
    out[lengths[lengths != 18].index] = "length"
    s = s[lengths == 18]
    shaped = s.str.fullmatch(USCC_SHAPE.pattern[1:-1]).fillna(False).astype(bool)
    ascii_ok = s.str.isascii().fillna(False).astype(bool)
    bad = ~(shaped & ascii_ok)
    out[s[bad].index] = "characters"
    s = s[~bad]
    if s.empty:
        return out.set_axis(series.index)
    m = _digits_matrix(s.to_numpy(dtype=object), 18)
    org_total = _ORG_VALUE[m[:, 8:16]] @ ORG_WEIGHTS
    org_c = 11 - org_total % 11
    org_expected = np.where(org_c == 10, ord("X"), np.where(org_c == 11, ord("0"), org_c + 48))
    bad_org = m[:, 16] != org_expected
    out[s.index[bad_org]] = "organisation code check character"
    total = _USCC_VALUE[m[:, :17]] @ USCC_WEIGHTS
    alphabet = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
    expected = alphabet[(31 - total % 31) % 31]
    bad_check = (~bad_org) & (m[:, 17] != expected)
    out[s.index[bad_check]] = "check character"
    ok = ~(bad_org | bad_check)
    if ok.any():
        if divisions is None:
            from quality.divisions import load_divisions
            divisions = load_divisions()
        places = s[ok].str.slice(2, 8)
        # Few distinct codes even in a million rows: decide each once.
        known = {c for c in places.unique() if _uscc_division_known(c, divisions, policy)}
        unknown = ~places.isin(known).to_numpy()
        out[places.index[unknown]] = "division code unknown"
    return out.set_axis(series.index)


# --- phone numbers -------------------------------------------------------------------------

# Mainland mobile (11 digits from 13x-19x) or landline with area code (0 + 2-3 digits,
# optional hyphen, 7-8 digits). The same pattern feeds GX's ExpectColumnValuesToMatchRegex.
PHONE_PATTERN = r"^(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})$"
_PHONE = re.compile(PHONE_PATTERN)


def phone_problem(value: str | None) -> str | None:
    """``None`` if ``value`` is a mainland mobile (1[3-9] + 9 digits) or a landline
    (0 + 2-3 digit area code, optional '-', 7-8 digits); otherwise a short reason."""
    if value is None or _PHONE.match(value):
        return None
    return "not a mainland mobile or landline number"


def phone_problems(series: pd.Series) -> pd.Series:
    """Vectorised :func:`phone_problem`."""
    import pandas as pd

    out = pd.Series([None] * len(series), dtype=object)
    s = series.reset_index(drop=True)
    s = s[s.notna()].astype(str)
    ok = s.str.fullmatch(PHONE_PATTERN[1:-1]).fillna(False).astype(bool)
    out[s[~ok].index] = "not a mainland mobile or landline number"
    return out.set_axis(series.index)
