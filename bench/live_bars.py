"""Live bars kept across a restart: what writing and reading them costs (in process, as the server runs it).

* the minute flush: ``--contracts`` contracts with one new finished 1-minute bar and a changed day bar
  each: the plan's take on the loop (``LiveBarKeeper.take``, in steps of 32 series: the table shows the
  whole and one step), then the appends (the worker thread's part);
* one file written bar by bar: ``--bars`` appends of one bar (``--bars`` minutes of trading), the
  compactions they cause included;
* a restart: reading a file at its compaction limit (1.25 × ``--keep`` rows) and joining it onto a
  10,000-bar history (``LiveBarStore.join``).

    python -m bench.live_bars [--contracts 265] [--bars 20000] [--keep 10000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qaex.core.history import BarColumns, ContractHistory
from qaex.core.kline import NS_PER_DAY, KlineSeries
from qaex.core.live_bars import LiveBarPlan, compaction_limit, kept_text
from qaex.core.market import MINUTE_NS
from qaex.exchange.live_bars import LiveBarStore

START = 1_796_176_800_000_000_000  # 2026-12-02 10:00 China


def columns(count: int, start: int = START) -> BarColumns:
    bars = BarColumns()
    for i in range(count):
        price = 3000.0 + i % 50
        bars.append(start + i * MINUTE_NS, price, price + 2, price - 2, price + 1, 5 + i % 7, 1000, 1001)
    return bars


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def minute_flush(directory: Path, contracts: int, rounds: int) -> tuple[list[float], list[float]]:
    """(take ms, write ms) per flush of ``contracts`` contracts' new bars."""
    store = LiveBarStore(directory / "flush", keep=10_000)
    plan = LiveBarPlan()
    series: dict[tuple[str, int], KlineSeries] = {}
    for index in range(contracts):
        symbol = f"SHFE.x{index:04d}"
        for duration in (MINUTE_NS, NS_PER_DAY):
            one = series[(symbol, duration)] = KlineSeries(symbol, duration)
            one.on_trade(3000.0, 1, START, 1000)
            plan.begin((symbol, duration), None)
    takes, writes = [], []
    for round_ in range(rounds):
        now = START + (round_ + 1) * MINUTE_NS
        for one in series.values():
            one.on_trade(3000.0 + round_, 1, now + 1, 1000)
        began = time.perf_counter()
        work = []
        for key, one in series.items():
            bars = plan.take(key, one, now + 500_000_000)
            if len(bars):
                work.append((key, bars))
        taken = time.perf_counter()
        for (symbol, duration), bars in work:
            store.append(symbol, duration // 1_000_000_000, bars, 0)
            plan.written((symbol, duration), bars)
        written = time.perf_counter()
        takes.append((taken - began) * 1000)
        writes.append((written - taken) * 1000)
    return takes, writes


def one_file(directory: Path, bars: int, keep: int) -> tuple[float, int]:
    """(µs per one-bar append, compactions) writing ``bars`` bars one by one."""
    store = LiveBarStore(directory / "one", keep=keep)
    source = columns(bars)
    began = time.perf_counter()
    for index in range(bars):
        store.append("SHFE.rb2601", 60, source.slice(index, index + 1), 0)
    return (time.perf_counter() - began) / bars * 1e6, store.compacted


def restart(directory: Path, keep: int) -> tuple[float, float, int]:
    """(ms to read a file at its compaction limit, ms to read it again and join it onto 10,000 history
    bars, the bars joined)."""
    store = LiveBarStore(directory / "restart", keep=keep)
    rows = compaction_limit(keep)
    kept = columns(rows, start=START + 10_000 * MINUTE_NS)
    store.path("SHFE.rb2601", 60).write_text(kept_text("SHFE.rb2601", kept, 0, header=True))
    history = ContractHistory("SHFE.rb2601", columns(10_000), BarColumns(), [], [])
    began = time.perf_counter()
    loaded = store.load("SHFE.rb2601", 60)
    read = time.perf_counter()
    joined = store.join(history)
    joined_at = time.perf_counter()
    assert len(loaded) == rows
    return (read - began) * 1000, (joined_at - read) * 1000, len(joined.minutes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contracts", type=int, default=265)
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--keep", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qaex-bench-live-") as tmp:
        directory = Path(tmp)
        takes, writes = minute_flush(directory, args.contracts, args.rounds)
        append_us, compactions = one_file(directory, args.bars, args.keep)
        read_ms, join_ms, joined = restart(directory, args.keep)
    print(f"## live bars ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"Python {platform.python_version()})")  # fmt: skip
    print("| measure | result |")
    print("|---|---|")
    step = 32 / (2 * args.contracts)
    print(f"| minute flush, {args.contracts} contracts (2 series each): take on the loop | "
          f"median {median(takes):.1f} ms, max {max(takes):.1f} ms; a step of 32 series "
          f"~{median(takes) * step:.1f} ms |")  # fmt: skip
    print(f"| minute flush: appends (worker thread) | median {median(writes):.1f} ms, "
          f"max {max(writes):.1f} ms |")  # fmt: skip
    print(f"| {args.bars} one-bar appends to one file (keep {args.keep}) | {append_us:.0f} µs each, "
          f"{compactions} compactions included |")  # fmt: skip
    print(f"| restart: read {compaction_limit(args.keep)} rows | {read_ms:.0f} ms |")
    print(f"| restart: read again and join onto 10,000 history bars | {join_ms:.0f} ms ({joined} bars) |")


if __name__ == "__main__":
    main()
