"""Market history: the time and memory to build and hold every listed contract's history, the restart load
time, and what a client waits for it on a fresh server.

In-process part (the pure generator and the store, as the server runs them): the default product listing
of today's trading day (265 contracts with the built-in templates), each contract's synthetic history
generated and written as DataDownloader CSVs (``HistoryStore.build``), attached to a ``MarketState``;
then a second state loads them all back (a restart). RSS (VmRSS) is read before and after.

Server part (``--server``): a fresh ``hypercorn qaex.app:app`` on an empty data directory with the product
listing; time to ``/health``, then the first ``GET /api/market/klines`` of every product's main contract
(10,000 minute bars) while the background build runs, and the time until every contract's files exist.

    python -m bench.history              # in-process
    python -m bench.history --server     # also the server part
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qaex.core.calendar import default_holiday_calendar, trading_day_of
from qaex.core.instruments import Instrument
from qaex.core.listing import listing_update
from qaex.core.main_contracts import choose_main
from qaex.core.market import MarketState
from qaex.core.products import PRODUCTS
from qaex.exchange.history import HistoryStore


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def listing(day: str) -> dict[str, Instrument]:
    update = listing_update({}, PRODUCTS.values(), day, default_holiday_calendar())
    return {f"{i.exchange_id}.{i.instrument_id}": i for i in update.new}


def mains(instruments: dict[str, Instrument]) -> set[str]:
    by_product: dict[str, list[Instrument]] = {}
    for instrument in instruments.values():
        by_product.setdefault(f"{instrument.exchange_id}.{instrument.product_id}", []).append(instrument)
    oi = {s: i.pre_open_interest for s, i in instruments.items()}
    return {m for group in by_product.values() if (m := choose_main(None, group, oi)) is not None}


def in_process(directory: Path) -> None:
    calendar = default_holiday_calendar()
    now = time.time_ns()
    day = trading_day_of(now, calendar)
    instruments = listing(day)
    main = mains(instruments)
    rss0 = rss_mb()
    state = MarketState(instruments, with_history=True)
    for symbol in instruments:
        state.list_instrument(symbol, now)
    rss1 = rss_mb()
    store = HistoryStore(directory, seed=1, calendar=calendar)
    times: list[tuple[float, str]] = []
    started = time.perf_counter()
    bars = 0
    for symbol, instrument in instruments.items():
        t = time.perf_counter()
        spec = store.spec(instrument, instruments, trading_day=day, main=symbol in main)
        history = store.build(spec, instrument.price_decs)
        state.attach_history(symbol, history)
        times.append((time.perf_counter() - t, symbol))
        bars += len(history.minutes) + len(history.days)
    total = time.perf_counter() - started
    rss2 = rss_mb()
    times.sort()
    print(f"contracts {len(instruments)} ({len(main)} main), bars {bars:,}")
    print(
        f"build + write all: {total:.2f} s; per contract: median {times[len(times) // 2][0] * 1000:.0f} ms, "
        f"max {times[-1][0] * 1000:.0f} ms ({times[-1][1]})"
    )
    print(
        f"RSS: {rss0:.0f} MB before, {rss1:.0f} MB listed, {rss2:.0f} MB holding all history "
        f"(+{rss2 - rss1:.0f} MB)"
    )
    size = sum(p.stat().st_size for p in directory.glob("*.csv"))
    print(f"files: {len(list(directory.glob('*.csv')))} CSVs, {size / 1e6:.0f} MB")
    # A restart: load every contract's files into a new state.
    del state
    state = MarketState(instruments, with_history=True)
    for symbol in instruments:
        state.list_instrument(symbol, now)
    loads: list[float] = []
    started = time.perf_counter()
    for symbol in instruments:
        t = time.perf_counter()
        state.attach_history(symbol, store.load(symbol))
        loads.append(time.perf_counter() - t)
    loads.sort()
    print(
        f"restart load all: {time.perf_counter() - started:.2f} s; per contract: median "
        f"{loads[len(loads) // 2] * 1000:.0f} ms, max {loads[-1] * 1000:.0f} ms"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_rss(pid: int, baseline: float = 0.0) -> float:
    """VmRSS in MB of the process and its children (hypercorn runs the app in a worker process)."""
    pids = [pid]
    total = 0.0
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )
        pids.extend(int(child) for child in children)
    return total


def server(directory: Path) -> None:
    import httpx

    http_port, diff_port = free_port(), free_port()
    env = dict(
        os.environ,
        QAEX_DATA_DIR=str(directory / "data"),
        QAEX_DIFF_PORT=str(diff_port),
        QAEX_ADMIN_TOKEN=secrets.token_urlsafe(16),
        QAEX_MARKET_MAKER="0",
        QAEX_INSTRUMENTS="",
        QAEX_SETTLEMENT_TIME="",
    )
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "qaex.app:app",
        "--worker-class",
        "trio",
        "-b",
        f"127.0.0.1:{http_port}",
    ]
    url = f"http://127.0.0.1:{http_port}"
    started = time.monotonic()
    with open(directory / "server.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        print(f"server: /health after {time.monotonic() - started:.2f} s")
        rss_at_start = server_rss(process.pid)
        print(f"server: RSS {rss_at_start:.0f} MB at /health")
        listed_now = httpx.get(url + "/api/market/instruments", timeout=10).json()["instruments"]
        symbols = sorted(
            (i if isinstance(i, str) else f"{i['exchange_id']}.{i['instrument_id']}") for i in listed_now
        )
        listed = len(symbols)
        waits = []
        for product in sorted({s.rstrip("0123456789") for s in symbols}):
            months = [s for s in symbols if s.rstrip("0123456789") == product]
            t = time.monotonic()
            got = httpx.get(
                f"{url}/api/market/klines/{months[0]}", params={"duration": 60, "count": 10000}, timeout=30
            ).json()
            waits.append((time.monotonic() - t, months[0], len(got["klines"])))
        waits.sort()
        print(
            f"server: first klines of {len(waits)} products' nearest month (10,000 asked): median "
            f"{waits[len(waits) // 2][0] * 1000:.0f} ms, max {waits[-1][0] * 1000:.0f} ms ({waits[-1][1]}, "
            f"{waits[-1][2]} bars)"
        )
        history = directory / "data" / "history"
        while len(list(history.glob("*.csv"))) < 2 * listed and time.monotonic() - started < 120:
            time.sleep(0.1)
        print(
            f"server: every contract's history written {time.monotonic() - started:.1f} s after the start "
            f"({len(list(history.glob('*.csv'))) // 2} of {listed})"
        )
        print(f"server: RSS {server_rss(process.pid, rss_at_start):.0f} MB holding every contract's history")
        t = time.monotonic()
        httpx.get(
            f"{url}/api/market/klines/{waits[-1][1]}", params={"duration": 60, "count": 10000}, timeout=30
        )
        print(f"server: the same klines again (history attached): {(time.monotonic() - t) * 1000:.0f} ms")
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", action="store_true", help="also measure a fresh server")
    args = parser.parse_args()
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M} {platform.processor() or platform.machine()} "
        f"{os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        in_process(Path(tmp) / "history")
        if args.server:
            server(Path(tmp))


if __name__ == "__main__":
    main()
