"""Live bars kept across a restart, under ``<data dir>/history/live/``: the files and the task that writes
them. Never journaled (the rules are :mod:`qaex.core.live_bars`'s; docs/market-data.md, "Live bars kept").

* :class:`LiveBarStore`: ``{symbol}.60.csv`` and ``{symbol}.86400.csv``, TqSdk DataDownloader K-line
  CSV, appended to; read back bounded (the last :func:`~qaex.core.live_bars.read_limit` bytes) and
  tolerant (bad rows skipped with a WARNING); compacted past 1.25 × the bars kept per series.
* :class:`LiveBarKeeper`: a task of the market-data service. It appends every kept series' finished
  bars once a minute, just after the minute boundary, in a worker thread (the day bar in progress
  too, when it changed); every bar in progress at a daily settlement and, shielded, when the service
  is cancelled (SIGTERM, shutdown). A series is kept
  from the moment its history is attached (:meth:`LiveBarKeeper.started`), which reads its kept bars
  back first. A ``kill -9`` loses at most the bars of the minute in progress.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import trio

from qaex.atomic_write import write_atomic
from qaex.core.history import BarColumns, ContractHistory
from qaex.core.kline import NS_PER_SECOND
from qaex.core.live_bars import (
    KEPT_DURATIONS_NS,
    LiveBarPlan,
    SeriesKey,
    compaction_limit,
    continue_history,
    kept_text,
    parse_kept,
    read_limit,
)
from qaex.core.market import MINUTE_NS, MarketState

log = logging.getLogger("qaex.market.live")

FLUSH_DELAY = 0.5
"""Seconds after a minute boundary before the flush: trades stamped just before it fold in first."""
TAKE_STEP = 32
"""Series taken between two checkpoints of a flush."""
SHUTDOWN_FLUSH_TIMEOUT = 5.0
"""Seconds the shutdown flush may take (shielded from the cancellation)."""


class LiveBarStore:
    """The kept live bars of one data directory (see the module docstring). Each file is touched by one
    thread at a time: read when its contract's history is attached, written only after that."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._rows: dict[Path, int] = {}  # rows in each file, as read and appended since
        self.written = 0
        self.compacted = 0

    def path(self, symbol: str, duration_s: int) -> Path:
        return self.directory / f"{symbol}.{duration_s}.csv"

    def load(self, symbol: str, duration_s: int) -> BarColumns:
        """The kept bars of one series (empty when there are none or the file cannot be read). Reads at
        most :func:`read_limit` bytes, from the end; every skipped row is in one WARNING."""
        path = self.path(symbol, duration_s)
        try:
            info = path.stat()
        except FileNotFoundError:
            return BarColumns()
        except OSError as exc:
            log.warning("live bars %s not read: %s", path, exc)
            return BarColumns()
        if not stat.S_ISREG(info.st_mode):
            log.warning("live bars %s not read: not a regular file", path)
            return BarColumns()
        limit = read_limit(self.keep)
        try:
            with open(path, "rb") as file:
                start = max(0, info.st_size - limit)
                file.seek(start)
                data = file.read(limit)
        except OSError as exc:
            log.warning("live bars %s not read: %s", path, exc)
            return BarColumns()
        kept = parse_kept(data.decode("utf-8", "replace"), str(path), symbol, partial_start=start > 0)
        if kept.skipped:
            log.warning("live bars %s: %d rows skipped (%s)", path, kept.skipped, "; ".join(kept.problems))
        self._rows[path] = kept.rows
        return kept.bars

    def join(self, history: ContractHistory) -> ContractHistory:
        """``history`` with the kept live bars after it (continue_history, per duration)."""
        return replace(
            history,
            minutes=continue_history(history.minutes, self.load(history.symbol, 60)),
            days=continue_history(history.days, self.load(history.symbol, 86400)),
        )

    def append(self, symbol: str, duration_s: int, bars: BarColumns, price_decs: int) -> None:
        """Append ``bars`` (a header first in a new file; a line end first after a torn last line),
        then compact the file if it is past its limit. Raises OSError."""
        path = self.path(symbol, duration_s)
        if path.exists() and not path.is_file():
            raise OSError(f"{path}: not a regular file")
        with open(path, "ab+") as file:
            size = file.seek(0, os.SEEK_END)
            prefix = ""
            if size:
                file.seek(size - 1)
                if file.read(1) != b"\n":
                    prefix = "\n"  # the rest of a torn line stays one bad row, not part of this one
            text = prefix + kept_text(symbol, bars, price_decs, header=size == 0)
            file.write(text.encode())
        self.written += len(bars)
        rows = self._rows.get(path, 0) + len(bars)
        self._rows[path] = rows
        if rows > compaction_limit(self.keep):
            self.compact(symbol, duration_s, price_decs)

    def compact(self, symbol: str, duration_s: int, price_decs: int) -> None:
        """Rewrite a file with its newest ``keep`` bars (atomically: the old file or the new)."""
        bars = self.load(symbol, duration_s).tail(self.keep)
        path = self.path(symbol, duration_s)
        write_atomic(path, kept_text(symbol, bars, price_decs, header=True))
        self._rows[path] = len(bars)
        self.compacted += 1


Work = list[tuple[SeriesKey, int, BarColumns]]
"""(series key, price decimals, bars to append)."""


class LiveBarKeeper:
    """Writes the kept series' bars to a :class:`LiveBarStore` (see the module docstring)."""

    def __init__(
        self, store: LiveBarStore, state: MarketState, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.store = store
        self.state = state
        self.plan = LiveBarPlan()
        self._clock = clock
        self._settled = trio.Event()
        self.flushes = 0

    def started(self, symbol: str, history: ContractHistory | None) -> None:
        """``symbol``'s history (kept live bars joined) was attached: keep its series from there."""
        for duration in KEPT_DURATIONS_NS:
            bars = None
            if history is not None:
                bars = history.minutes if duration == MINUTE_NS else history.days
            last = bars.bar(len(bars) - 1) if bars is not None and len(bars) else None
            self.plan.begin((symbol, duration), last)

    def settled(self) -> None:
        """A daily settlement: flush now, the bars in progress too (the day bar is the day's)."""
        self._settled.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                now = self._clock()
                boundary = (now // MINUTE_NS + 1) * MINUTE_NS
                with trio.move_on_after((boundary - now) / NS_PER_SECOND + FLUSH_DELAY):
                    await self._settled.wait()
                final = self._settled.is_set()
                if final:
                    self._settled = trio.Event()
                await self.flush(final=final)
        finally:
            with trio.move_on_after(SHUTDOWN_FLUSH_TIMEOUT, shield=True):
                await self.flush(final=True)

    async def take(self, *, final: bool) -> Work:
        """What to append now, per kept series (read on the loop: the series are the loop's), in steps of
        :data:`TAKE_STEP` series with a checkpoint between, so hundreds of contracts never hold the loop."""
        now = self._clock()
        work: Work = []
        instruments = self.state.instruments
        for index, key in enumerate(self.plan.keys()):
            if index and index % TAKE_STEP == 0:
                await trio.lowlevel.checkpoint()
            series = self.state.klines.get(key)
            if series is None:
                continue
            bars = self.plan.take(key, series, now, final=final)
            if len(bars):
                instrument = instruments.get(key[0])
                work.append((key, instrument.price_decs if instrument is not None else 4, bars))
        return work

    async def flush(self, *, final: bool = False) -> None:
        """Append what :meth:`take` hands out, in a worker thread; a file that fails is retried next time."""
        work = await self.take(final=final)
        if not work:
            return
        with trio.CancelScope(shield=True):  # what the thread writes is recorded, even at shutdown
            done = await trio.to_thread.run_sync(self._write, work)
            for key, bars in done:
                self.plan.written(key, bars)
            self.flushes += 1

    def _write(self, work: Work) -> list[tuple[SeriesKey, BarColumns]]:
        done = []
        for (symbol, duration), decs, bars in work:
            try:
                self.store.append(symbol, duration // NS_PER_SECOND, bars, decs)
            except OSError as exc:
                log.error("live bars of %s not written: %s", symbol, exc)
                continue
            done.append(((symbol, duration), bars))
        return done
