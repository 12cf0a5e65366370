"""Many concurrent DIFF sessions: server memory per session, and does every session get its data?

Starts the real server (subprocess; RLIMIT_NOFILE raised by the start wrapper, QAEX_MAX_SESSIONS set so
it admits them), opens `--users` accounts, connects `--sessions` DIFF sessions from `--workers` client
processes (round-robin over the users; each process raises its own RLIMIT_NOFILE), logs each in and
subscribes it to quotes. Then orders flow for `--duration` seconds: the open-loop generator of
bench/latency.py at `--rate` orders/s (half crossing, so the quote moves), plus one crossing order per
user sent from that user's first session. At the end every session is checked: it must hold its
snapshot (the account, the full quotes) and the updates (the final quote volume of every subscribed
instrument as the driver sees it, and its user's own order, filled).

Server RSS (VmRSS of the hypercorn worker) is read before the sessions connect, after, and during
the order flow; memory per session = (RSS with the sessions − RSS before) / sessions.

    python -m bench.sessions --help
    python -m bench.sessions                     # 10,000 sessions over 200 users, 4 client processes
    python -m bench.sessions --sessions 2000 --users 100
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/sessions.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c
from bench import latency as lat


async def flow(
    server: c.ServerProc, args: argparse.Namespace, workers: list[c.WorkerHandle], result: dict[str, Any]
) -> None:
    import trio

    taker = c.make_users("tk", 1)[0]
    maker = c.make_users("mk", 1)[0]
    c.open_accounts(server.http_url, [taker, maker], lat.INIT_CASH)
    load = lat.Load(args.rate, args.duration, 1.0)
    async with (
        c.diff_session(server.diff_url) as maker_conn,
        c.diff_session(server.diff_url, load.taker_callback(taker[0])) as taker_conn,
    ):
        maker_conn.track_orders = taker_conn.track_orders = False
        await maker_conn.login(*maker)
        await maker_conn.subscribe(c.SESSION_SYMBOLS)
        await taker_conn.login(*taker)
        lots = args.rate * (args.duration + 1) / 2 + args.users
        for k in range(math.ceil(lots / lat.MAKER_LOT) + 2):
            await maker_conn.ws.send_message(
                c.insert_order_message(maker[0], f"pre{k}", "SELL", lat.CROSS_PRICE, lat.MAKER_LOT)
            )
        await trio.sleep(1.0)
        rss_samples: list[int] = []

        async def sample_rss() -> None:
            while True:
                rss_samples.append(server.rss_kb())
                await trio.sleep(0.5)

        cpu0, wall0 = lat.server_cpu(server.pid), time.monotonic()
        c.workers_command(workers, "RESET")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_rss)
            # one crossing order per user, from its first session, while the stream runs
            sent = await trio.to_thread.run_sync(
                lambda: c.workers_command(
                    workers,
                    'ORDERS {"direction": "BUY", "price": %r}' % lat.CROSS_PRICE,  # noqa: UP031
                )
            )
            result["user_orders_sent"] = sum(s["sent"] for s in sent)
            result["load_during"] = c.load()
            result["stream"] = await lat.run_diff_load([taker_conn], None, load, tag="S")
            result["stream"]["taker_errors"] = taker_conn.errors[:5]
            nursery.cancel_scope.cancel()
        wall = time.monotonic() - wall0
        result["server_cpu_share"] = round((lat.server_cpu(server.pid) - cpu0) / wall, 3)
        result["rss_kb_during_max"] = max(rss_samples, default=0)
        stats = c.workers_command(workers, "STATS")
        result["client_frames_per_s"] = round(sum(s["frames"] for s in stats) / wall, 1)
        result["client_patches_per_s"] = round(sum(s["patches"] for s in stats) / wall, 1)
        # The truth: the exchange's own quote over HTTP once the flow has settled. (Not the driver's
        # session: with 10,000 subscribers one publish takes seconds to reach everybody, and the
        # driver's own session may be among the last.)
        await trio.sleep(2.0)
        volumes = await trio.to_thread.run_sync(
            lambda: {s: quote_volume(server.http_url, s) for s in c.SESSION_SYMBOLS.split(",")}
        )
        result["final_quote_volume"] = volumes
        expected = {"quote_volume": volumes, "order_prefix": "chk-", "within": args.check_within}
        checks = await trio.to_thread.run_sync(
            lambda: c.workers_command(workers, "CHECK " + c._encode(expected).decode(), timeout=600)
        )
        result["checked"] = sum(x["checked"] for x in checks)
        result["all_data_ok"] = sum(x["good"] for x in checks)
        result["problems"] = [p for x in checks for p in x["problems"]][:20]
        result["rss_kb_after"] = server.rss_kb()


def quote_volume(http_url: str, symbol: str) -> int:
    import httpx

    answer = httpx.get(f"{http_url}/api/market/quote/{symbol}", timeout=60.0)
    answer.raise_for_status()
    volume: int = answer.json()["volume"]
    return volume


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions",
        description="N concurrent DIFF sessions: server memory per session and delivery to every session",
    )
    parser.add_argument("--sessions", type=int, default=10_000, help="DIFF sessions (default 10000)")
    parser.add_argument(
        "--users",
        type=int,
        default=200,
        help="users they log in as (default 200; each first login costs the server one scrypt check)",
    )
    parser.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--rate", type=float, default=50, help="orders/s while the sessions are connected")
    parser.add_argument("--duration", type=float, default=20, help="seconds of order flow (default 20)")
    parser.add_argument("--check-within", type=float, default=30, help="seconds to wait for convergence")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to one core and the clients to the "
        "other (default: unpinned, so the scrypt checks of the logins use both cores)",
    )
    c.add_output_args(parser, cores=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import httpx
    import trio

    args = parse_args(argv)
    server_core, client_core = c.cores() if args.pin else (-1, -1)
    c.pin_self(client_core)
    c.raise_nofile(args.sessions + 4096)
    result = c.new_result(
        "sessions", args, argv, pinning={"server_core": server_core, "client_core": client_core}
    )
    c.say(f"load average {result['load_start']}")
    env = {
        "QAEX_MAX_SESSIONS": str(args.sessions + 1000),
        "QAEX_MAX_MESSAGES_PER_SECOND": "1000000",
        "QAEX_MAX_ORDERS_PER_SECOND": "0",
    }
    with c.workdir(args.keep) as workdir:
        server = c.start_qaex(workdir / "qaex", core=server_core, extra_env=env, nofile=args.sessions + 4096)
        workers: list[c.WorkerHandle] = []
        try:
            users = c.make_users("ss", args.users)
            t0 = time.monotonic()
            # log each user in once over HTTP too: the scrypt checks (and the memory their threads keep)
            # happen before the baseline RSS, and the DIFF logins then hit the verified-password cache
            c.open_accounts(server.http_url, users, 1e7, login=True)
            result["open_accounts_s"] = round(time.monotonic() - t0, 1)
            time.sleep(1.0)
            result["rss_kb_before"] = server.rss_kb()
            c.say(
                f"server RSS before sessions: {result['rss_kb_before'] / 1024:.1f} MB; connecting "
                f"{args.sessions} sessions from {args.workers} processes"
            )
            t0 = time.monotonic()
            workers, ready = c.start_session_workers(
                server.diff_url, users, args.sessions, args.workers, core=client_core, workdir=workdir, nice=0
            )
            result["connect_s"] = round(time.monotonic() - t0, 1)
            result["connected"] = sum(r["ready"] for r in ready)
            result["connect_failures"] = [f for r in ready for f in r["failures"]][:10]
            result["connect_failed"] = sum(r["failed"] for r in ready)
            time.sleep(1.0)
            result["rss_kb_connected"] = server.rss_kb()
            health = httpx.get(server.http_url + "/health", timeout=10).json()
            result["server_sessions"] = health.get("sessions")
            c.say(
                f"{result['connected']} sessions ready ({result['connect_failed']} failed) in "
                f"{result['connect_s']} s; server says {health.get('sessions')}; RSS "
                f"{result['rss_kb_connected'] / 1024:.1f} MB; load {c.load()}"
            )
            trio.run(flow, server, args, workers, result)
        finally:
            for w in workers:
                w.close()
            server.stop()
    result["load_end"] = c.load()
    n = max(1, result.get("connected", 0))
    result["kb_per_session_connected"] = round((result["rss_kb_connected"] - result["rss_kb_before"]) / n, 1)
    result["kb_per_session_after_flow"] = round((result["rss_kb_after"] - result["rss_kb_before"]) / n, 1)
    result["kb_per_session_peak"] = round((result["rss_kb_during_max"] - result["rss_kb_before"]) / n, 1)
    markdown = report(result, args)
    print("\n" + markdown)
    c.write_outputs("sessions", result, markdown, args.out_dir)
    return result


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    m = r["machine"]
    per = max(r["kb_per_session_connected"], r["kb_per_session_after_flow"], r["kb_per_session_peak"])
    stream = r["stream"]["latency_ms"]
    lines = [
        f"## End to end: concurrent sessions ({m['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}; "
        f"{'pinned' if args.pin else 'unpinned'}. Load average at start {r['load_start']}, during the flow "
        f"{r['load_during']}, at end {r['load_end']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| sessions connected, logged in, subscribed | {r['connected']:,} of {args.sessions:,} "
        f"(server /health: {r['server_sessions']}) |",
        f"| users | {args.users:,} (accounts opened in {r['open_accounts_s']} s) |",
        f"| connect + login + subscribe time | {r['connect_s']} s |",
        f"| server RSS before the sessions | {r['rss_kb_before'] / 1024:.1f} MB |",
        f"| server RSS with the sessions (idle) | {r['rss_kb_connected'] / 1024:.1f} MB "
        f"({r['kb_per_session_connected']:.1f} KB/session) |",
        f"| server RSS peak during the order flow | {r['rss_kb_during_max'] / 1024:.1f} MB "
        f"({r['kb_per_session_peak']:.1f} KB/session) |",
        f"| server RSS after the flow | {r['rss_kb_after'] / 1024:.1f} MB "
        f"({r['kb_per_session_after_flow']:.1f} KB/session) |",
        f"| order flow | {args.rate:g} orders/s for {args.duration:g} s "
        f"+ {r['user_orders_sent']} user orders; "
        f"P50 {c.fmt_ms(stream.get('p50'))} ms, P99 {c.fmt_ms(stream.get('p99'))} ms, max "
        f"{c.fmt_ms(stream.get('max'))} ms |",
        f"| server CPU during the flow | {r['server_cpu_share']:.0%} of a core |",
        f"| delivered to the sessions | {r['client_frames_per_s']:,.0f} rtn_data/s, "
        f"{r['client_patches_per_s']:,.0f} patches/s |",
        f"| sessions with complete data (snapshot, final quotes, own order) | {r['all_data_ok']:,} of "
        f"{r['checked']:,} |",
        "",
        f"- Target 10,000 sessions at ≤ 50 KB each: {r['connected']:,} sessions, "
        f"{per:.1f} KB/session (worst of idle, peak, after): **"
        + (
            "met"
            if r["connected"] >= 10_000 and per <= 50
            else (
                "missed"
                + (f": {per / 50:.1f}× the budget" if per > 50 else "")
                + (f", only {r['connected']:,} sessions" if r["connected"] < 10_000 else "")
            )
        )
        + "**.",
    ]
    if r["problems"] or r["connect_failures"]:
        lines += ["", "Problems (first few): " + "; ".join(r["connect_failures"] + r["problems"])[:1500]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
