"""The data interval that keys every run: staging paths, load partitions, metric snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


@dataclass(frozen=True)
class Interval:
    """Half-open interval [start, end) in UTC, as Airflow's data interval."""

    start: datetime
    end: datetime

    def __post_init__(self):
        for v in (self.start, self.end):
            if v.tzinfo is None:
                raise ValueError("interval bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty interval {self.start} .. {self.end}")

    @classmethod
    def daily(cls, day: date) -> Interval:
        start = datetime.combine(day, time(0), tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

    @property
    def key(self) -> str:
        """A path- and SQL-safe key, e.g. ``20261122T000000Z_20261123T000000Z``."""
        f = "%Y%m%dT%H%M%SZ"
        return f"{self.start.astimezone(UTC):{f}}_{self.end.astimezone(UTC):{f}}"

    @property
    def run_date(self) -> date:
        """The business date the interval reports on (its last day)."""
        return (self.end - timedelta(microseconds=1)).date()
