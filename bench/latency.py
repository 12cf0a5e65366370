"""End-to-end order latency over DIFF (and HTTP), against a bare trio-websocket echo server.

The real server runs in a subprocess pinned to one core (QAEX_MARKET_MAKER=0); the load generator runs
here, pinned to the other core, with `--other-sessions` DIFF sessions (logged in, subscribed to quotes,
peeking) in worker processes (bench/_session_worker.py) on the load generator's core at nice 10;
the load generator runs under SCHED_FIFO (``_common.place_load_generator``; ``--no-client-rt`` to
turn it off), so that it is not delayed behind them.

Open loop: order i is scheduled at t0 + i/rate and its latency is measured from that *intended* time,
so a stall in the server (or the client) shows up in the latency of every order it delayed
(no coordinated omission). An order's latency ends when the rtn_data that shows it arrives: the order
ALIVE with an exchange_order_id, or FINISHED (filled). Half the orders cross a maker's resting sell
orders (pre-placed, replenished as they are consumed); the other half rest.

Phases, all in one run: the baseline echo server (same rate, same message size, started and pinned
the same way), qaex with the journal in its default durable mode (QAEX_FSYNC=batch), qaex with
QAEX_FSYNC=off; in each qaex phase also HTTP POST /api/order/submit at `--http-rate`.

    python -m bench.latency --help
    python -m bench.latency                       # 1,000 orders/s, 1,000 other sessions, 15 s per phase
    python -m bench.latency --rate 500 --duration 30 --profile
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/latency.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c

CROSS_PRICE = c.PRICE  # the maker rests its sells here; crossing buys pay it
REST_PRICE = c.PRICE - 5 * c.TICK  # the non-crossing buys rest here
MAKER_LOT = 500  # lots per maker order (max_limit_order_volume of rb2601)
INIT_CASH = 1e12  # limits.MAX_AMOUNT: the largest init_cash an account may open with


def bench_env(args: argparse.Namespace, fsync: str, sessions: int) -> dict[str, str]:
    """Server settings for a benchmark: the per-session/user rate limits out of the way."""
    return {
        "QAEX_FSYNC": fsync,
        "QAEX_MAX_SESSIONS": str(sessions + 1000),
        "QAEX_MAX_MESSAGES_PER_SECOND": "1000000",
        "QAEX_MAX_ORDERS_PER_SECOND": "0",
    }


class Load:
    """Open-loop order stream over DIFF: takers round-robin, latencies into an HdrHistogram."""

    def __init__(self, rate: float, duration: float, warmup: float) -> None:
        self.rate, self.duration, self.warmup = rate, duration, warmup
        self.hist = c.new_histogram()
        # The same latency in two parts, cut where the router stamps the order (its insert_date_time,
        # the server's wall clock, read on this machine's clock): the way in (the client's send, the
        # network, the connection's read, the router's queue) and the way out (engine, gateway,
        # snapshot manager, writer, network, the client's read).
        self.hist_in = c.new_histogram()
        self.hist_out = c.new_histogram()
        self.wall_offset = 0.0  # time.time() - trio.current_time(), set when the load starts
        self.hist_lag = c.new_histogram()  # how late the client sent each order (its own delay)
        self.intended: dict[str, float] = {}
        self.record_from = 0.0
        self.acked = 0
        self.rejected = 0
        self.trades = 0
        self.sent = 0
        self.late_sends = 0  # sends more than 1 ms behind schedule (the client fell behind)
        self.max_send_lag = 0.0
        self.first_send = 0.0
        self.last_ack = 0.0
        self.closed: str | None = None

    def on_orders(self, now: float, orders: dict[str, Any]) -> None:
        for order_id, order in orders.items():
            intended = self.intended.get(order_id)
            if intended is None or not isinstance(order, dict):
                continue
            status = order.get("status")
            if order.get("exchange_order_id") or status == "FINISHED":
                del self.intended[order_id]
                if status == "FINISHED" and not order.get("exchange_order_id"):
                    self.rejected += 1
                self.acked += 1
                self.last_ack = now
                if intended >= self.record_from:
                    self.hist.record_value(max(1, int((now - intended) * 1e6)))
                    stamped = order.get("insert_date_time")
                    if isinstance(stamped, int) and stamped > 0:
                        at = stamped / 1e9 - self.wall_offset
                        self.hist_in.record_value(max(1, int((at - intended) * 1e6)))
                        self.hist_out.record_value(max(1, int((now - at) * 1e6)))

    def taker_callback(self, user: str) -> Any:
        def on_data(now: float, data: list[dict[str, Any]]) -> None:
            for patch in data:
                trade = patch.get("trade")
                if not trade:
                    continue
                tree = trade.get(user)
                if not isinstance(tree, dict):
                    continue
                orders = tree.get("orders")
                if orders:
                    self.on_orders(now, orders)
                trades = tree.get("trades")
                if trades:
                    self.trades += len(trades)

        return on_data


async def run_diff_load(
    takers: list[Any], maker: Any | None, load: Load, *, tag: str, echo: bool = False
) -> dict[str, Any]:
    """Send `load.rate` orders/s for `load.warmup + load.duration` s; wait up to 5 s for the stragglers."""
    import trio
    from trio_websocket import ConnectionClosed

    total = int(load.rate * (load.warmup + load.duration))
    progress = c.Progress(total, f"{tag} {load.rate:g}/s", "orders")
    crossings_since_refill = 0
    start = trio.current_time() + 0.05
    load.wall_offset = time.time() - trio.current_time()
    load.record_from = start + load.warmup
    load.first_send = start
    # Hard bound: when the server stops reading (TCP backpressure) the sender falls behind; stop sending
    # 5 s after the schedule's end and count what was never sent at its lower bound (see below).
    deadline = start + load.warmup + load.duration + 5.0
    unsent = 0
    for i in range(total):
        target = start + i / load.rate
        now = trio.current_time()
        if now > deadline:
            # CO-honest: order j waited at least (now - its intended time) and has not even been sent
            for j in range(i, total):
                intended = start + j / load.rate
                if intended >= load.record_from:
                    load.hist.record_value(max(1, int((now - intended) * 1e6)))
            unsent = total - i
            break
        if target > now:
            await trio.sleep_until(target)
            now = trio.current_time()
        lag = now - target  # the client's own delay: behind schedule, or woken late from its sleep
        load.max_send_lag = max(load.max_send_lag, lag)
        if lag > 0.001:
            load.late_sends += 1
        if target >= load.record_from:
            load.hist_lag.record_value(max(1, int(lag * 1e6)))
        taker = takers[i % len(takers)]
        crossing = i % 2 == 0
        order_id = f"{tag}{i}"
        message = c.insert_order_message(
            taker.user or "echo", order_id, "BUY", CROSS_PRICE if crossing else REST_PRICE
        )
        load.intended[order_id] = target
        try:
            with trio.move_on_at(deadline + 5.0) as send_scope:  # a send blocked by backpressure, bounded
                await taker.ws.send_message(message)
            if send_scope.cancelled_caught:
                load.closed = "send blocked past the deadline"
                deadline = trio.current_time()
                continue
        except ConnectionClosed as exc:  # the server closed the session (seen: its heartbeat timeout)
            load.closed = f"{taker.user}: {exc.reason}"
            deadline = trio.current_time()  # record the rest at their lower bound, next iteration
            continue
        load.sent += 1
        if crossing and maker is not None:
            crossings_since_refill += 1
            if crossings_since_refill >= MAKER_LOT * 0.8:
                crossings_since_refill = 0
                await maker.ws.send_message(
                    c.insert_order_message(maker.user, f"{tag}m{i}", "SELL", CROSS_PRICE, MAKER_LOT)
                )
        if i % 256 == 0:
            progress.update(256 if i else 1)
    progress.close()
    end_send = trio.current_time()
    await c.wait_until(lambda: not load.intended, 5.0)
    lost = len(load.intended)
    now = trio.current_time()
    for intended in load.intended.values():  # never answered within 5 s: recorded at the lower bound
        if intended >= load.record_from:
            load.hist.record_value(max(1, int((now - intended) * 1e6)))
    elapsed = max(1e-9, (load.last_ack or end_send) - load.first_send)
    return {
        "rate": load.rate,
        "sent": load.sent,
        "acked": load.acked,
        "lost": lost,
        "unsent": unsent,
        "closed_by_server": load.closed,
        "rejected": load.rejected,
        "trades_seen_by_takers": load.trades,
        "achieved_rate": round(load.acked / elapsed, 1),
        "send_seconds": round(end_send - start, 3),
        "late_sends": load.late_sends,
        "max_send_lag_ms": round(load.max_send_lag * 1000, 3),
        "latency_ms": c.summarize(load.hist),
        "to_router_ms": c.summarize(load.hist_in) if load.hist_in.get_total_count() else {},
        "from_router_ms": c.summarize(load.hist_out) if load.hist_out.get_total_count() else {},
        "send_lag_ms": c.summarize(load.hist_lag) if load.hist_lag.get_total_count() else {},
        "curve": c.percentile_curve(load.hist) if load.hist.get_total_count() else [],
    }


async def echo_phase(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: the same open-loop generator against the echo server, one connection."""
    import trio
    from trio_websocket import open_websocket_url

    load = Load(args.rate, args.duration, args.warmup)
    async with open_websocket_url(url, max_message_size=1 << 24) as ws:

        class Echo:
            user = "echo"

        echo = Echo()
        echo.ws = ws  # type: ignore[attr-defined]

        async def reader() -> None:
            while True:
                frame = await ws.get_message()
                now = trio.current_time()
                message = c._decode(frame)
                load.on_orders(now, {message["order_id"]: {"exchange_order_id": "x"}})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            result = await run_diff_load([echo], None, load, tag="E", echo=True)
            nursery.cancel_scope.cancel()
    return result


async def http_phase(
    server: c.ServerProc, user: str, password: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Open-loop POST /api/order/submit at args.http_rate: latency = intended send time -> HTTP answer."""
    import httpx
    import trio

    token = c.http_login(server.http_url, user, password)
    hist = c.new_histogram()
    statuses: dict[int, int] = {}
    total = int(args.http_rate * args.http_duration)
    errors: list[str] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(
        base_url=server.http_url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:

        async def one(i: int, target: float) -> None:
            body = {
                "order_id": f"H{i}",
                "instrument_id": c.SYMBOL,
                "direction": "BUY",
                "offset": "OPEN",
                "volume": 1,
                "price": REST_PRICE - 5 * c.TICK,  # rests (HTTP takers must not drain the DIFF maker)
                "order_type": "LIMIT",
            }
            try:
                answer = await client.post("/api/order/submit", json=body)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                return
            now = trio.current_time()
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if i >= args.http_rate * 1.0:  # 1 s warm-up
                hist.record_value(max(1, int((now - target) * 1e6)))

        start = trio.current_time() + 0.05
        async with trio.open_nursery() as nursery:
            for i in range(total):
                target = start + i / args.http_rate
                await trio.sleep_until(target)
                nursery.start_soon(one, i, target)
    return {
        "rate": args.http_rate,
        "sent": total,
        "statuses": statuses,
        "errors": errors[:5],
        "latency_ms": c.summarize(hist),
        "curve": c.percentile_curve(hist) if hist.get_total_count() else [],
    }


server_cpu = c.process_cpu  # CPU seconds of a process (bench.sessions uses it too)


async def qaex_phase(
    server: c.ServerProc, args: argparse.Namespace, fsync: str, workers: list[c.WorkerHandle]
) -> dict[str, Any]:
    import trio

    takers = c.make_users("tk", args.takers)
    maker = c.make_users("mk", 1)[0]
    c.open_accounts(server.http_url, [*takers, maker], INIT_CASH)
    load = Load(args.rate, args.duration, args.warmup)
    result: dict[str, Any] = {"fsync": fsync}
    async with c.diff_session(server.diff_url) as maker_conn:
        maker_conn.track_orders = False
        await maker_conn.login(*maker)
        conns = []
        async with trio.open_nursery() as nursery:
            # one DIFF session per taker user, each with its own order callback
            sessions_ready = trio.Event()
            stop = trio.Event()

            async def taker_session(user: str, password: str) -> None:
                async with c.diff_session(server.diff_url, load.taker_callback(user)) as conn:
                    conn.track_orders = False
                    await conn.login(user, password)
                    conns.append(conn)
                    if len(conns) == len(takers):
                        sessions_ready.set()
                    await stop.wait()

            for user, password in takers:
                nursery.start_soon(taker_session, user, password)
            await sessions_ready.wait()
            # resting liquidity for the crossing half: enough for the warm-up and a margin
            crossings = args.rate * (args.warmup + args.duration) / 2
            for k in range(min(40, math.ceil(crossings / MAKER_LOT) // 4 + 4)):
                await maker_conn.ws.send_message(
                    c.insert_order_message(maker[0], f"pre{k}", "SELL", CROSS_PRICE, MAKER_LOT)
                )
            await trio.sleep(1.0)
            before = c.workers_command(workers, "RESET")
            cpu0, wall0, self0 = server_cpu(server.pid), time.monotonic(), c._cpu_seconds()
            ticks0 = c.cpu_ticks()
            profiler = None
            if args.profile:
                profile_path = args.out_dir / f"profile-latency-{fsync}.txt"
                profiler = c.start_profile(server.pid, args.warmup + args.duration, profile_path)
            c.say(f"qaex fsync={fsync}: load {c.load()}")
            result["load_before"] = c.load()
            result["diff"] = await run_diff_load(conns, maker_conn, load, tag="L")
            cpu1, wall1, self1 = server_cpu(server.pid), time.monotonic(), c._cpu_seconds()
            after = c.workers_command(workers, "STATS")
            result["load_after"] = c.load()
            result["server_cpu_share"] = round((cpu1 - cpu0) / (wall1 - wall0), 3)
            result["loadgen_cpu_share"] = round((self1 - self0) / (wall1 - wall0), 3)
            result["steal_share"] = c.steal_share(ticks0, c.cpu_ticks())
            result["other_sessions"] = {
                "sessions": sum(a["sessions"] for a in after),
                "frames_per_s": round(sum(a["frames"] for a in after) / (wall1 - wall0), 1),
                "patches_per_s": round(sum(a["patches"] for a in after) / (wall1 - wall0), 1),
                "worker_cpu_share": round(
                    sum(a["cpu"] for a in after) / (wall1 - wall0)
                    - sum(b["cpu"] for b in before) / (wall1 - wall0),
                    3,
                ),
                "errors": sum(a["errors"] for a in after),
            }
            if profiler is not None:
                _, err = profiler.communicate(timeout=120)
                result["profile"] = c.summarize_profile(profile_path)
                if not result["profile"].get("samples"):
                    result["profile"]["error"] = err.decode(errors="replace")[-2000:]
            if args.http_rate > 0:
                c.say(f"HTTP POST /api/order/submit at {args.http_rate:g}/s for {args.http_duration:g} s")
                result["http"] = await http_phase(server, *takers[0], args)
            stop.set()
    return result


def run_qaex(
    args: argparse.Namespace, fsync: str, workdir: Path, client_core: int, server_core: int
) -> dict[str, Any]:
    import trio

    sessions = args.other_sessions
    env = bench_env(args, fsync, sessions)
    server = c.start_qaex(workdir / fsync, core=server_core, extra_env=env, nofile=sessions + 4096)
    workers: list[c.WorkerHandle] = []
    try:
        users = c.make_users("os", max(1, math.ceil(sessions / args.sessions_per_user))) if sessions else []
        if users:
            c.open_accounts(server.http_url, users, 1e6)
            c.say(f"connecting {sessions} other sessions ({len(users)} users, {args.workers} processes)")
            t0 = time.monotonic()
            workers, ready = c.start_session_workers(
                server.diff_url, users, sessions, args.workers, core=client_core, workdir=workdir
            )
            failed = sum(r["failed"] for r in ready)
            c.say(f"  {sum(r['ready'] for r in ready)} ready, {failed} failed, {time.monotonic() - t0:.1f} s")
            if failed:
                c.say(f"  failures: {[r['failures'] for r in ready]}")
        result = trio.run(qaex_phase, server, args, fsync, workers)
        result["rss_kb"] = server.rss_kb()
        return result
    finally:
        for w in workers:
            w.close()
        code = server.stop()
        if code not in (0, None):
            c.say(f"server exited with {code}; log:\n{server.log()[-3000:]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="qaex end-to-end order latency (open loop, DIFF and HTTP) vs a bare echo server",
    )
    parser.add_argument("--rate", type=float, default=1000, help="DIFF orders per second (default 1000)")
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per phase (default 15)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds sent but not recorded (default 2)")
    parser.add_argument(
        "--other-sessions", type=int, default=1000, help="other DIFF sessions connected (1000)"
    )
    parser.add_argument(
        "--sessions-per-user", type=int, default=40, help="other sessions per user (default 40)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for the other sessions (default 2)")
    parser.add_argument(
        "--takers",
        type=int,
        default=4,
        help="taker users (one DIFF session each) the orders are spread over round-robin (default 4)",
    )
    parser.add_argument("--http-rate", type=float, default=200, help="HTTP orders per second (0 = skip; 200)")
    parser.add_argument("--http-duration", type=float, default=5, help="HTTP seconds (default 5)")
    parser.add_argument("--fsync", default="batch,off", help="qaex journal modes to run (default batch,off)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the echo baseline")
    c.add_output_args(parser, profile="during each qaex phase")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import trio

    args = parse_args(argv)
    pinning = c.place_load_generator(args)
    server_core, client_core = pinning["server_core"], pinning["client_core"]
    c.raise_nofile(args.other_sessions + 4096)
    result = c.new_result("latency", args, argv, pinning=pinning, runs={})
    c.say(f"load average {result['load_start']}; server on core {server_core}, clients on core {client_core}")
    with c.workdir(args.keep) as workdir:
        if not args.no_baseline:
            echo = c.start_echo(workdir, core=server_core)
            try:
                c.say(f"baseline echo: load {c.load()}")
                cpu0, t0, ticks0 = server_cpu(echo.pid), time.monotonic(), c.cpu_ticks()
                base = trio.run(echo_phase, echo.diff_url, args)
                base["server_cpu_share"] = round((server_cpu(echo.pid) - cpu0) / (time.monotonic() - t0), 3)
                base["steal_share"] = c.steal_share(ticks0, c.cpu_ticks())
                base["load_after"] = c.load()
                result["runs"]["echo"] = base
            finally:
                echo.stop()
        for fsync in [m.strip() for m in args.fsync.split(",") if m.strip()]:
            result["runs"][f"qaex-{fsync}"] = run_qaex(args, fsync, workdir, client_core, server_core)
    result["load_end"] = c.load()
    markdown = report(result, args)
    print("\n" + markdown)
    c.write_outputs("latency", result, markdown, args.out_dir)
    curves = {}
    for name, run in result["runs"].items():
        if name == "echo":
            curves["baseline echo (DIFF-sized message)"] = run["curve"]
        else:
            curves[f"{name} DIFF insert_order→rtn_data"] = run["diff"]["curve"]
            if run.get("http", {}).get("curve"):
                curves[f"{name} HTTP submit ({args.http_rate:g}/s)"] = run["http"]["curve"]
    c.plot_percentiles(
        curves,
        args.out_dir / "latency-latest.png",
        f"qaex order latency at {args.rate:g} orders/s, {args.other_sessions} other sessions (open loop)",
    )
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m = result["machine"]
    runs = result["runs"]
    base = runs.get("echo", {}).get("latency_ms")
    lines = [
        f"## End to end: order latency ({m['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}; "
        f"server pinned to core {result['pinning']['server_core']}, load generator and other sessions "
        f"on core {result['pinning']['client_core']}{c.rt_note(result['pinning'])}. "
        f"Load average at start {result['load_start']}, "
        f"at end {result['load_end']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{args.rate:g} orders/s over DIFF (open loop, half crossing), {args.other_sessions} other sessions "
        f"subscribed to quotes, {args.takers} taker sessions, {args.duration:g} s measured after "
        f"{args.warmup:g} s warm-up.",
        "",
    ]
    rows = []
    if base:
        rows.append(("baseline echo", base))
    for name, run in runs.items():
        if name != "echo":
            rows.append((f"{name} DIFF", run["diff"]["latency_ms"]))
    lines.append(c.latency_table(rows, base))
    lines.append("")
    detail = [
        "| run | acked/s | lost / unsent | rejected | late sends | server CPU | loadgen CPU "
        "| other sessions: frames/s, patches/s | RSS MB | steal |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, run in runs.items():
        if name == "echo":
            detail.append(
                f"| echo | {run['achieved_rate']:,} | {run['lost']} / {run['unsent']} | – "
                f"| {run['late_sends']} | "
                f"{run['server_cpu_share']:.0%} | – | – | – | {run.get('steal_share', 0):.1%} |"
            )
            continue
        d, o = run["diff"], run["other_sessions"]
        detail.append(
            f"| {name} | {d['achieved_rate']:,} | {d['lost']} / {d['unsent']} | {d['rejected']} "
            f"| {d['late_sends']} | "
            f"{run['server_cpu_share']:.0%} | {run['loadgen_cpu_share']:.0%} | "
            f"{o['frames_per_s']:,.0f}, {o['patches_per_s']:,.0f} | {run['rss_kb'] / 1024:.0f} "
            f"| {run.get('steal_share', 0):.1%} |"
        )
    lines += [*detail, ""]
    parts = (
        ("client send lag", "send_lag_ms"),
        ("in: intended → router", "to_router_ms"),
        ("out: router → seen", "from_router_ms"),
    )
    split = [
        (f"{name} {part}", load[key])
        for name, run in runs.items()
        for load in [run if name == "echo" else run["diff"]]
        for part, key in parts
        if load.get(key)
    ]
    if split:
        lines.append(
            "Where the time goes: the client's own delay in sending each order (behind its schedule, "
            "or woken late), and the DIFF latency cut where the router stamps the order (its "
            "`insert_date_time`): the way in (the client's delay, network, the connection's read, the "
            "router's queue) and the way out (engine, gateway, snapshot manager, writer, network, the "
            "client's read):"
        )
        lines.append("")
        lines.append(c.latency_table(split))
        lines.append("")
    http_rows = [
        (f"{n} HTTP {args.http_rate:g}/s", r["http"]["latency_ms"]) for n, r in runs.items() if "http" in r
    ]
    if http_rows:
        lines.append("HTTP `POST /api/order/submit` (intended send → HTTP answer):")
        lines.append("")
        lines.append(c.latency_table(http_rows))
        lines.append("")
    if base:
        off = runs.get("qaex-off", {}).get("diff", {}).get("latency_ms")
        on = runs.get("qaex-batch", {}).get("diff", {}).get("latency_ms")
        if off and off.get("count"):
            ratio = off["p99"] / base["p99"]
            verdict = (
                "met" if ratio <= 2 else f"missed by {ratio / 2:.1f}× ({off['p99'] - 2 * base['p99']:.2f} ms)"
            )
            lines.append(
                f"- Target P99 (journal off) ≤ 2× baseline P99 = {2 * base['p99']:.3f} ms: "
                f"{off['p99']:.3f} ms, {ratio:.1f}×: **{verdict}**."
            )
        if on and off and on.get("count") and off.get("count"):
            lines.append(
                f"- Journal on vs off: P99 {on['p99']:.3f} ms vs {off['p99']:.3f} ms "
                f"(+{on['p99'] - off['p99']:.3f} ms)."
            )
    for name, run in runs.items():
        if run.get("profile", {}).get("samples"):
            lines += ["", f"Profile of the server during {name}:", "", c.profile_markdown(run["profile"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
