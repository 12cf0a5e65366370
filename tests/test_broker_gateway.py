"""A core with a broker, a real nats-server and a DIFF gateway process (``qaex gateway``): trading
through the gateway gives the same trade tree as a session on the core itself (embedded mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import NatsServer, Server, free_port, launch, open_user, wait_ready

from qaex.client import DiffClient
from qaex.exchange.nats_client import NatsClient

CU = "SHFE.cu2601"
EXCHANGE_ID = "t1"


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    diff_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_gateway(
    workdir: Path, core: Server, broker: NatsServer, port: int | None = None, args: tuple[str, ...] = ()
) -> Gateway:
    port = port or free_port()
    env = dict(core.env)
    env.update(QAEX_LOG="info")
    log_path = workdir / f"gateway-{port}-{len(list(workdir.glob(f'gateway-{port}*')))}.log"
    command = [
        sys.executable,
        "-m",
        "qaex",
        "gateway",
        "--broker",
        broker.url,
        "--diff-port",
        str(port),
        *args,
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT)
    gateway = Gateway(process, f"ws://127.0.0.1:{port}/ws/diff", log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.log()}")
        if (
            "DIFF listening" in gateway.log()
        ):  # its own listener (with --reuse-port the port may be open already)
            return gateway
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"gateway not ready:\n{gateway.log()}")


@dataclass
class Deployment:
    broker: NatsServer
    core: Server
    gateway: Gateway


@pytest.fixture
def deployment(
    nats_server: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    # qaex serve: one process (hypercorn's CLI has a supervisor and a worker; SIGSTOP must reach the core)
    core = launch(
        tmp_path, extra_env={"QAEX_BROKER": nats_server.url, "QAEX_EXCHANGE_ID": EXCHANGE_ID}, serve=True
    )
    wait_ready(core)
    gateway = start_gateway(tmp_path, core, nats_server)
    failed = request.session.testsfailed
    running = Deployment(nats_server, core, gateway)
    try:
        yield running
    finally:
        gateway, core = running.gateway, running.core  # a test may have replaced them
        code_g = gateway.stop()
        code_c = core.stop()
        if request.session.testsfailed > failed or code_g != 0 or code_c != 0:
            print(f"\n--- core log ({code_c}) ---\n{core.log()}", file=sys.stderr)
            print(f"\n--- gateway log ({code_g}) ---\n{gateway.log()}", file=sys.stderr)
    assert code_g == 0 and code_c == 0


def has_trade(client: DiffClient, order_id: str) -> bool:
    return any(t.get("order_id") == order_id for t in client.trade().get("trades", {}).values())


def view(client: DiffClient, ignore_orders: tuple[str, ...]) -> dict[str, Any]:
    tree = dict(client.trade())
    tree["orders"] = {k: v for k, v in tree.get("orders", {}).items() if k not in ignore_orders}
    return tree


def same_trees(a: DiffClient, b: DiffClient, ignore_orders: tuple[str, ...] = ()) -> bool:
    return bool(a.trade()) and view(a, ignore_orders) == view(b, ignore_orders)


def first_error_since(seen: int) -> Any:
    """A wait_for predicate: the first ERROR notify after the client's first `seen` notifies."""

    def first(client: DiffClient) -> dict[str, Any] | None:
        return next((n for n in client.notifies[seen:] if n.get("level") == "ERROR"), None)

    return first


async def converge(
    a: DiffClient, b: DiffClient, within: float = 10.0, ignore_orders: tuple[str, ...] = ()
) -> None:
    """Wait until both hold the same trade tree; show the difference if they never do.

    `ignore_orders`: orders refused as a whole, which only the refused session shows (finished by
    DiffSession.order_refused, as in one process), never the exchange's tree."""
    deadline = trio.current_time() + within
    while not same_trees(a, b, ignore_orders):  # both change: look at them in turn (wait_for watches one)
        if trio.current_time() > deadline:
            assert view(a, ignore_orders) == view(b, ignore_orders)
        await trio.sleep(0.05)


async def test_trading_through_a_gateway_gives_the_embedded_tree(deployment: Deployment) -> None:
    alice, bob = open_user(deployment.core), open_user(deployment.core)
    gw_url, core_url = deployment.gateway.diff_url, deployment.core.diff_url
    async with (
        DiffClient.connect(gw_url) as a,
        DiffClient.connect(core_url) as a_embedded,
        DiffClient.connect(gw_url) as b,
    ):
        assert not await a.login(alice.user_id, "wrong-password")  # checked by the core
        assert await a.login(alice.user_id, alice.password)
        assert await a_embedded.login(alice.user_id, alice.password)
        assert await b.login(bob.user_id, bob.password)
        await b.insert_order("s1", CU, "SELL", "OPEN", 3, 86010.0)
        await b.wait_for(lambda c: c.order("s1").get("status") == "ALIVE")
        await a.insert_order("b1", CU, "BUY", "OPEN", 2, 86010.0)
        await a.wait_for(lambda c: c.order("b1").get("status") == "FINISHED" and has_trade(c, "b1"))
        await b.wait_for(lambda c: c.order("s1").get("volume_left") == 1)
        await b.cancel_order("s1")
        await b.wait_for(lambda c: c.order("s1").get("status") == "FINISHED")
        assert any(n.get("code") == 419 for n in b.notifies)  # the cancel's notify came through
        # a refusal (a duplicate order id) comes back as the router's error notify
        seen = len(a.notifies)
        await a.insert_order("b1", CU, "BUY", "OPEN", 1, 86010.0)
        await a.wait_for(lambda c: any(n.get("level") == "ERROR" for n in c.notifies[seen:]))
        # transfers through the gateway
        await a.send({"aid": "req_transfer", "currency": "CNY", "amount": 1000.0, "bank_id": "qaex",
                      "bank_password": "", "future_account": alice.user_id, "future_password": ""})  # fmt: skip
        await a.wait_for(lambda c: len(c.trade().get("transfers", {})) == 1)
        await converge(a, a_embedded)
        assert a.position(CU)["volume_long"] == 2
        # a second session on the same gateway starts from the gateway's tree
        async with DiffClient.connect(gw_url) as a2:
            assert await a2.login(alice.user_id, alice.password)
            await converge(a2, a_embedded)


async def test_broker_down_refuses_orders_then_recovers(deployment: Deployment) -> None:
    alice = open_user(deployment.core)
    async with (
        DiffClient.connect(deployment.gateway.diff_url) as a,
        DiffClient.connect(deployment.core.diff_url) as a_embedded,
    ):
        assert await a.login(alice.user_id, alice.password)
        assert await a_embedded.login(alice.user_id, alice.password)
        await trio.to_thread.run_sync(deployment.broker.stop)
        await trio.sleep(0.5)
        seen = len(a.notifies)
        await a.insert_order("x1", CU, "BUY", "OPEN", 1, 80000.0)

        note = await a.wait_for(first_error_since(seen))
        assert "broker" in note["content"]
        # meanwhile the core goes on (an order from its own session)
        await a_embedded.insert_order("e1", CU, "BUY", "OPEN", 1, 80000.0)
        await a_embedded.wait_for(lambda c: c.order("e1").get("status") == "ALIVE")
        await trio.to_thread.run_sync(deployment.broker.start)
        # the gateway reconnects, resyncs its users, and orders go again
        await a.wait_for(lambda c: c.order("e1").get("status") == "ALIVE", within=20)
        await a.insert_order("x2", CU, "BUY", "OPEN", 1, 80000.0)
        await a.wait_for(lambda c: c.order("x2").get("status") == "ALIVE")
        assert a.order("x1")["status"] == "FINISHED"  # refused while the broker was down
        await converge(a, a_embedded, ignore_orders=("x1",))


async def test_core_restart_resyncs_the_gateway(deployment: Deployment, tmp_path: Path) -> None:
    """A new core (same data directory) has a new epoch: the gateway resyncs its users' sessions."""
    alice = open_user(deployment.core)
    async with DiffClient.connect(deployment.gateway.diff_url) as a:
        assert await a.login(alice.user_id, alice.password)
        await a.insert_order("r1", CU, "BUY", "OPEN", 1, 80000.0)
        await a.wait_for(lambda c: c.order("r1").get("status") == "ALIVE")
        await trio.to_thread.run_sync(deployment.core.stop)
        restarted = launch(
            tmp_path,
            data_dir=deployment.core.data_dir,
            extra_env={"QAEX_BROKER": deployment.broker.url, "QAEX_EXCHANGE_ID": EXCHANGE_ID},
        )
        deployment.core = restarted
        await trio.to_thread.run_sync(wait_ready, restarted)
        await a.insert_order("r2", CU, "BUY", "OPEN", 1, 80000.0)
        await a.wait_for(lambda c: c.order("r2").get("status") == "ALIVE", within=20)
        async with DiffClient.connect(restarted.diff_url) as embedded:
            assert await embedded.login(alice.user_id, alice.password)
            await converge(a, embedded)


async def test_two_gateways_one_user_on_both_and_one_killed(deployment: Deployment, tmp_path: Path) -> None:
    """Each gateway's session gets everything; a gateway killed mid-flow: its client logs in on the
    other one and gets the whole tree, orders made meanwhile included."""
    second = start_gateway(tmp_path, deployment.core, deployment.broker)
    try:
        alice, bob = open_user(deployment.core), open_user(deployment.core)
        async with (
            DiffClient.connect(deployment.gateway.diff_url) as one,
            DiffClient.connect(second.diff_url) as two,
            DiffClient.connect(deployment.core.diff_url) as embedded,
            DiffClient.connect(second.diff_url) as b,
        ):
            for client in (one, two, embedded):
                assert await client.login(alice.user_id, alice.password)
            assert await b.login(bob.user_id, bob.password)
            await b.insert_order("s", CU, "SELL", "OPEN", 5, 86000.0)
            await b.wait_for(lambda c: c.order("s").get("status") == "ALIVE")
            for i in range(5):
                await (one if i % 2 else two).insert_order(f"b{i}", CU, "BUY", "OPEN", 1, 86000.0)
            for client in (one, two):
                await client.wait_for(lambda c: all(has_trade(c, f"b{i}") for i in range(5)))
                await converge(client, embedded)
            os.kill(deployment.gateway.process.pid, signal.SIGKILL)  # mid-flow: `one` loses its gateway
            deployment.gateway.process.wait()
            await two.insert_order("after", CU, "BUY", "OPEN", 1, 85000.0)
            await two.wait_for(lambda c: c.order("after").get("status") == "ALIVE")
            async with DiffClient.connect(second.diff_url) as again:
                assert await again.login(alice.user_id, alice.password)
                await again.wait_for(lambda c: c.order("after").get("status") == "ALIVE")
                await converge(again, embedded)
    finally:
        assert second.stop() == 0
    deployment.gateway = start_gateway(tmp_path, deployment.core, deployment.broker)  # the fixture stops one


async def converge_quotes(a: DiffClient, b: DiffClient, within: float = 10.0) -> None:
    deadline = trio.current_time() + within
    while not (a.tree.get("quotes") and a.tree.get("quotes") == b.tree.get("quotes")):
        if trio.current_time() > deadline:
            assert a.tree.get("quotes") == b.tree.get("quotes")
        await trio.sleep(0.05)


async def test_quotes_through_a_gateway_equal_the_cores(deployment: Deployment) -> None:
    """Every contract's fields, and the full quote of a subscribed one, as a session on the core sees them."""
    bob = open_user(deployment.core)
    async with (
        DiffClient.connect(deployment.gateway.diff_url) as a,
        DiffClient.connect(deployment.core.diff_url) as embedded,
        DiffClient.connect(deployment.core.diff_url) as b,
    ):
        assert await b.login(bob.user_id, bob.password)
        for client in (a, embedded):
            await client.send({"aid": "subscribe_quote", "ins_list": f"{CU},SHFE.nope"})
        await a.wait_for(lambda c: any(n.get("code") == 409 for n in c.notifies))  # the unknown symbol
        await a.wait_for(lambda c: CU in c.tree.get("quotes", {}) and "bid_price1" in c.tree["quotes"][CU])
        await converge_quotes(a, embedded)
        await b.insert_order("q1", CU, "BUY", "OPEN", 3, 85000.0)
        await b.insert_order("q2", CU, "SELL", "OPEN", 2, 87000.0)
        await a.wait_for(lambda c: c.tree["quotes"][CU].get("ask_price1") == 87000.0)
        await converge_quotes(a, embedded)
        assert a.tree["quotes"][CU]["bid_volume1"] == 3
        # a chart through the gateway process (tests/test_gateway_charts.py compares them in depth)
        for client in (a, embedded):
            await client.send({"aid": "set_chart", "chart_id": "c1", "ins_list": CU,
                               "duration": 60_000_000_000, "view_width": 10})  # fmt: skip
        await a.wait_for(lambda c: c.tree.get("charts", {}).get("c1", {}).get("ready"))
        await embedded.wait_for(lambda c: c.tree.get("charts", {}).get("c1", {}).get("ready"))
        deadline = trio.current_time() + 10  # a bar may open between the two answers: both get it
        while (a.tree["charts"], a.tree["klines"]) != (embedded.tree["charts"], embedded.tree["klines"]):
            assert trio.current_time() < deadline, (a.tree["charts"], embedded.tree["charts"])
            await trio.sleep(0.05)


async def test_a_slow_gateway_is_cut_off_by_the_broker_and_recovers(tmp_path: Path) -> None:
    """A gateway that stops reading (SIGSTOP): nats-server cuts it off as a slow consumer
    (max_pending 64 KB, write deadline 0.5 s); the core then trades for its user, whose patches the
    gateway never gets. Resumed, the gateway reconnects, resyncs, and its session ends with the
    embedded tree — nothing the core acknowledged is lost."""
    broker = NatsServer(
        free_port(), tmp_path, config='max_pending: 65536\nmax_payload: 65536\nwrite_deadline: "500ms"\n'
    )
    broker.start()
    broker_log = tmp_path / f"nats-{broker.port}.log"
    env = {"QAEX_BROKER": broker.url, "QAEX_EXCHANGE_ID": EXCHANGE_ID, "QAEX_MAX_MESSAGES_PER_SECOND": "5000"}
    core = launch(tmp_path, extra_env=env)
    gateway = None
    try:
        wait_ready(core)
        gateway = start_gateway(tmp_path, core, broker)
        alice = open_user(core, init_cash=50_000_000.0)  # 300 resting orders' margin
        async with (
            DiffClient.connect(gateway.diff_url) as a,
            DiffClient.connect(core.diff_url) as embedded,
        ):
            assert await a.login(alice.user_id, alice.password)
            assert await embedded.login(alice.user_id, alice.password)
            await embedded.insert_order("before", CU, "BUY", "OPEN", 1, 80000.0)
            await converge(a, embedded)
            os.kill(gateway.process.pid, signal.SIGSTOP)
            try:
                # More than the loopback socket buffers hold, on a subject the gateway reads (and
                # ignores: not a heartbeat), so that the broker's own buffer for it fills up and
                # the broker cuts it off.
                flood = NatsClient(broker.url)
                async with trio.open_nursery() as nursery:
                    await nursery.start(flood.run)
                    for i in range(2_000):
                        flood.publish(f"qaex.{EXCHANGE_ID}.core.hb", b"\xc1" * 60_000)
                        if i % 50 == 49:
                            await flood.flush()
                            if "Slow Consumer" in broker_log.read_text():
                                break
                    nursery.cancel_scope.cancel()
                assert "Slow Consumer" in broker_log.read_text()
                # Patches the cut-off gateway never receives: only a resync brings them.
                for i in range(300):
                    await embedded.insert_order(f"o{i}", CU, "BUY", "OPEN", 1, 80000.0 + 10 * (i % 50))
                await embedded.wait_for(lambda c: c.order("o299").get("status") == "ALIVE", within=30)
            finally:
                os.kill(gateway.process.pid, signal.SIGCONT)
            await converge(a, embedded, within=60)  # reconnect + resync on a loaded machine
            assert len(a.trade()["orders"]) == 301
        assert "connection 2)" in gateway.log()  # it was cut off and came back
    finally:
        if gateway is not None:
            assert gateway.stop() == 0, gateway.log()
        core.stop()
        broker.stop()


async def test_a_tree_above_max_payload_logs_in_and_resyncs_in_parts(tmp_path: Path) -> None:
    """A user whose tree is larger than the broker's max_payload: the login's snapshot and the
    resync's after a broker restart cross it in parts (they used to be refused: snapshot_too_large,
    and the resynced session stayed stale for ever)."""
    broker = NatsServer(free_port(), tmp_path, config="max_pending: 16384\nmax_payload: 16384\n")
    broker.start()
    env = {"QAEX_BROKER": broker.url, "QAEX_EXCHANGE_ID": EXCHANGE_ID}
    core = launch(tmp_path, extra_env=env)
    gateway = None
    try:
        wait_ready(core)
        gateway = start_gateway(tmp_path, core, broker)
        alice = open_user(core, init_cash=50_000_000.0)
        async with DiffClient.connect(core.diff_url) as embedded:
            assert await embedded.login(alice.user_id, alice.password)
            for i in range(80):  # a tree of ~25 KB, each patch small
                await embedded.insert_order(f"o{i}", CU, "BUY", "OPEN", 1, 80000.0 + 10 * (i % 50))
            await embedded.wait_for(lambda c: c.order("o79").get("status") == "ALIVE")
            async with DiffClient.connect(gateway.diff_url) as a:
                # rpc.login in parts. A gateway just started may not have heard the core's first
                # heartbeat yet: it refuses at once (503, nothing sent); the client tries again.
                for _ in range(40):
                    if await a.login(alice.user_id, alice.password, within=20):
                        break
                    await trio.sleep(0.5)
                else:
                    raise AssertionError(f"no login through the gateway: {a.notifies[-5:]}")
                await converge(a, embedded, within=30)
                await trio.to_thread.run_sync(broker.stop)
                await embedded.insert_order("while_down", CU, "BUY", "OPEN", 1, 80000.0)
                await embedded.wait_for(lambda c: c.order("while_down").get("status") == "ALIVE")
                await trio.to_thread.run_sync(broker.start)
                await converge(a, embedded, within=30)  # rpc.snapshot in parts
                assert len(a.trade()["orders"]) == 81
        log = gateway.log()
        assert "connection 2)" in log and "resync refused" not in log
        assert "ERROR qaex.broker" not in core.log()  # nothing too large to publish
    finally:
        if gateway is not None:
            assert gateway.stop() == 0, gateway.log()
        core.stop()
        broker.stop()


async def test_a_silent_core_gets_orders_refused_at_once_until_it_is_back(deployment: Deployment) -> None:
    alice = open_user(deployment.core)
    async with (
        DiffClient.connect(deployment.gateway.diff_url) as a,
        DiffClient.connect(deployment.core.diff_url) as embedded,
    ):
        assert await a.login(alice.user_id, alice.password)
        assert await embedded.login(alice.user_id, alice.password)
        os.kill(deployment.core.process.pid, signal.SIGSTOP)
        try:
            await trio.sleep(4)  # no heartbeat for longer than CORE_SILENT
            seen = len(a.notifies)
            await a.insert_order("z1", CU, "BUY", "OPEN", 1, 80000.0)
            with trio.fail_after(1):  # at once, not after the command timeout
                note = await a.wait_for(first_error_since(seen))
            assert "core" in note["content"] and note["code"] == 503
        finally:
            os.kill(deployment.core.process.pid, signal.SIGCONT)
        await trio.sleep(1.5)  # the next heartbeat
        await a.insert_order("z2", CU, "BUY", "OPEN", 1, 80000.0)
        await a.wait_for(lambda c: c.order("z2").get("status") == "ALIVE")
        await converge(a, embedded, ignore_orders=("z1",))


async def test_ins_query_on_a_gateway_answers_from_the_cores_listing(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A gateway started with another QAEX_INSTRUMENTS (none: the product listing of today) still
    answers ins_query as the core does: the listing comes from the core (rpc.instruments)."""
    env = dict(deployment.core.env)
    deployment.core.env["QAEX_INSTRUMENTS"] = ""  # the second gateway's own setting differs from the core's
    try:
        other = start_gateway(tmp_path, deployment.core, deployment.broker)
    finally:
        deployment.core.env.clear()
        deployment.core.env.update(env)
    query = (
        'query {\n  multi_symbol_info(class: [FUTURE], exchange_id: ["SHFE"]) {\n    instrument_id\n  }\n}'
    )
    try:
        answers = []
        for url in (deployment.core.diff_url, deployment.gateway.diff_url, other.diff_url):
            async with DiffClient.connect(url) as client:
                await client.send({"aid": "ins_query", "query_id": "q1", "query": query, "variables": {}})
                answers.append(await client.wait_for(lambda c: c.tree.get("symbols", {}).get("q1")))
        assert answers[0]["result"]["multi_symbol_info"]  # the pinned SHFE contracts
        assert answers[0] == answers[1] == answers[2]
    finally:
        assert other.stop() == 0


async def test_two_gateways_share_one_port_with_so_reuseport(deployment: Deployment, tmp_path: Path) -> None:
    port = free_port()
    first = start_gateway(tmp_path, deployment.core, deployment.broker, port, ("--reuse-port",))
    second = start_gateway(tmp_path, deployment.core, deployment.broker, port, ("--reuse-port",))
    try:
        alice = open_user(deployment.core)
        for _ in range(16):
            async with DiffClient.connect(f"ws://127.0.0.1:{port}/ws/diff") as client:
                assert await client.login(alice.user_id, alice.password)
        logins = [gateway.log().count("logged in as") for gateway in (first, second)]
        assert sum(logins) == 16 and min(logins) > 0, logins  # the kernel spread them
    finally:
        assert first.stop() == 0 and second.stop() == 0


async def test_a_core_of_another_broker_protocol_gets_every_request_refused_by_name(
    deployment: Deployment,
) -> None:
    """A core speaking another version of the broker messages (here: heartbeats of protocol
    PROTOCOL + 1 while the real core is stopped) cannot be heard on this version's subjects: the
    gateway refuses orders and logins at once with a notify naming both versions, and serves again
    once the core it speaks with is back."""
    import msgspec

    from qaex.protocol import broker as wire

    alice = open_user(deployment.core)
    bob = open_user(deployment.core)
    async with (
        DiffClient.connect(deployment.gateway.diff_url) as a,
        DiffClient.connect(deployment.core.diff_url) as embedded,
    ):
        assert await a.login(alice.user_id, alice.password)
        assert await embedded.login(alice.user_id, alice.password)
        other = NatsClient(deployment.broker.url)
        os.kill(deployment.core.process.pid, signal.SIGSTOP)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(other.run)

                async def beat_as_a_newer_core() -> None:
                    beat = wire.Heartbeat("newer", time.time_ns(), wire.PROTOCOL + 1)
                    while True:
                        other.publish(wire.heartbeat_subject(EXCHANGE_ID), msgspec.msgpack.encode(beat))
                        await trio.sleep(0.1)

                nursery.start_soon(beat_as_a_newer_core)
                await trio.sleep(0.5)
                seen = len(a.notifies)
                await a.insert_order("v1", CU, "BUY", "OPEN", 1, 80000.0)
                with trio.fail_after(1):  # at once: not the command timeout, not the silent-core delay
                    note = await a.wait_for(first_error_since(seen))
                assert note["code"] == 503
                assert f"broker protocol {wire.PROTOCOL + 1}" in note["content"]
                assert f"this gateway {wire.PROTOCOL}" in note["content"]
                async with DiffClient.connect(deployment.gateway.diff_url) as b:
                    assert not await b.login(bob.user_id, bob.password)
                    assert any(f"protocol {wire.PROTOCOL + 1}" in n.get("content", "") for n in b.notifies)
                nursery.cancel_scope.cancel()
        finally:
            os.kill(deployment.core.process.pid, signal.SIGCONT)
        await trio.sleep(1.5)  # the real core's next heartbeat
        await a.insert_order("v2", CU, "BUY", "OPEN", 1, 80000.0)
        await a.wait_for(lambda c: c.order("v2").get("status") == "ALIVE")
        await converge(a, embedded, ignore_orders=("v1",))
    log = deployment.gateway.log()
    assert f"speaks broker protocol {wire.PROTOCOL + 1} and this gateway {wire.PROTOCOL}" in log
    assert f"speaks broker protocol {wire.PROTOCOL} again" in log
