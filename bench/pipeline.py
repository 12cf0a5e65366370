"""In-process throughput of the DIFF engine: router -> engine -> gateway -> snapshot manager -> sessions.

No network: this measures the exchange's own cost per order. 1,000 users (by default) each have one
logged-in DIFF session that keeps a peek outstanding; submitter tasks send a realistic mix of limit
orders (about half of them crossing) and cancels through the same `Exchange` API the transports use.
Reported: orders/s, trades/s, patches/s merged (each into the user's snapshot and into the
pending buffer of the user's session), and rtn_data frames/s encoded. A "patch" here is what the
gateway sends: one per user per router batch, holding every record of that user the batch changed.
The original design counts one patch per changed record instead (a fill pushes a trade patch, an
order patch, an account patch, ...: ORIGINAL-DESIGN.zh.md §4.2), so records merged/s is reported too.

Two ways of submitting are measured: `await` (each submitter waits for its order's result before
sending the next, as an HTTP client does) and `pipelined` (submitters queue orders and are told the
outcome by a callback, as the DIFF server does for a session's insert_order messages). The same run
also measures two baselines: the bare engine (apply + flush, no trio services) on the same order
stream, so the services' overhead is a ratio that a noisy machine cannot fake, and the router alone
(a no-op engine: what trio and the router cost per command, the floor of any pipeline here).
The garbage collector runs as the server runs it (qaex.gc_policy: timed young collections and a
count-based backstop; --gc-interval 0 --gc-threshold 0 for CPython's own).

    python -m bench.pipeline --help
    python -m bench.pipeline --users 1000 --orders 100000
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import trio
import trio.testing

from qaex import gc_policy
from qaex.core.commands import Cancel, Insert, MarkToMarket, OpenAccount
from qaex.core.engine import Batch, Engine
from qaex.core.errors import QaexError
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.router import OrderRouter, Request
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.session import DiffSession

SYMBOLS = ["SHFE.rb2601", "DCE.m2601", "CZCE.SR601", "SHFE.cu2601"]
PEEK = b'{"aid":"peek_message"}'


@dataclass
class Step:
    kind: str  # "insert" or "cancel"
    user: str
    order_id: str
    symbol: str = ""
    direction: str = "BUY"
    price: float = 0.0
    volume: int = 1


def workload(users: int, orders: int, seed: int, engine: Engine) -> list[Step]:
    """≈ 75 % inserts (half of them priced to cross) and 25 % cancels of earlier orders."""
    rng = random.Random(seed)
    steps: list[Step] = []
    live: list[tuple[str, str]] = []
    counter = itertools.count()
    while len(steps) < orders:
        if live and rng.random() < 0.25:
            user, order_id = live.pop(rng.randrange(len(live)))
            steps.append(Step("cancel", user, order_id))
            continue
        symbol = rng.choice(SYMBOLS)
        instrument = engine.instruments[symbol]
        mid = instrument.pre_settlement
        buy = rng.random() < 0.5
        crossing = rng.random() < 0.5
        offset_ticks = rng.randint(0, 3) if crossing else rng.randint(1, 10)
        sign = 1 if buy == crossing else -1
        price = instrument.from_ticks(instrument.to_ticks(mid) + sign * offset_ticks)  # type: ignore[operator]
        user = f"u{rng.randrange(users)}"
        order_id = f"o{next(counter)}"
        steps.append(
            Step("insert", user, order_id, symbol, "BUY" if buy else "SELL", price, rng.randint(1, 3))
        )
        live.append((user, order_id))
    return steps


def to_request(step: Step) -> InsertOrder:
    exchange_id, instrument_id = step.symbol.split(".")
    return InsertOrder(
        user_id=step.user,
        order_id=step.order_id,
        exchange_id=exchange_id,
        instrument_id=instrument_id,
        direction=step.direction,  # type: ignore[arg-type]
        offset="OPEN",
        volume=step.volume,
        limit_price=step.price,
    )


class _NullEngine:
    """An engine that does nothing: what the router and trio cost per command on their own."""

    def apply(self, command: Any) -> None:
        return None

    def flush(self) -> Batch:
        return Batch()


async def router_floor(commands: int, submitters: int, mode: str) -> float:
    """Second baseline: commands/s through the OrderRouter alone (no-op engine, no patches)."""
    batches, _ = trio.open_memory_channel[Batch](1)
    router = OrderRouter(_NullEngine(), batches)  # type: ignore[arg-type]
    command = MarkToMarket(ts=0)
    left = commands

    def done(request: Request) -> None:
        pass

    async def submitter() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if mode == "await":
                await router.execute(command)
            else:
                await router.submit(command, done)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        start = time.perf_counter()
        async with trio.open_nursery() as load:
            for _ in range(submitters):
                load.start_soon(submitter)
        await trio.testing.wait_all_tasks_blocked()
        seconds = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return commands / seconds


def _engine_with_accounts(users: int) -> tuple[Engine, Batch]:
    """A fresh engine with the users' accounts open, and the batch that opened them."""
    engine = Engine()
    for i in range(users):
        engine.apply(OpenAccount(ts=i + 1, user_id=f"u{i}", password_hash="x", init_cash=1e12))
    return engine, engine.flush()


def _flushes(engine: Engine, steps: list[Step], batch: int) -> Iterator[Batch]:
    """Apply the stream to the engine, flushing (and yielding the batch) every `batch` commands."""
    ts = 10**18
    for index, step in enumerate(steps):
        ts += 1000
        try:
            if step.kind == "insert":
                engine.apply(Insert(ts=ts, order=to_request(step)))
            else:
                engine.apply(Cancel(ts=ts, user_id=step.user, order_id=step.order_id))
        except QaexError:
            pass
        if index % batch == batch - 1:
            yield engine.flush()
    yield engine.flush()


def bare_engine(users: int, steps: list[Step], batch: int, freeze: bool = True) -> float:
    """Baseline: the same stream through Engine.apply + flush only (no trio, no patches). Orders/s."""
    engine, _ = _engine_with_accounts(users)
    if freeze:  # what the server does once its state is loaded (qaex.gc_policy)
        gc_policy.freeze_loaded_state()
    start = time.perf_counter()
    for _ in _flushes(engine, steps, batch):
        pass
    seconds = time.perf_counter() - start
    gc.unfreeze()
    return len(steps) / seconds


def recorded_batches(users: int, steps: list[Step], batch: int) -> tuple[Batch, list[Batch]]:
    """What the engine hands the gateway for this stream, `batch` commands per flush (untimed).

    Returns the batch that opens the accounts and then one batch per `batch` commands.
    """
    engine, opening = _engine_with_accounts(users)
    return opening, list(_flushes(engine, steps, batch))


async def services_floor(
    users: int,
    commands: int,
    recorded: tuple[Batch, list[Batch]],
    freeze: bool = True,
    gc_interval: float = gc_policy.DEFAULT_INTERVAL,
) -> float:
    """Third baseline: orders/s through gateway -> snapshot manager -> sessions with no engine work.

    The engine's batches for the same stream are recorded beforehand (`recorded_batches`) and fed to
    the gateway's channel as the router would send them, so what is timed is everything after the
    engine: diffing into patches, fan-out, session buffers, rtn_data encoding, trio's task switches.
    No engine, however fast, can take the pipeline past this.
    """
    opening, batches = recorded
    exchange = Exchange(Engine())
    feed = exchange.router._batches  # the router's end of the gateway channel; the router stays idle
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        if gc_interval > 0:
            await nursery.start(gc_policy.collect_on_timer, gc_interval)
        await feed.send(opening)
        async with trio.open_nursery() as clients:
            await _attach_sessions(exchange, users, clients, lambda: None)
            if freeze:  # as the other runs do; the recorded batches are frozen with the rest
                gc_policy.freeze_loaded_state()
            start = time.perf_counter()
            for batch in batches:
                await feed.send(batch)
            await trio.testing.wait_all_tasks_blocked()
            seconds = time.perf_counter() - start
            clients.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    gc.unfreeze()
    return commands / seconds


async def _attach_sessions(
    exchange: Exchange, users: int, nursery: trio.Nursery, on_frame: Callable[[], None]
) -> None:
    """Log one DIFF session in per user, each run by a task that peeks again after every rtn_data."""
    await trio.testing.wait_all_tasks_blocked()  # the accounts' patches are in the trees
    links: list[SessionLink] = []
    for i in range(users):
        link = SessionLink(DiffSession(i + 1))
        exchange.snapshots.add(link)
        exchange.snapshots.login(link, f"u{i}")
        link.session.receive(PEEK)
        links.append(link)

    async def client(link: SessionLink) -> None:
        # What a session's writer plus a fast client do: send rtn_data, get the next peek.
        while True:
            await link.wait()
            if link.session.resync_needed and link.session.user_id is not None:
                link.session.reset([exchange.snapshots.full_view(link.session.user_id)])
            if link.session.data_to_send() is not None:
                on_frame()
                link.session.receive(PEEK)

    for link in links:
        nursery.start_soon(client, link)
    await trio.testing.wait_all_tasks_blocked()


@dataclass
class PipelineResult:
    orders_per_s: float
    trades_per_s: float
    patches_merged_per_s: float
    records_merged_per_s: float
    rtn_data_per_s: float
    commands_per_batch: float
    seconds: float


async def pipeline(
    users: int,
    steps: list[Step],
    submitters: int,
    mark_interval: float = 0.5,
    mode: str = "await",
    freeze: bool = True,
    gc_interval: float = gc_policy.DEFAULT_INTERVAL,
) -> PipelineResult:
    engine = Engine()
    exchange = Exchange(engine, mark_interval=mark_interval)
    frames = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        if gc_interval > 0:  # as the server runs it (qaex.app)
            await nursery.start(gc_policy.collect_on_timer, gc_interval)
        for i in range(users):
            # Opening through the router (the real path) but without scrypt: the bench is about orders.
            await exchange.router.execute(
                lambda ts, i=i: OpenAccount(ts=ts, user_id=f"u{i}", password_hash="x", init_cash=1e12)
            )

        def frame() -> None:
            nonlocal frames
            frames += 1

        async with trio.open_nursery() as clients:
            await _attach_sessions(exchange, users, clients, frame)
            merged_before = exchange.snapshots.patches_merged
            records_before = exchange.gateway.records_sent
            trades_before = engine.trades_made
            flushes_before = exchange.router.batches_flushed
            frames = 0
            queue = iter(steps)

            async def submitter() -> None:
                for step in queue:
                    try:
                        if step.kind == "insert":
                            await exchange.insert_order(to_request(step))
                        else:
                            await exchange.cancel_order(step.user, step.order_id)
                    except QaexError:
                        pass

            outstanding = 0

            def done(request: Request) -> None:
                nonlocal outstanding
                outstanding -= 1

            async def pipelined_submitter() -> None:
                # What the DIFF server's reader does: queue the command, hear the outcome later.
                nonlocal outstanding
                for step in queue:
                    outstanding += 1
                    if step.kind == "insert":
                        await exchange.submit_insert_order(to_request(step), done)
                    else:
                        await exchange.submit_cancel_order(step.user, step.order_id, done)

            if freeze:  # as bare_engine does
                gc_policy.freeze_loaded_state()
            start = time.perf_counter()
            async with trio.open_nursery() as load:
                for _ in range(submitters):
                    load.start_soon(submitter if mode == "await" else pipelined_submitter)
            await trio.testing.wait_all_tasks_blocked()
            assert outstanding == 0
            seconds = time.perf_counter() - start
            clients.cancel_scope.cancel()
        merged = exchange.snapshots.patches_merged - merged_before
        records = exchange.gateway.records_sent - records_before
        flushes = exchange.router.batches_flushed - flushes_before
        nursery.cancel_scope.cancel()
    gc.unfreeze()
    return PipelineResult(
        orders_per_s=len(steps) / seconds,
        trades_per_s=(engine.trades_made - trades_before) / seconds,
        patches_merged_per_s=merged / seconds,
        records_merged_per_s=records / seconds,
        rtn_data_per_s=frames / seconds,
        commands_per_batch=len(steps) / max(flushes, 1),
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000, help="users, each with one logged-in session")
    parser.add_argument("--orders", type=int, default=50_000, help="orders and cancels per repeat")
    parser.add_argument("--submitters", type=int, default=64, help="concurrent submitting tasks")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mark-interval", type=float, default=0.5, help="seconds between mark passes")
    parser.add_argument(
        "--mode", choices=["await", "pipelined", "both"], default="both",
        help="await: each submitter waits for its result (HTTP); pipelined: queue and get a callback (DIFF)",
    )  # fmt: skip
    parser.add_argument(
        "--gc-threshold", type=int, default=gc_policy.DEFAULT_THRESHOLD,
        help="young-generation GC threshold, as QAEX_GC_THRESHOLD (0: CPython's default, no freeze)",
    )  # fmt: skip
    parser.add_argument(
        "--gc-interval", type=float, default=gc_policy.DEFAULT_INTERVAL,
        help="seconds between timed young collections, as QAEX_GC_INTERVAL (0: none)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()
    gc_policy.tune(args.gc_threshold)
    freeze = args.gc_threshold != 0  # 0: CPython's GC as it comes, no freeze either

    steps = workload(args.users, args.orders, args.seed, Engine())
    modes = ["await", "pipelined"] if args.mode == "both" else [args.mode]
    runs: dict[str, list[PipelineResult]] = {mode: [] for mode in modes}
    floors: dict[str, list[float]] = {mode: [] for mode in modes}
    services: dict[str, list[float]] = {mode: [] for mode in modes}
    baselines: list[float] = []
    for attempt in range(args.repeat):
        # Interleaved, so that a machine that slows down mid-run slows every column alike.
        baselines.append(bare_engine(args.users, steps, 64, freeze))
        line = [f"run {attempt + 1}/{args.repeat}: bare engine {baselines[-1]:,.0f} orders/s"]
        for mode in modes:
            runs[mode].append(
                trio.run(
                    pipeline,
                    args.users,
                    steps,
                    args.submitters,
                    args.mark_interval,
                    mode,
                    freeze,
                    args.gc_interval,
                )
            )
            floors[mode].append(trio.run(router_floor, len(steps), args.submitters, mode))
            # The engine's batches, cut as this mode's router cut them, replayed without the engine.
            recorded = recorded_batches(args.users, steps, round(runs[mode][-1].commands_per_batch))
            services[mode].append(
                trio.run(services_floor, args.users, len(steps), recorded, freeze, args.gc_interval)
            )
            del recorded
            line.append(
                f"{mode} {runs[mode][-1].orders_per_s:,.0f} orders/s (router alone {floors[mode][-1]:,.0f},"
                f" services alone {services[mode][-1]:,.0f})"
            )
        print(", ".join(line))

    def median(mode: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs[mode])

    bare = statistics.median(baselines)
    summary: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "users": args.users,
        "orders": args.orders,
        "submitters": args.submitters,
        "gc_threshold": gc.get_threshold(),
        "gc_interval": args.gc_interval,
        "pipeline": {mode: {f: median(mode, f) for f in asdict(runs[mode][0])} for mode in modes},
        "bare_engine_orders_per_s": bare,
    }
    for mode in modes:
        summary["pipeline"][mode]["vs_bare_engine"] = summary["pipeline"][mode]["orders_per_s"] / bare
        summary["pipeline"][mode]["router_alone_per_s"] = statistics.median(floors[mode])
        summary["pipeline"][mode]["services_alone_orders_per_s"] = statistics.median(services[mode])
    print()
    print(f"| measure (median of {args.repeat}) | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    extra = ["vs_bare_engine", "router_alone_per_s", "services_alone_orders_per_s"]
    for field in [*asdict(runs[modes[0]][0]), *extra]:
        values = [summary["pipeline"][mode][field] for mode in modes]
        fmt = "{:,.1f}" if field in ("seconds", "commands_per_batch") else "{:,.0f}"
        fmt = "{:,.2f}" if field == "vs_bare_engine" else fmt
        print(f"| {field} | " + " | ".join(fmt.format(v) for v in values) + " |")
    print(f"| bare engine orders/s (baseline, same run, no trio) | {bare:,.0f} |" + " |" * (len(modes) - 1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
