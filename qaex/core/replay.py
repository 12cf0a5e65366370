"""Replay of a recorded market: a reference-price track from recorded K-lines (``QAEX_MARKET_REPLAY``).

Pure (no IO, no clock): :func:`track_from_bars` turns a contract's recorded bars (a TqSdk DataDownloader
K-line file, :func:`qaex.core.history.parse_csv`) into a :class:`ReplayTrack`, the price the market
maker's ladder follows (rounded to the contract's tick) at each elapsed moment of the replay; the
simulator asks it with the time since the replay started times the speed. Each bar plays its open, then
its low and high (low first on a rising bar, high first on a falling one), then its close, spread over
the bar's duration. Time between bars (session breaks, nights) is not waited out: the next bar follows
at once, so a recorded day plays in its trading minutes. Past the end, :meth:`ReplayTrack.price_at`
answers None and the maker goes back to its random walk from the last price.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from qaex.core.history import BarColumns


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
