"""The cost of a full listing with nobody connected: start time, CPU and journal growth of an idle server.

A fresh data directory, the product listing a user gets (every contract the exchanges list today,
about 265), the market maker on (a ladder on every contract, trading mostly where the open interest
is), no user and no session. Measures:

* start time: from the process start to ``/health`` answering and the DIFF port accepting (the listing
  and the ladders are up by then);
* CPU of the serving process (hypercorn's worker) over ``--seconds``, as a share of one core;
* the journal's growth over the same window, extrapolated to an hour;
* orders and trades the market maker made (from ``/metrics``).

Targets (issue #15): under 5 % of a core and under 20 MB of journal per hour. Run::

    python -m bench.idle --seconds 120
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import add_output_args, cores, metric, new_result, say, start_qaex, workdir, write_outputs


def journal_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "journal").glob("*.log"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    server_core, _ = cores(args.server_core, None)
    with workdir(args.keep) as work:
        started = time.monotonic()
        server = start_qaex(
            work,
            core=server_core,
            extra_env={"QAEX_INSTRUMENTS": "", "QAEX_MARKET_MAKER": "1", "QAEX_SEED": "1"},
            timeout=120,
            wait_history=False,  # the start's cost is what this bench measures
        )
        start_seconds = time.monotonic() - started
        try:
            instruments = httpx.get(server.http_url + "/api/market/instruments", timeout=10).json()
            listed = len(instruments["instruments"])
            time.sleep(args.warmup)
            process = psutil.Process(server.pid)
            data_dir = work / "data"
            cpu_before, bytes_before, t_before = (
                sum(process.cpu_times()[:2]),
                journal_bytes(data_dir),
                time.monotonic(),
            )
            before = httpx.get(server.http_url + "/metrics", timeout=10).text
            say(f"{listed} contracts listed in {start_seconds:.2f} s; measuring {args.seconds:.0f} s")
            time.sleep(args.seconds)
            after = httpx.get(server.http_url + "/metrics", timeout=10).text
            cpu_after, bytes_after, t_after = (
                sum(process.cpu_times()[:2]),
                journal_bytes(data_dir),
                time.monotonic(),
            )
            rss_mb = process.memory_info().rss / 2**20
        finally:
            server.stop()
    window = t_after - t_before
    orders = metric(after, "qaex_orders_total") - metric(before, "qaex_orders_total")
    trades = metric(after, "qaex_trades_total") - metric(before, "qaex_trades_total")
    return {
        "listed": listed,
        "start_seconds": start_seconds,
        "window_seconds": window,
        "cpu_share": (cpu_after - cpu_before) / window,
        "journal_mb_per_hour": (bytes_after - bytes_before) / window * 3600 / 1e6,
        "orders_per_second": orders / window,
        "trades_per_second": trades / window,
        "rss_mb": rss_mb,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after start before measuring")
    add_output_args(parser, profile="")
    args = parser.parse_args(argv)
    figures = run(args)
    result = new_result("idle", args, argv, **figures)
    markdown = (
        "| contracts listed | start | CPU (one core) | journal per hour | maker orders/s | trades/s | RSS |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {figures['listed']} | {figures['start_seconds']:.2f} s | {figures['cpu_share']:.1%} "
        f"| {figures['journal_mb_per_hour']:.1f} MB | {figures['orders_per_second']:.1f} "
        f"| {figures['trades_per_second']:.2f} | {figures['rss_mb']:.0f} MB |\n"
    )
    print(markdown)
    write_outputs("idle", result, markdown, args.out_dir)


if __name__ == "__main__":
    main()
