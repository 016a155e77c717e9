"""Administrative division codes (GB/T 2260) from a maintained reference list.

The list is python-stdnum's ``cn/loc.dat`` (compiled from the civil-affairs code tables,
with the years each code was valid), not a hand-typed table. Which codes count as
"known" is a policy, set with ``DATARAIL_DIVISION_POLICY``:

- ``historic`` (default): any code that was ever valid. Resident IDs keep the birthplace
  code of their issue year for life, so records of older people carry abolished codes.
- ``current``: only codes still valid today.
- ``at_year``: valid in a given year (the birth year for a resident ID); callers pass it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import stdnum

POLICIES = ("historic", "current", "at_year")
_LINE = re.compile(r'^(\s*)(\d{2}|\d{4})\s+(province|county)="(.*)"$')
_SPAN = re.compile(r"^\[(\d{4})?-(\d{4})?\](.*)$")


@dataclass(frozen=True)
class Division:
    code: str
    name: str
    valid_from: int | None  # first year valid; None: before the list begins
    valid_to: int | None  # last year valid; None: still valid

    def valid_in(self, year: int) -> bool:
        return (self.valid_from is None or year >= self.valid_from) and (
            self.valid_to is None or year <= self.valid_to)


class DivisionReference:
    """The reference list, indexed by 6-digit code; one code may have had several names."""

    def __init__(self, divisions: list[Division], source: str):
        self.source = source
        self._by_code: dict[str, list[Division]] = {}
        for d in divisions:
            self._by_code.setdefault(d.code, []).append(d)

    def __len__(self) -> int:
        return len(self._by_code)

    def codes(self, policy: str = "historic") -> frozenset[str]:
        """All codes that count as known under ``policy`` (``historic`` or ``current``)."""
        if policy == "historic":
            return frozenset(self._by_code)
        if policy == "current":
            return frozenset(c for c, ds in self._by_code.items() if any(d.valid_to is None for d in ds))
        raise ValueError(f"division policy must be one of {POLICIES}, got {policy!r}")

    def is_known(self, code: str, *, policy: str = "historic", year: int | None = None) -> bool:
        ds = self._by_code.get(code)
        if not ds:
            return False
        if policy == "at_year" and year is not None:
            return any(d.valid_in(year) for d in ds)
        if policy == "current":
            return any(d.valid_to is None for d in ds)
        return True

    def name(self, code: str) -> str | None:
        ds = self._by_code.get(code)
        return ds[-1].name if ds else None

    def counties(self, *, current_only: bool = True, prefix: str = "") -> list[str]:
        """County-level codes (not ending in 00), sorted; for the sandbox's generator."""
        return sorted(c for c, ds in self._by_code.items()
                      if not c.endswith("00") and c.startswith(prefix)
                      and "市辖区" not in ds[-1].name
                      and (not current_only or any(d.valid_to is None for d in ds)))


def _parse(path: Path) -> list[Division]:
    out: list[Division] = []
    province = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        indent, digits, kind, names = m.groups()
        if kind == "province" and not indent:
            province = digits
            # The province's own row appears as "  0000 county=..." below it.
            continue
        code = f"{province}{digits}"
        for name in names.split(","):
            span = _SPAN.match(name)
            if span:
                start, end, label = span.groups()
                out.append(Division(code, label, int(start) if start else None, int(end) if end else None))
            else:
                out.append(Division(code, name, None, None))
    return out


@lru_cache(maxsize=1)
def load_divisions() -> DivisionReference:
    """Load the reference list shipped with python-stdnum (cached per process)."""
    path = Path(stdnum.__file__).parent / "cn" / "loc.dat"
    return DivisionReference(_parse(path), source=f"python-stdnum {stdnum.__version__} cn/loc.dat")
