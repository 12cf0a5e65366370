"""Scale-out over NATS: a core, a nats-server, 1 or 2 DIFF gateways and thousands of sessions.

Every scenario starts a deployment of its own, as docs/deployment.md "Scaling out" runs it: a
nats-server on a free 127.0.0.1 port, the core (``hypercorn qaex.app:app`` with QAEX_BROKER, a fresh
data directory, the tests' pinned instruments, bench.latency's rate-limit settings) and
``qaex gateway --broker ... --diff-port N`` processes. The core is pinned alone to core 0; the
broker, the gateways, the session processes and the order driver share core 1 (on 2 cores that is
the best split there is: the core must not share). The order driver runs at normal priority
(``--client-rt``: under SCHED_FIFO, see ``_common.place_load_generator``).

Scenarios: for each gateway count (``--gateways``, default 1,2) and each session count
(``--sessions``, default 0,2000,10000; 0 is the baseline), N sessions are spread over the gateways
(each user's sessions on one gateway), logged in, subscribed to quotes (bench.latency's set) and
peeking after every rtn_data, in ``bench/_session_worker.py`` processes at nice 10. Then
bench.latency's open-loop order flow runs for ``--duration`` s through each route (``--routes``:
the first gateway's DIFF port, then the core's own), from taker users of that route only. During
each flow: the CPU share of the core (its hypercorn worker), of every gateway and of the broker,
and their RSS. After the flows every user sends one crossing order from one of its sessions, and
every session is checked: its account snapshot, the full quotes, the final quote volume of every
subscribed instrument (the core's own, over HTTP) and its user's order, filled.

Targets (#18): with N sessions the core's CPU and the order P99 stay within 20 % of the same
deployment with no sessions; every session completes.

    python -m bench.scaleout --help
    python -m bench.scaleout --quick              # smoke run: 1 and 2 gateways, 0 and 200 sessions
    python -m bench.scaleout                      # 0 / 2,000 / 10,000 sessions on 1 and 2 gateways
    python -m bench.scaleout --gateways 2 --sessions 0,10000 --rate 300
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/scaleout.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c
from bench import latency as lat
from bench import sessions as ses

SPLIT = (
    "the core pinned alone to core {server}; the broker, the gateways, the session processes and the "
    "order driver on core {client} (on 2 cores the best split there is)"
)


def spread(sessions: int, gateways: int, per_user: int, workers: int) -> list[tuple[int, int]]:
    """(users, sessions) for each gateway: every user's sessions on one gateway and, within it, in one
    worker process (the users of a gateway are a multiple of its worker count), so the one order per
    user that the check needs is sent exactly once."""
    if sessions <= 0:
        return [(0, 0)] * gateways
    users = max(1, math.ceil(sessions / per_user))
    unit = gateways * max(1, workers)
    users = math.ceil(users / unit) * unit
    out = []
    for g in range(gateways):
        n = sessions // gateways + (1 if g < sessions % gateways else 0)
        out.append((users // gateways, n))
    return out


class Deployment:
    """nats-server, the core and its gateways of one scenario; stopped by PID, in reverse order."""

    def __init__(self, args: argparse.Namespace, workdir: Path, gateways: int, sessions: int) -> None:
        self.args, self.workdir = args, workdir
        self.server_core, self.client_core = args.cores
        self.nats: c.ServerProc | None = None
        self.core: c.ServerProc | None = None
        self.gateways: list[c.ServerProc] = []
        self.workers: list[c.WorkerHandle] = []
        self.n_gateways, self.n_sessions = gateways, sessions

    def start(self) -> None:
        self.nats = c.start_nats(self.workdir / "nats", core=self.client_core)
        env = lat.bench_env(self.args, self.args.fsync, self.n_sessions)
        env["QAEX_BROKER"] = self.nats.url
        self.core = c.start_qaex(
            self.workdir / "core", core=self.server_core, extra_env=env, nofile=self.n_sessions + 4096
        )
        for g in range(self.n_gateways):
            self.gateways.append(
                c.start_gateway(
                    self.core,
                    self.nats.url,
                    self.workdir / f"gateway{g}",
                    core=self.client_core,
                    nofile=self.n_sessions + 4096,
                )
            )

    def session_urls(self) -> list[str]:
        assert self.core is not None
        return [g.diff_url for g in self.gateways] or [self.core.diff_url]

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for w in self.workers:
            w.close()
        for i, g in enumerate(self.gateways):
            codes[f"gateway{i}"] = g.stop()
        if self.core is not None:
            codes["core"] = self.core.stop()
        if self.nats is not None:
            codes["nats"] = self.nats.stop()
        return codes

    def logs_tail(self, n: int = 2000) -> dict[str, str]:
        procs = {"core": self.core, "nats": self.nats} | {
            f"gateway{i}": g for i, g in enumerate(self.gateways)
        }
        return {k: p.log()[-n:] for k, p in procs.items() if p is not None}


def connect_sessions(dep: Deployment, result: dict[str, Any]) -> list[tuple[str, str]]:
    """Open the accounts, log each user in once over HTTP (the core's scrypt check, before anything is
    measured), then connect every gateway's sessions at once. Returns all the users."""
    args = dep.args
    assert dep.core is not None
    urls = dep.session_urls()
    plan = spread(dep.n_sessions, len(urls), args.sessions_per_user, args.workers)
    users = c.make_users("so", sum(u for u, _ in plan))
    result["users"] = len(users)
    if not users:
        result.update(connected=0, connect_failed=0, connect_failures=[], connect_s=0.0)
        return users
    t0 = time.monotonic()
    c.open_accounts(dep.core.http_url, users, 1e6, login=True)
    result["open_accounts_s"] = round(time.monotonic() - t0, 1)
    c.say(f"connecting {dep.n_sessions:,} sessions ({len(users)} users) to {len(urls)} DIFF endpoint(s)")
    t0 = time.monotonic()
    start = 0
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        for g, (n_users, n_sessions) in enumerate(plan):
            mine = users[start : start + n_users]
            start += n_users
            folder = dep.workdir / f"sessions{g}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append(
                pool.submit(
                    c.start_session_workers,
                    urls[g],
                    mine,
                    n_sessions,
                    args.workers,
                    core=dep.client_core,
                    workdir=folder,
                    timeout=args.connect_timeout,
                )
            )
        ready: list[dict[str, Any]] = []
        per_gateway = []
        for job in jobs:
            handles, answers = job.result()
            dep.workers += handles
            ready += answers
            per_gateway.append(sum(a["ready"] for a in answers))
    result["connect_s"] = round(time.monotonic() - t0, 1)
    result["connected"] = sum(r["ready"] for r in ready)
    result["connected_per_gateway"] = per_gateway
    result["connect_failed"] = sum(r["failed"] for r in ready)
    result["connect_failures"] = [f for r in ready for f in r["failures"]][:10]
    c.say(
        f"  {result['connected']:,} ready ({per_gateway}), {result['connect_failed']} failed, "
        f"{result['connect_s']} s; load {c.load()}"
    )
    return users


def cpu_snapshot(dep: Deployment) -> dict[str, float]:
    assert dep.core is not None and dep.nats is not None
    snap = {"core": c.process_cpu(dep.core.pid), "nats": c.process_cpu(dep.nats.pid)}
    for i, g in enumerate(dep.gateways):
        snap[f"gateway{i}"] = c.process_cpu(g.pid)
    snap["driver"] = c._cpu_seconds()
    snap["wall"] = time.monotonic()
    return snap


async def route_flow(dep: Deployment, route: str, url: str) -> dict[str, Any]:
    """bench.latency's open-loop flow through one DIFF endpoint, with CPU and RSS of every process."""
    import trio

    args = dep.args
    assert dep.core is not None
    takers = c.make_users(f"t{route[0]}", args.takers)
    maker = c.make_users(f"m{route[0]}", 1)[0]
    await trio.to_thread.run_sync(lambda: c.open_accounts(dep.core.http_url, [*takers, maker], lat.INIT_CASH))  # type: ignore[union-attr]
    load = lat.Load(args.rate, args.duration, args.warmup)
    out: dict[str, Any] = {"route": route}
    # the maker sits on the core's own port (its orders are not measured); the takers on the route
    async with c.diff_session(dep.core.diff_url) as maker_conn:
        maker_conn.track_orders = False
        await maker_conn.login(*maker)
        conns: list[c.DiffConn] = []
        async with trio.open_nursery() as nursery:
            all_ready, stop = trio.Event(), trio.Event()

            async def taker_session(user: str, password: str) -> None:
                async with c.diff_session(url, load.taker_callback(user)) as conn:
                    conn.track_orders = False
                    await conn.login(user, password)
                    conns.append(conn)
                    if len(conns) == len(takers):
                        all_ready.set()
                    await stop.wait()

            for user, password in takers:
                nursery.start_soon(taker_session, user, password)
            with trio.fail_after(120):
                await all_ready.wait()
            # resting sells for the crossing half and for the users' check orders afterwards
            lots = args.rate * (args.warmup + args.duration) / 2 + 2 * lat.MAKER_LOT
            for k in range(math.ceil(lots / lat.MAKER_LOT)):
                await maker_conn.ws.send_message(
                    c.insert_order_message(maker[0], f"pre{k}", "SELL", lat.CROSS_PRICE, lat.MAKER_LOT)
                )
            await trio.sleep(1.0)
            rss: dict[str, int] = {}

            async def sample_rss() -> None:
                procs = {"core": dep.core, "nats": dep.nats} | {
                    f"gateway{i}": g for i, g in enumerate(dep.gateways)
                }
                while True:
                    for name, proc in procs.items():
                        if proc is not None:
                            rss[name] = max(rss.get(name, 0), proc.rss_kb())
                    await trio.sleep(0.5)

            before = await trio.to_thread.run_sync(lambda: c.workers_command(dep.workers, "RESET"))
            cpu0 = cpu_snapshot(dep)
            out["load_before"] = c.load()
            async with trio.open_nursery() as inner:
                inner.start_soon(sample_rss)
                out["flow"] = await lat.run_diff_load(conns, maker_conn, load, tag=route[0].upper())
                inner.cancel_scope.cancel()
            cpu1 = cpu_snapshot(dep)
            after = await trio.to_thread.run_sync(lambda: c.workers_command(dep.workers, "STATS"))
            out["load_after"] = c.load()
            stop.set()
    wall = cpu1["wall"] - cpu0["wall"]
    out["seconds"] = round(wall, 2)
    out["cpu_share"] = {k: round((cpu1[k] - cpu0[k]) / wall, 4) for k in cpu0 if k != "wall"}
    out["cpu_share"]["sessions"] = round(
        (sum(a["cpu"] for a in after) - sum(b["cpu"] for b in before)) / wall, 4
    )
    out["rss_kb_max"] = rss
    out["sessions_frames_per_s"] = round(sum(a["frames"] for a in after) / wall, 1)
    out["sessions_errors"] = sum(a["errors"] for a in after)
    d, ms = out["flow"], out["flow"]["latency_ms"]
    c.say(
        f"  {route}: P50 {c.fmt_ms(ms.get('p50'))} ms, P99 {c.fmt_ms(ms.get('p99'))} ms, "
        f"lost {d['lost']}, unsent {d['unsent']}; CPU {out['cpu_share']}"
    )
    return out


async def check_sessions(dep: Deployment, result: dict[str, Any]) -> None:
    """One crossing order per user (from one of its sessions), then every session's data is checked."""
    import trio

    assert dep.core is not None
    sent = await trio.to_thread.run_sync(
        lambda: c.workers_command(
            dep.workers,
            'ORDERS {"direction": "BUY", "price": %r}' % lat.CROSS_PRICE,  # noqa: UP031
            timeout=dep.args.check_within,  # starved session processes: fail the scenario, within a bound
        )
    )
    result["user_orders_sent"] = sum(s["sent"] for s in sent)
    await trio.sleep(2.0)
    http_url = dep.core.http_url
    volumes = await trio.to_thread.run_sync(
        lambda: {s: ses.quote_volume(http_url, s) for s in c.SESSION_SYMBOLS.split(",")}
    )
    result["final_quote_volume"] = volumes
    expected = {"quote_volume": volumes, "order_prefix": "chk-", "within": dep.args.check_within}
    checks = await trio.to_thread.run_sync(
        lambda: c.workers_command(
            dep.workers, "CHECK " + c._encode(expected).decode(), timeout=dep.args.check_within + 60
        )
    )
    result["checked"] = sum(x["checked"] for x in checks)
    result["complete"] = sum(x["good"] for x in checks)
    result["problems"] = [p for x in checks for p in x["problems"]][:20]


def run_scenario(args: argparse.Namespace, workdir: Path, gateways: int, sessions: int) -> dict[str, Any]:
    import trio

    name = f"g{gateways}-s{sessions}"
    c.say(f"scenario {name}: {gateways} gateway(s), {sessions:,} sessions; load {c.load()}")
    result: dict[str, Any] = {"gateways": gateways, "sessions": sessions, "load_start": c.load()}
    dep = Deployment(args, workdir / name, gateways, sessions)
    try:
        dep.start()
        users = connect_sessions(dep, result)
        assert dep.core is not None
        routes = {"gateway": dep.gateways[0].diff_url} if dep.gateways else {}
        routes["core"] = dep.core.diff_url

        async def flows() -> None:
            result["routes"] = {}
            for route in args.routes:
                if route in routes:
                    result["routes"][route] = await route_flow(dep, route, routes[route])
            if users:
                await check_sessions(dep, result)

        trio.run(flows)
        result["rss_kb_end"] = {
            "core": dep.core.rss_kb(),
            **{f"gateway{i}": g.rss_kb() for i, g in enumerate(dep.gateways)},
        }
    except Exception as exc:
        result["error"] = repr(exc)
        result["logs"] = dep.logs_tail()
        c.say(f"scenario {name} failed: {exc!r}")
    finally:
        result["exit_codes"] = dep.stop()
    result["load_end"] = c.load()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="qaex scale-out: core + nats-server + DIFF gateways + N sessions; order latency and "
        "CPU per process, with and without the sessions",
    )
    parser.add_argument(
        "--gateways", default="1,2", help="gateway counts to run (default 1,2; 0 = sessions on the core)"
    )
    parser.add_argument(
        "--sessions",
        default="0,2000,10000",
        help="session counts to run (default 0,2000,10000; 0 = baseline)",
    )
    parser.add_argument("--routes", default="gateway,core", help="where the orders go (default gateway,core)")
    parser.add_argument("--rate", type=float, default=500, help="orders per second (default 500)")
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per route (default 15)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds sent but not recorded (default 2)")
    parser.add_argument("--takers", type=int, default=4, help="taker users per route (default 4)")
    parser.add_argument("--sessions-per-user", type=int, default=50, help="sessions per user (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="session processes per gateway (default 2)")
    parser.add_argument("--fsync", default="batch", help="the core's QAEX_FSYNC (default batch)")
    parser.add_argument("--connect-timeout", type=float, default=300, help="bound on connecting (300 s)")
    parser.add_argument("--check-within", type=float, default=30, help="seconds for the sessions to converge")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,2 gateways, 0,200 sessions, 200 orders/s, 5 s"
    )
    c.add_output_args(parser, client_rt=False)
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.rate, args.duration, args.warmup = "0,200", 200.0, 5.0, 1.0
    args.gateway_counts = [int(x) for x in str(args.gateways).split(",") if x.strip()]
    args.session_counts = [int(x) for x in str(args.sessions).split(",") if x.strip()]
    args.routes = [r.strip() for r in str(args.routes).split(",") if r.strip()]
    if unknown := set(args.routes) - {"gateway", "core"}:
        parser.error(f"--routes: unknown {sorted(unknown)} (gateway, core)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pinning = c.place_load_generator(args)
    server_core, client_core = args.cores = pinning["server_core"], pinning["client_core"]
    c.raise_nofile(max(args.session_counts, default=0) + 4096)
    result = c.new_result("scaleout", args, argv, pinning=pinning, runs={})
    result["split"] = SPLIT.format(server=server_core, client=client_core) + c.rt_note(pinning)
    c.say(f"load average {result['load_start']}; {result['split']}")
    with c.workdir(args.keep) as workdir:
        for gateways in args.gateway_counts:
            for sessions in args.session_counts:
                result["runs"][f"g{gateways}-s{sessions}"] = run_scenario(args, workdir, gateways, sessions)
                result["summary"] = summarize(result)  # what is done so far, in case the rest never ends
                result["load_end"] = c.load()
                c.write_outputs("scaleout-partial", result, report(result, args), args.out_dir)
    result["load_end"] = c.load()
    result["summary"] = summarize(result)
    markdown = report(result, args)
    print("\n" + markdown)
    c.write_outputs("scaleout", result, markdown, args.out_dir)
    return result


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Against the baseline of the same gateway count and route: core CPU and P99 ratios, gateway CPU
    per 1,000 sessions, and the targets."""
    runs = result["runs"]
    rows = []
    for run in runs.values():
        base = runs.get(f"g{run['gateways']}-s0", {})
        for route, r in run.get("routes", {}).items():
            b = base.get("routes", {}).get(route)
            row: dict[str, Any] = {
                "gateways": run["gateways"],
                "sessions": run["sessions"],
                "route": route,
                "latency_ms": r["flow"]["latency_ms"],
                "lost": r["flow"]["lost"],
                "unsent": r["flow"]["unsent"],
                "cpu_share": r["cpu_share"],
                "rss_kb_max": r["rss_kb_max"],
                "connected": run.get("connected", 0),
                "complete": run.get("complete", 0) if run["sessions"] else 0,
            }
            if b and run["sessions"]:
                p99, p99_0 = r["flow"]["latency_ms"].get("p99"), b["flow"]["latency_ms"].get("p99")
                core, core_0 = r["cpu_share"]["core"], b["cpu_share"]["core"]
                row["core_cpu_ratio"] = round(core / core_0, 3) if core_0 else None
                row["p99_ratio"] = round(p99 / p99_0, 3) if p99 and p99_0 else None
                per_k = {}
                for i, n in enumerate(run.get("connected_per_gateway", [])):
                    key = f"gateway{i}"
                    if n and key in r["cpu_share"] and key in b["cpu_share"]:
                        per_k[key] = round((r["cpu_share"][key] - b["cpu_share"][key]) / (n / 1000), 4)
                row["gateway_cpu_per_1000_sessions"] = per_k
                row["targets_met"] = bool(
                    row["core_cpu_ratio"] is not None
                    and row["core_cpu_ratio"] <= 1.2
                    and row["p99_ratio"] is not None
                    and row["p99_ratio"] <= 1.2
                    and row["connected"] == run["sessions"]
                    and row["complete"] == run["sessions"]
                    and not row["lost"]
                    and not row["unsent"]
                )
            rows.append(row)
    return {"rows": rows}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m = result["machine"]
    lines = [
        f"## Scale-out: core + nats-server + gateways ({m['date']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}; "
        f"{result['split']}. Load average at start {result['load_start']}, at end {result['load_end']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{args.rate:g} orders/s open loop (half crossing) for {args.duration:g} s after {args.warmup:g} s "
        f"warm-up per route, {args.takers} takers; sessions subscribed to {c.SESSION_SYMBOLS}, "
        f"{args.sessions_per_user} per user, peeking after every rtn_data. CPU as a share of one core "
        "during the flow; gateway CPU per 1,000 sessions = (its share − its share with no sessions) "
        "per 1,000 of its sessions.",
        "",
        "| gateways | sessions | route | P50 ms | P99 ms | P99.9 ms | max ms | lost / unsent | core CPU "
        "| gateways' CPU | broker CPU | session procs CPU | gw CPU per 1k sessions | core / gw RSS MB "
        "| core CPU ÷ base | P99 ÷ base | complete |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|---:|---|",
    ]
    for row in result["summary"]["rows"]:
        s, cpu, rss = row["latency_ms"], row["cpu_share"], row["rss_kb_max"]
        gws = [k for k in cpu if k.startswith("gateway")]
        per_k = row.get("gateway_cpu_per_1000_sessions", {})
        rss_text = f"{rss.get('core', 0) / 1024:.0f} / " + ", ".join(
            f"{rss.get(k, 0) / 1024:.0f}" for k in gws
        )
        lines.append(
            f"| {row['gateways']} | {row['sessions']:,} | {row['route']} | "
            + " | ".join(c.fmt_ms(s.get(k)) for k in ("p50", "p99", "p99.9", "max"))
            + f" | {row['lost']} / {row['unsent']} | {cpu['core']:.0%} | "
            + (", ".join(f"{cpu[k]:.0%}" for k in gws) or "–")
            + f" | {cpu['nats']:.0%} | {cpu['sessions']:.0%} | "
            + (", ".join(f"{v:.1%}" for v in per_k.values()) or "–")
            + f" | {rss_text} | "
            + (f"{row['core_cpu_ratio']:.2f}" if row.get("core_cpu_ratio") else "–")
            + " | "
            + (f"{row['p99_ratio']:.2f}" if row.get("p99_ratio") else "–")
            + " | "
            + (f"{row['complete']:,} of {row['connected']:,}" if row["sessions"] else "–")
            + " |"
        )
    lines.append("")
    for name, run in result["runs"].items():
        if run.get("error"):
            lines.append(f"- {name}: **failed**: {run['error']}")
        if run.get("connect_failed"):
            lines.append(
                f"- {name}: {run['connect_failed']} sessions failed to connect: {run['connect_failures'][:3]}"
            )
        if run.get("problems"):
            lines.append(f"- {name}: incomplete sessions (first few): {'; '.join(run['problems'][:5])[:800]}")
        if run.get("sessions"):
            lines.append(
                f"- {name}: {run.get('connected', 0):,} of {run['sessions']:,} connected in "
                f"{run.get('connect_s')} s; {run.get('complete', 0):,} of {run.get('checked', 0):,} with "
                f"complete data (account, full quotes, final volumes, own order filled)."
            )
    verdicts = [r for r in result["summary"]["rows"] if "targets_met" in r]
    if verdicts:
        lines.append("")
        for r in verdicts:
            lines.append(
                f"- Target ({r['gateways']} gateway(s), {r['sessions']:,} sessions, "
                f"orders via {r['route']}): "
                f"core CPU ÷ base {r.get('core_cpu_ratio')}, P99 ÷ base {r.get('p99_ratio')} (both ≤ 1.2), "
                f"all complete: **{'met' if r['targets_met'] else 'missed'}**."
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
