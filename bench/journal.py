"""What durability costs: order acknowledgements with the journal fsyncing, not fsyncing, and absent.

An in-process Exchange (router, journal, gateway, snapshot manager; no HTTP) with its journal on a
temporary directory. `--submitters` tasks each insert orders one after another, awaiting every
acknowledgement as a client does, so up to that many commands wait for the disk at once and group
commit has something to group. Orders alternate buy and sell around one price, so about half trade.

The same workload runs three times: ``QAEX_FSYNC=batch`` (the default: one fdatasync per router
batch), ``off`` (written, not fsynced) and without a journal. Reported per mode: durable commands per
second, acknowledgement latency percentiles, commands per fsync. Run ``python -m bench.journal --help``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.journal import Journal
from qaex.exchange.recovery import open_journal


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def run_mode(mode: str, orders: int, submitters: int, directory: Path) -> dict[str, Any]:
    journal: Journal | None = None
    if mode == "none":
        engine = Engine(max_orders_per_second=0)
    else:
        journal, recovered = open_journal(
            directory, lambda: Engine(max_orders_per_second=0), fsync=mode == "batch"
        )
        engine = recovered.engine
    exchange = Exchange(engine, journal=journal)
    latencies: list[float] = []
    users = [f"user{n}" for n in range(submitters)]

    async def submit(user: str, index: int) -> None:
        for n in range(orders // submitters):
            request = InsertOrder(
                user_id=user,
                order_id=f"{user}-{n}",
                exchange_id="SHFE",
                instrument_id="cu2601",
                direction="BUY" if (n + index) % 2 else "SELL",
                offset="OPEN",
                volume=1,
                limit_price=86000.0 + 10 * ((n * 7 + index) % 5 - 2),
            )
            started = time.perf_counter()
            await exchange.insert_order(request)
            latencies.append(time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user in users:
            await exchange.open_account(user, "pw", 1e12)
        started = time.perf_counter()
        async with trio.open_nursery() as submitters_nursery:
            for index, user in enumerate(users):
                submitters_nursery.start_soon(submit, user, index)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    latencies.sort()
    result: dict[str, Any] = {
        "mode": mode,
        "commands_per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
    }
    if journal is not None:
        result["commands_per_batch"] = journal.records / max(journal.batches, 1)
        result["fsync_ms_mean"] = journal.fsync_seconds / max(journal.batches, 1) * 1e3
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000, help="orders per mode (default %(default)s)")
    parser.add_argument(
        "--submitters", type=int, default=64, help="concurrent submitters (default %(default)s)"
    )
    parser.add_argument(
        "--dir", help="where the journal goes (default: a temp dir; put it on the disk to test)"
    )
    args = parser.parse_args(argv)
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"# {args.orders} orders, {args.submitters} concurrent submitters")
    results = []
    for mode in ("batch", "off", "none"):
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            results.append(trio.run(run_mode, mode, args.orders, args.submitters, Path(directory)))
    print(
        f"{'mode':<6} {'cmd/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cmd/batch':>10} {'fsync':>7}"
    )
    for result in results:
        print(
            f"{result['mode']:<6} {result['commands_per_second']:>9.0f} {result['p50_ms']:>8.2f} "
            f"{result['p99_ms']:>8.2f} {result['max_ms']:>8.2f} {result.get('commands_per_batch', 0):>10.1f} "
            f"{result.get('fsync_ms_mean', 0):>7.2f}"
        )
    batch, _, none = results
    print(f"# durability adds {batch['p99_ms'] - none['p99_ms']:.2f} ms to the P99 acknowledgement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
