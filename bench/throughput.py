"""The highest order rate qaex sustains over DIFF with P99 order→rtn_data latency under a bound.

One real server (subprocess, pinned to one core, QAEX_MARKET_MAKER=0, the journal in `--fsync` mode)
with `--other-sessions` DIFF sessions logged in and subscribed to quotes. The open-loop generator of
bench/latency.py sends orders at a constant rate (half crossing a maker's resting sells) for
`--step-duration` seconds per step, stepping the rate up (500, 1000, 2000, 4000, ...) until P99 exceeds
`--p99-ms` (5 ms) or the achieved rate falls below 95 % of the offered rate. Reported per step:
latency percentiles, achieved orders/s, trades/s, and rtn_data frames/s and patches/s delivered to
all clients (takers, maker and the other sessions: each element of an rtn_data's `data` counts).

    python -m bench.throughput --help
    python -m bench.throughput --rates 500,1000,2000,4000,8000,16000 --profile
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/throughput.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c
from bench import latency as lat


async def steps_phase(
    server: c.ServerProc, args: argparse.Namespace, workers: list[c.WorkerHandle]
) -> list[Any]:
    import trio

    takers = c.make_users("tk", args.takers)
    maker = c.make_users("mk", 1)[0]
    c.open_accounts(server.http_url, [*takers, maker], lat.INIT_CASH)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    steps: list[dict[str, Any]] = []
    async with c.diff_session(server.diff_url) as maker_conn:
        maker_conn.track_orders = False
        await maker_conn.login(*maker)
        conns: list[c.DiffConn] = []
        stop = trio.Event()
        ready = trio.Event()
        loads: list[lat.Load] = []

        def dispatch(user: str) -> Any:
            def on_data(now: float, data: list[dict[str, Any]]) -> None:
                if loads:
                    loads[-1].taker_callback(user)(now, data)

            return on_data

        async with trio.open_nursery() as nursery:

            async def taker_session(user: str, password: str) -> None:
                async with c.diff_session(server.diff_url, dispatch(user)) as conn:
                    conn.track_orders = False
                    await conn.login(user, password)
                    conns.append(conn)
                    if len(conns) == len(takers):
                        ready.set()
                    await stop.wait()

            for user, password in takers:
                nursery.start_soon(taker_session, user, password)
            await ready.wait()
            for step_no, rate in enumerate(rates):
                load = lat.Load(rate, args.step_duration, args.warmup)
                loads.append(load)
                crossings = rate * (args.warmup + args.step_duration) / 2
                for k in range(math.ceil(crossings / lat.MAKER_LOT) // 4 + 4):
                    await maker_conn.ws.send_message(
                        c.insert_order_message(
                            maker[0], f"s{step_no}p{k}", "SELL", lat.CROSS_PRICE, lat.MAKER_LOT
                        )
                    )
                await trio.sleep(0.5)
                if workers:
                    c.workers_command(workers, "RESET")
                client_patches0 = sum(x.patches for x in [*conns, maker_conn])
                client_frames0 = sum(x.frames for x in [*conns, maker_conn])
                cpu0, self0, wall0 = lat.server_cpu(server.pid), c._cpu_seconds(), time.monotonic()
                profiler = None
                profile_path = args.out_dir / f"profile-throughput-{int(rate)}.txt"
                if args.profile:
                    profiler = c.start_profile(server.pid, args.warmup + args.step_duration, profile_path)
                load_before = c.load()
                c.say(f"step {rate:g} orders/s: load {load_before}")
                run = await lat.run_diff_load(conns, maker_conn, load, tag=f"T{step_no}-")
                wall = time.monotonic() - wall0
                others = c.workers_command(workers, "STATS") if workers else []
                patches = sum(o["patches"] for o in others) + sum(x.patches for x in [*conns, maker_conn])
                patches -= client_patches0
                frames = sum(o["frames"] for o in others) + sum(x.frames for x in [*conns, maker_conn])
                frames -= client_frames0
                step = {
                    "rate": rate,
                    "load_before": load_before,
                    "load_after": c.load(),
                    "achieved_rate": run["achieved_rate"],
                    "acked": run["acked"],
                    "lost": run["lost"],
                    "rejected": run["rejected"],
                    "late_sends": run["late_sends"],
                    "max_send_lag_ms": run["max_send_lag_ms"],
                    "latency_ms": run["latency_ms"],
                    "trades_per_s": round(run["trades_seen_by_takers"] / wall, 1),
                    "patches_per_s": round(patches / wall, 1),
                    "frames_per_s": round(frames / wall, 1),
                    "server_cpu_share": round((lat.server_cpu(server.pid) - cpu0) / wall, 3),
                    "loadgen_cpu_share": round((c._cpu_seconds() - self0) / wall, 3),
                    "workers_cpu_share": round(sum(o.get("cpu", 0) for o in others) / wall, 3)
                    if others
                    else 0,
                    "curve": run["curve"],
                }
                if profiler is not None:
                    _, err = profiler.communicate(timeout=120)
                    step["profile"] = c.summarize_profile(profile_path)
                    if not step["profile"].get("samples"):
                        step["profile"]["error"] = err.decode(errors="replace")[-2000:]
                p99 = run["latency_ms"].get("p99", math.inf)
                step["ok"] = (
                    p99 <= args.p99_ms
                    and run["achieved_rate"] >= 0.95 * rate
                    and run["lost"] == 0
                    and run["unsent"] == 0
                )
                steps.append(step)
                c.say(
                    f"  P99 {p99:.2f} ms, achieved {run['achieved_rate']:,.0f}/s, "
                    f"trades {step['trades_per_s']:,.0f}/s,"
                    f" patches {step['patches_per_s']:,.0f}/s, server CPU {step['server_cpu_share']:.0%}"
                )
                if not step["ok"]:
                    break
                # let the backlog drain before the next step
                await trio.sleep(1.0)
            stop.set()
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="highest order rate qaex sustains over DIFF with P99 under a bound (stepped open loop)",
    )
    parser.add_argument("--rates", default="500,1000,2000,4000,8000,16000", help="offered orders/s per step")
    parser.add_argument(
        "--step-duration", type=float, default=8, help="measured seconds per step (default 8)"
    )
    parser.add_argument("--warmup", type=float, default=1, help="unrecorded seconds per step (default 1)")
    parser.add_argument("--p99-ms", type=float, default=5.0, help="P99 bound in ms (default 5)")
    parser.add_argument("--other-sessions", type=int, default=1000, help="other DIFF sessions (default 1000)")
    parser.add_argument(
        "--sessions-per-user", type=int, default=40, help="other sessions per user (default 40)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for the other sessions (default 2)")
    parser.add_argument("--takers", type=int, default=4, help="taker users / DIFF sessions (default 4)")
    parser.add_argument(
        "--fsync", default="batch", choices=["batch", "off"], help="QAEX_FSYNC (default batch)"
    )
    c.add_output_args(parser, profile="during every step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import trio

    args = parse_args(argv)
    pinning = c.place_load_generator(args)
    server_core, client_core = pinning["server_core"], pinning["client_core"]
    c.raise_nofile(args.other_sessions + 4096)
    result = c.new_result("throughput", args, argv, pinning=pinning)
    c.say(f"load average {result['load_start']}; server on core {server_core}, clients on core {client_core}")
    with c.workdir(args.keep) as workdir:
        sessions = args.other_sessions
        env = lat.bench_env(args, args.fsync, sessions)
        server = c.start_qaex(workdir / "qaex", core=server_core, extra_env=env, nofile=sessions + 4096)
        workers: list[c.WorkerHandle] = []
        try:
            if sessions:
                users = c.make_users("os", max(1, math.ceil(sessions / args.sessions_per_user)))
                c.open_accounts(server.http_url, users, 1e6)
                c.say(f"connecting {sessions} other sessions")
                workers, ready = c.start_session_workers(
                    server.diff_url, users, sessions, args.workers, core=client_core, workdir=workdir
                )
                c.say(f"  {sum(r['ready'] for r in ready)} ready, {sum(r['failed'] for r in ready)} failed")
            result["steps"] = trio.run(steps_phase, server, args, workers)
            result["rss_kb"] = server.rss_kb()
        finally:
            for w in workers:
                w.close()
            server.stop()
    result["load_end"] = c.load()
    good = [s for s in result["steps"] if s["ok"]]
    result["sustained_rate"] = max((s["achieved_rate"] for s in good), default=0)
    markdown = report(result, args)
    print("\n" + markdown)
    c.write_outputs("throughput", result, markdown, args.out_dir)
    c.plot_percentiles(
        {f"{s['rate']:g}/s offered": s["curve"] for s in result["steps"] if s["curve"]},
        args.out_dir / "throughput-latest.png",
        f"qaex order latency by offered rate (fsync={args.fsync}, {args.other_sessions} other sessions)",
    )
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m = result["machine"]
    lines = [
        f"## End to end: throughput ({m['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}; "
        f"server pinned to core {result['pinning']['server_core']}, "
        f"clients on core {result['pinning']['client_core']}{c.rt_note(result['pinning'])}. "
        f"Load average at start {result['load_start']}, at end {result['load_end']}.",
        "",
        f"Command: `{result['command']}` (QAEX_FSYNC={args.fsync}, {args.other_sessions} other sessions "
        f"subscribed to quotes, {args.takers} taker sessions, {args.step_duration:g} s per step).",
        "",
        "| offered/s | achieved/s | P50 ms | P99 ms | P99.9 ms | max ms | trades/s | rtn_data frames/s "
        "| patches/s | server CPU | loadgen CPU | load | ok |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in result["steps"]:
        lat_ms = s["latency_ms"]
        lines.append(
            f"| {s['rate']:,.0f} | {s['achieved_rate']:,.0f} | {c.fmt_ms(lat_ms.get('p50'))} | "
            f"{c.fmt_ms(lat_ms.get('p99'))} | {c.fmt_ms(lat_ms.get('p99.9'))} | "
            f"{c.fmt_ms(lat_ms.get('max'))} | "
            f"{s['trades_per_s']:,.0f} | {s['frames_per_s']:,.0f} | {s['patches_per_s']:,.0f} | "
            f"{s['server_cpu_share']:.0%} | {s['loadgen_cpu_share']:.0%} | {s['load_before']} | "
            f"{'yes' if s['ok'] else 'no'} |"
        )
    best = result["sustained_rate"]
    max_patches = max((s["patches_per_s"] for s in result["steps"]), default=0)
    lines += [
        "",
        f"- Sustained with P99 ≤ {args.p99_ms:g} ms: **{best:,.0f} orders/s** (target ≥ 10,000: "
        + (
            "met"
            if best >= 10_000
            else f"missed, {best / 10_000:.0%} of it, {10_000 / max(best, 1):.0f}× short"
        )
        + ").",
        f"- Most patches delivered: **{max_patches:,.0f}/s** (target ≥ 100,000: "
        + ("met" if max_patches >= 100_000 else f"missed, {max_patches / 100_000:.0%} of it")
        + ").",
    ]
    for s in result["steps"]:
        if not s["ok"] and s.get("profile", {}).get("samples"):
            lines += [
                "",
                f"Profile of the server at {s['rate']:g} orders/s (the first failing step):",
                "",
                c.profile_markdown(s["profile"]),
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
