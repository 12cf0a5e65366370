"""Importing a big tick file, and loading it at a restart: time and peak RSS.

A DataDownloader tick file of ``--ticks`` rows (default 500,000: ~70 trading hours of one contract at
two ticks a second, ~100 MB) for SHFE.rb2601 is written to a temporary directory (not timed). Then, each
in a fresh process so that its peak RSS (``ru_maxrss``) is its own:

* **import**: ``qaex.exchange.history.import_history`` - read, check every row, build the 1-minute and
  daily bars, write the kept files (what ``qaex import-history`` does);
* **restart load**: ``HistoryStore.load(symbol, keep_ticks=10_000)``, what the server does at a start
  (only the last ticks the series holds are read, from the end of the file);
* **full load**: the same with every tick parsed (``keep_ticks=None``), for comparison.

    python -m bench.import_history [--ticks 500000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qaex.core.history import format_datetime
from qaex.core.tick_file import tick_header
from qaex.exchange.history import HistoryStore, import_history

SYMBOL = "SHFE.rb2601"
S = 1_000_000_000
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 China time
KEEP_TICKS = 10_000


def write_ticks(path: Path, count: int) -> None:
    """``count`` ticks half a second apart, the price wandering around 3100 (tick 1), 5 book levels."""
    with open(path, "w") as file:
        file.write(tick_header(SYMBOL, 5) + "\n")
        volume = 0
        for index in range(count):
            ns = T0 + index * (S // 2)
            price = 3100 + (index * 7919 % 61) - 30
            volume += index % 5
            levels = ",".join(f"{price - k},{k + 3},{price + k},{k + 2}" for k in range(1, 6))
            amount = price * volume * 10
            file.write(
                f"{format_datetime(ns)},{ns},{price},{price + 30},{price - 30},{price}.5,{volume},"
                f"{amount},{200_000 + index % 97},{levels}\n"
            )


def phase(name: str, directory: Path, source: Path) -> dict[str, float]:
    """Run one phase in this process (called in a child): its seconds and peak RSS (MB)."""
    store = HistoryStore(directory / "history", seed=1)
    started = time.perf_counter()
    if name == "import":
        import_history(
            store, [source], symbol=None, duration=None, ticks={SYMBOL: 1.0}, price_decs={SYMBOL: 0}
        )
    else:
        history = store.load(SYMBOL, KEEP_TICKS if name == "restart load" else None)
        assert history is not None and history.ticks is not None
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: one phase
        directory = Path(args.dir)
        print(json.dumps(phase(args.phase, directory, directory / "ticks.csv")))
        return
    with tempfile.TemporaryDirectory(prefix="qaex-bench-import-") as temporary:
        directory = Path(temporary)
        source = directory / "ticks.csv"
        write_ticks(source, args.ticks)
        size = source.stat().st_size / 1e6
        when = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        print(f"# bench.import_history: {args.ticks:,} ticks ({size:.0f} MB), {when}")
        print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")  # fmt: skip
        print("| phase | seconds | peak RSS (MB) |")
        print("|---|---:|---:|")
        for name in ("import", "restart load", "full load"):
            command = [sys.executable, "-m", "bench.import_history", "--phase", name, "--dir", temporary]
            root = Path(__file__).resolve().parent.parent
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
            result = json.loads(done.stdout)
            print(f"| {name} | {result['seconds']:.2f} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
