"""When the daily settlement runs: the next weekday at a fixed China-time clock time.

Pure time arithmetic (no clock is read here), so the schedule is unit-testable and the exchange
only sleeps for what this module computes.
"""

from __future__ import annotations

import datetime as dt

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))


def parse_clock_time(text: str) -> dt.time:
    """``"15:30"`` -> 15:30; raises ValueError with the text for anything else."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return dt.time(hours, minutes)
    except ValueError:
        raise ValueError(f"expected HH:MM (China time), got {text!r}") from None


def next_settlement(now_ns: int, at: dt.time) -> int:
    """Epoch ns of the first weekday moment at `at` (China time) strictly after `now_ns`."""
    now = dt.datetime.fromtimestamp(now_ns / 1e9, CHINA_TZ)
    candidate = dt.datetime.combine(now.date(), at, tzinfo=CHINA_TZ)
    while candidate <= now or candidate.weekday() >= 5:
        candidate += dt.timedelta(days=1)
    return int(candidate.timestamp()) * 1_000_000_000 + candidate.microsecond * 1000
