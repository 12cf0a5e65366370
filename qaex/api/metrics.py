"""Prometheus text exposition, written by hand: a few gauges, counters and one histogram type.

The counters live where the work happens (router, gateway, engine); the /metrics route only reads
them. Histograms are the one thing the HTTP layer records itself: fixed buckets, O(buckets) memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

# Seconds: 50 µs to 2.5 s, roughly ×2.5 per step — order handling sits in the sub-millisecond range.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    2.5,
)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help_text = help_text
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last slot is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=False):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.sum:.9g}")
        lines.append(f"{self.name}_count {self.count}")
        return "\n".join(lines)


def sample(name: str, kind: str, help_text: str, value: float) -> str:
    """One gauge or counter with its HELP and TYPE lines."""
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value:.17g}"


def exposition(parts: Iterable[str]) -> str:
    return "\n".join(parts) + "\n"
