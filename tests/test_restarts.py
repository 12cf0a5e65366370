"""Restarts never crash-loop (issue #13): 20 restarts of the real server with the market maker on.

One data directory, one server after another, each started the way the README starts it (conftest's
``launch``), the seed rotating through 1, 2, 3 and a random one. Each server must be up and trading
within ``UP_WITHIN`` seconds of its start:

* ``/health`` answers;
* every order acknowledged before any earlier stop is still there, in the acknowledged state or a
  later one (an order that was finished stays finished, with the same volume left);
* a user's market order fills against the market maker.

Then it trades (resting orders, cancels, market orders) and is stopped at a random moment 0-2 s later,
alternately with SIGTERM and with kill -9 of every process of the server (hypercorn and its worker, as a
container runtime or the OOM killer would). Every second restart is preceded by an interrupted start:
a server stopped (kill -9 and SIGTERM in turn) 0-1.5 s after its launch, usually in the middle of its
start-up (recovery, the market maker's first put-up, its first steps).

Before the fix the market maker's taker issued an order id of the day again after a restart; the
duplicate-id RiskError escaped the simulator and the server exited about a second after it started.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import STOP_TIMEOUT, Server, User, launch, open_user, wait_ready
from test_crash import relogin

CYCLES = 20
UP_WITHIN = 5.0  # seconds from a server's launch to up and trading
SEEDS = ("1", "2", "3", "")  # QAEX_SEED; "" = a random seed
ENV = {
    "QAEX_MARKET_MAKER": "1",
    "QAEX_MARKET_MAKER_INTERVAL": "0.3",  # busier than the default 1.25 s: more of the taker's ids
    "QAEX_MAX_ORDERS_PER_SECOND": "0",
}
INIT_CASH = 1e9


# -- the processes of a server -----------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def children(pid: int) -> dict[int, str]:
    """The running children of `pid`: pid -> start time (which tells a pid from a reused one)."""
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid) and fields[0] != "Z":
                found[int(entry.name)] = fields[19]
    return found


def running(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def stop(server: Server, sig: signal.Signals) -> int:
    """SIGTERM hypercorn, or SIGKILL it and its workers; returns hypercorn's exit code.

    hypercorn is held (SIGSTOP) while its children are listed, so it cannot spawn one unseen. A
    process of the server still running afterwards is killed: a SIGTERM that arrives before hypercorn
    installed its handler ends hypercorn alone and would leave its worker behind, holding the data
    directory.
    """
    for client in server.clients:
        client.close()  # an idle keep-alive connection would hold hypercorn's graceful stop for 3 s
    process = server.process
    workers: dict[int, str] = {}
    if process.poll() is None:
        os.kill(process.pid, signal.SIGSTOP)
        workers = children(process.pid)
        if sig == signal.SIGKILL:
            for pid, started in workers.items():
                if running(pid, started):
                    os.kill(pid, signal.SIGKILL)
            os.kill(process.pid, signal.SIGKILL)
        else:
            os.kill(process.pid, sig)
            os.kill(process.pid, signal.SIGCONT)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 2.0
    for pid, started in workers.items():
        while running(pid, started) and time.monotonic() < deadline:
            time.sleep(0.02)
        if running(pid, started):
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.kill(pid, signal.SIGKILL)
    for pid, started in workers.items():
        for _ in range(250):  # 5 s
            if not running(pid, started):
                break
            time.sleep(0.02)
    return process.returncode


# -- a user's orders ---------------------------------------------------------------------------------------
class Ledger:
    """What the user was told: the last answer about each order."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.resting: list[str] = []  # ALIVE when answered, not cancelled yet

    def record(self, answer: httpx.Response) -> dict[str, Any]:
        if answer.status_code == 422:  # refused, but an order all the same: FINISHED
            order: dict[str, Any] = answer.json()["order"]
        else:
            assert answer.status_code == 200, answer.text
            order = answer.json()
        self.orders[order["order_id"]] = order
        return order

    def check(self, user: User) -> None:
        """Every acknowledged order is there, in its acknowledged state or a later one."""
        answer = user.get("/api/orders")
        assert answer.status_code == 200, answer.text
        now = answer.json()["orders"]
        for order_id, acked in self.orders.items():
            found = now.get(order_id)
            assert found is not None, f"acknowledged order {order_id} is lost: {acked}"
            assert found["volume_left"] <= acked["volume_left"], (acked, found)
            if acked["status"] == "FINISHED":
                assert found["status"] == "FINISHED", (acked, found)
                assert found["volume_left"] == acked["volume_left"], (acked, found)


def market(symbol: str, direction: str, order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "instrument_id": symbol, "direction": direction, "offset": "OPEN",
            "volume": 1, "order_type": "MARKET"}  # fmt: skip


async def trade(
    server: Server, user: User, ledger: Ledger, tag: str, rng: random.Random, low: dict[str, float]
) -> None:
    """Resting bids at the lower limit (below every ask, so never the other side of a market buy),
    cancels of them, market orders; until the server goes away."""
    headers = {"Authorization": f"Bearer {user.token}", "Connection": "close"}  # see stop()
    symbols = sorted(low)
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=5) as client:
        try:
            for n in range(10_000):
                symbol = rng.choice(symbols)
                roll = rng.random()
                if roll < 0.3 and ledger.resting:
                    order_id = ledger.resting.pop(rng.randrange(len(ledger.resting)))
                    answer = await client.post("/api/order/cancel", json={"order_id": order_id})
                    if answer.status_code != 200:  # filled meanwhile (the taker sells at the best bid)
                        assert answer.json()["error"]["code"] == "order_finished", answer.text
                        continue
                elif roll < 0.6:
                    answer = await client.post(
                        "/api/order/submit",
                        json={"order_id": f"{tag}-{n}", "instrument_id": symbol, "direction": "BUY",
                              "offset": "OPEN", "volume": 1, "price": low[symbol]},
                    )  # fmt: skip
                else:
                    direction = rng.choice(("BUY", "SELL"))
                    answer = await client.post(
                        "/api/order/submit", json=market(symbol, direction, f"{tag}-{n}")
                    )
                order = ledger.record(answer)
                if order["status"] == "ALIVE":
                    ledger.resting.append(order["order_id"])
                await trio.sleep(0.01)  # a steady trickle, not a benchmark: the machine is shared
        except httpx.TransportError:
            return  # the server went away: this request's outcome is unknown, and that is allowed


# -- the test ---------------------------------------------------------------------------------------------
def first_user(server: Server) -> tuple[User, dict[str, float]]:
    """The test's user, and each contract's lower price limit (where its resting bids go)."""
    user = open_user(server, init_cash=INIT_CASH)
    instruments = httpx.get(server.http_url + "/api/market/instruments").json()["instruments"]
    return user, {symbol: spec["lower_limit"] for symbol, spec in instruments.items()}


def up_and_trading(server: Server, user: User, ledger: Ledger, order_id: str, symbol: str) -> None:
    """Nothing acknowledged is lost, and a market order fills against the market maker."""
    ledger.check(user)
    filled = ledger.record(user.post("/api/order/submit", market(symbol, "BUY", order_id)))
    assert filled["volume_left"] == 0, (filled, server.log())


def serious(log: str) -> list[str]:
    """Lines of a server log that mean something went wrong inside (a crash, a simulator failure)."""
    return [
        line
        for line in log.splitlines()
        if "CRITICAL" in line or "Traceback" in line or ("liquidity simulator:" in line and "failed" in line)
    ]


async def test_twenty_restarts_with_the_market_maker_never_crash_loop(tmp_path: Path) -> None:
    run_seed = random.randrange(1 << 32)
    rng = random.Random(run_seed)
    data_dir = tmp_path / "data"
    ledger = Ledger()
    history: list[str] = [f"test seed {run_seed}"]
    user: User | None = None
    low: dict[str, float] = {}
    server: Server | None = None
    try:
        for cycle in range(CYCLES):
            env = ENV | {"QAEX_SEED": SEEDS[cycle % len(SEEDS)]}
            sig = signal.SIGTERM if cycle % 2 == 0 else signal.SIGKILL
            if cycle % 2 == 1:  # an interrupted start: stopped whatever it is doing
                early_sig = signal.SIGKILL if cycle % 4 == 1 else signal.SIGTERM
                server = launch(tmp_path, data_dir=data_dir, extra_env=env)
                delay = rng.uniform(0, 1.5)
                await trio.sleep(delay)
                code = stop(server, early_sig)
                tracebacks = serious(server.log())
                history.append(
                    f"{cycle}: interrupted start, {early_sig.name} after {delay:.2f} s, exit {code}"
                    + (f", {len(tracebacks)} serious log lines" if tracebacks else "")
                )
                assert not [line for line in serious(server.log()) if "Traceback" not in line], (
                    history,
                    server.log(),
                )
                server = None

            server = launch(tmp_path, data_dir=data_dir, extra_env=env)
            launched = time.monotonic()
            wait_ready(server, timeout=UP_WITHIN)  # fails with the server's log
            if user is None:
                user, low = first_user(server)
            else:
                user = relogin(server, user)
            up_and_trading(server, user, ledger, f"m{cycle}", rng.choice(sorted(low)))
            up = time.monotonic() - launched
            assert up <= UP_WITHIN, (history, up)

            delay = rng.uniform(0, 2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trade, server, user, ledger, f"c{cycle}", random.Random(rng.random()), low)
                await trio.sleep(delay)
                alive = server.process.poll() is None
                stopping = time.monotonic()
                code = await trio.to_thread.run_sync(stop, server, sig)
                nursery.cancel_scope.cancel()
            history.append(
                f"{cycle}: seed {env['QAEX_SEED'] or 'random'}, up and trading in {up:.2f} s, "
                f"{sig.name} after {delay:.2f} s more, exit {code} in {time.monotonic() - stopping:.2f} s, "
                f"{len(ledger.orders)} orders acknowledged"
            )
            assert alive, ("the server ended by itself", history, server.log())
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), (history, server.log())
            assert serious(server.log()) == [], (history, server.log())
            server = None

        # And the last stop, too, left everything there.
        server = launch(tmp_path, data_dir=data_dir, extra_env=ENV)
        wait_ready(server, timeout=UP_WITHIN)
        assert user is not None
        ledger.check(relogin(server, user))
        assert stop(server, signal.SIGTERM) == 0, server.log()
        assert serious(server.log()) == [], server.log()
        server = None
        print("\n".join(history))
    finally:
        if server is not None:
            stop(server, signal.SIGKILL)
