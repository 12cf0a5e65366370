"""Replay of a recorded market: a reference-price track from recorded K-lines or ticks
(``QAEX_MARKET_REPLAY``).

Pure (no IO, no clock): :func:`track_from_bars` turns a contract's recorded bars (a TqSdk DataDownloader
K-line file, :func:`qaex.core.history.parse_csv`) and :func:`track_from_ticks` its recorded ticks (a
tick file, :func:`qaex.core.tick_file.parse_ticks`) into a :class:`ReplayTrack`, the price the market
maker's ladder follows (rounded to the contract's tick) at each elapsed moment of the replay; the
simulator asks it with the time since the replay started times the speed, and steps the ladder at each
recorded change (:meth:`ReplayTrack.next_change`). Each bar plays its open, then its low and high (low
first on a rising bar, high first on a falling one), then its close, spread over the bar's duration. A
tick recording plays every change of the last price at its recorded time. Time between bars, and gaps
between ticks longer than :data:`MAX_TICK_GAP_NS` (session breaks, nights), is not waited out: the next
bar or tick follows at once (ticks: :data:`RESUME_GAP_NS` later), so a recorded day plays in its trading
time. Past the end, :meth:`ReplayTrack.price_at` answers None and the maker goes back to its random walk
from the last price.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from qaex.core.history import BarColumns
from qaex.core.tick_file import TickColumns

MAX_TICK_GAP_NS = 300_000_000_000
"""A pause between two recorded ticks longer than this (5 minutes) is a break: it is not waited out..."""
RESUME_GAP_NS = 1_000_000_000
"""...the tick after it plays this long (1 s of recorded time) after the one before."""


@dataclass(frozen=True, slots=True)
class ReplayTrack:
    """``(offset ns, price)`` points, offsets increasing from 0."""

    offsets: tuple[int, ...]
    prices: tuple[float, ...]

    @property
    def length_ns(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    def price_at(self, elapsed_ns: float) -> float | None:
        """The price at ``elapsed_ns`` into the replay (the last point at or before it), or None
        once the recording has ended."""
        if not self.offsets or elapsed_ns > self.length_ns:
            return None
        index = bisect.bisect_right(self.offsets, elapsed_ns) - 1
        return self.prices[max(index, 0)]

    def next_change(self, elapsed_ns: float) -> int | None:
        """The offset of the first point after ``elapsed_ns``, or None if there is none."""
        index = bisect.bisect_right(self.offsets, elapsed_ns)
        return self.offsets[index] if index < len(self.offsets) else None


def track_from_ticks(ticks: TickColumns) -> ReplayTrack:
    """The track of recorded ticks: each change of the last price (ticks without one are skipped), at
    its time since the first tick, breaks shortened (see the module docstring)."""
    offsets: list[int] = []
    prices: list[float] = []
    last = ticks.columns["last_price"]
    offset = 0
    previous_ns: int | None = None
    for index in range(len(ticks)):
        price = last[index]
        if price != price:
            continue
        ns = ticks.datetime[index]
        if previous_ns is not None:
            gap = ns - previous_ns
            offset += gap if gap <= MAX_TICK_GAP_NS else RESUME_GAP_NS
        previous_ns = ns
        if not prices or price != prices[-1]:
            offsets.append(offset)
            prices.append(price)
    if prices and offsets[-1] < offset:  # the recording lasts until its last tick
        offsets.append(offset)
        prices.append(prices[-1])
    return ReplayTrack(tuple(offsets), tuple(prices))


def track_from_bars(bars: BarColumns, duration_ns: int | None = None) -> ReplayTrack:
    """The track of recorded bars; ``duration_ns``: the bars' duration (default: the smallest step
    between two bars, else one minute)."""
    count = len(bars)
    if duration_ns is None:
        steps = [b - a for a, b in zip(bars.datetime, bars.datetime[1:], strict=False) if b > a]
        duration_ns = min(steps) if steps else 60_000_000_000
    offsets: list[int] = []
    prices: list[float] = []
    quarter = duration_ns // 4
    for index in range(count):
        start = index * duration_ns
        rising = bars.close[index] >= bars.open[index]
        first, second = (bars.low[index], bars.high[index]) if rising else (bars.high[index], bars.low[index])
        for step, price in enumerate((bars.open[index], first, second, bars.close[index])):
            offsets.append(start + step * quarter)
            prices.append(price)
    return ReplayTrack(tuple(offsets), tuple(prices))
