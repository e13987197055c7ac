"""A data window over Hive-style dated partitions: which days a retrain trains on.

Data that lands every day is usually written under `date=YYYY-MM-DD/` prefixes. A
weekly retrain on the whole prefix would train on all of history, with old
behaviour outweighing this month's; a window keeps the recent days: `since` (a first
date) and/or `last_n_days` (today, in UTC, and the N-1 days before it). Files outside
any `date=` partition cannot be placed in time, so a window refuses them instead of
guessing. The days kept are recorded with the prepared splits and the run's report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

PARTITION = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


@dataclass(frozen=True)
class DataWindow:
    since: str | None = None  # YYYY-MM-DD, included
    last_n_days: int | None = None
    today: str | None = None  # YYYY-MM-DD; None: today in UTC (set for reproducible runs)

    def __post_init__(self) -> None:
        for name in ("since", "today"):
            value = getattr(self, name)
            if value is not None:
                _parse(value, name)
        if self.last_n_days is not None and self.last_n_days < 1:
            raise ValueError(f"last_n_days={self.last_n_days}: must be >= 1")

    @property
    def active(self) -> bool:
        return self.since is not None or self.last_n_days is not None

    def first_day(self) -> date | None:
        """The earliest day kept (None: no bound)."""
        days = []
        if self.since is not None:
            days.append(_parse(self.since, "since"))
        if self.last_n_days is not None:
            today = _parse(self.today, "today") if self.today else datetime.now(timezone.utc).date()
            days.append(today - timedelta(days=self.last_n_days - 1))
        return max(days) if days else None

    def select(self, paths: list[str], where: str) -> tuple[list[str], list[str]]:
        """(the paths inside the window, the sorted days they come from); one error naming
        `where` for a path without a `date=` partition, or when no day is left."""
        if not self.active:
            return paths, []
        first = self.first_day()
        kept, days = [], set()
        for path in paths:
            day = partition_day(path)
            if day is None:
                raise ValueError(
                    f"{where}: {path.rsplit('/', 1)[-1]} lies in no date=YYYY-MM-DD/ partition; "
                    "a data window (since, last_n_days) needs every file in one"
                )
            if first is None or day >= first:
                kept.append(path)
                days.add(day.isoformat())
        if not kept:
            raise ValueError(f"{where}: no date= partition on or after {first} (the window)")
        return kept, sorted(days)

    def to_dict(self) -> dict:
        first = self.first_day()
        return {
            "since": self.since,
            "last_n_days": self.last_n_days,
            "first_day": None if first is None else first.isoformat(),
        }


def partition_day(path: str) -> date | None:
    found = PARTITION.findall(path)
    return _parse(found[-1], "date") if found else None


def _parse(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a date YYYY-MM-DD") from None
