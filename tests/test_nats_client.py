"""The trio NATS client (qaex.exchange.nats_client) against a real nats-server started per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from conftest import NatsServer, free_port

from qaex.exchange.nats_client import NatsClient, NoResponders, NotConnected, RequestTimeout


async def test_publish_subscribe_and_one_write_per_batch(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        a = NatsClient(nats_server.url, name="a")
        b = NatsClient(nats_server.url, name="b")
        await nursery.start(a.run)
        await nursery.start(b.run)
        sub = b.subscribe("qaex.t.u.*")
        await b.flush()
        for i in range(5000):
            assert a.publish(f"qaex.t.u.{i % 7}", b"%d" % i)
        assert a.publish("other", b"not for b")
        await a.flush()
        got = []
        with trio.fail_after(5):
            while len(got) < 5000:
                got.append(await sub.receive())
        assert [m.payload for m in got] == [b"%d" % i for i in range(5000)]
        assert got[3].subject == "qaex.t.u.3"
        nursery.cancel_scope.cancel()


async def test_headers_request_reply_and_no_responders(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        core = NatsClient(nats_server.url)
        gw = NatsClient(nats_server.url)
        await nursery.start(core.run)
        await nursery.start(gw.run)
        with trio.fail_after(5):
            try:
                await gw.request("rpc.none", b"x", within=2)
                raise AssertionError("expected NoResponders")
            except NoResponders:
                pass
        rpc = core.subscribe("rpc.echo", queue="core")

        async def answer() -> None:
            async for message in rpc:
                assert message.reply is not None
                core.publish(message.reply, message.payload.upper(), headers=[("Qaex-Seq", "7")])

        nursery.start_soon(answer)
        await core.flush()
        answers = []
        with trio.fail_after(5):
            async with trio.open_nursery() as requests:

                async def one(i: int) -> None:
                    answers.append(await gw.request("rpc.echo", b"ab%d" % i))

                for i in range(200):
                    requests.start_soon(one, i)
        assert sorted(m.payload for m in answers) == sorted(b"AB%d" % i for i in range(200))
        assert answers[0].header("qaex-seq") == "7"
        rpc.unsubscribe()
        await core.flush()
        silent = core.subscribe("rpc.silent")
        await core.flush()
        with trio.fail_after(5):
            try:
                await gw.request("rpc.silent", b"", within=0.2)
                raise AssertionError("expected RequestTimeout")
            except RequestTimeout:
                pass
        silent.unsubscribe()
        nursery.cancel_scope.cancel()


async def test_reconnect_resubscribes_after_a_broker_restart(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        pub = NatsClient(nats_server.url, reconnect_wait=0.1)
        sub_client = NatsClient(nats_server.url, reconnect_wait=0.1)
        reconnects = []
        sub_client.on_connect.append(lambda: reconnects.append(sub_client.generation))
        await nursery.start(pub.run)
        await nursery.start(sub_client.run)
        sub = sub_client.subscribe("q.rb")
        await sub_client.flush()
        pub.publish("q.rb", b"before")
        with trio.fail_after(5):
            assert (await sub.receive()).payload == b"before"
        await trio.to_thread.run_sync(nats_server.stop)
        with trio.fail_after(5):
            await pub.wait_disconnected()
            await sub_client.wait_disconnected()
        assert not pub.publish("q.rb", b"lost")  # no connection: dropped and counted, never blocks
        assert pub.dropped == 1
        try:
            await sub_client.request("rpc.x", b"")
            raise AssertionError("expected NotConnected")
        except NotConnected:
            pass
        await trio.to_thread.run_sync(nats_server.start)
        with trio.fail_after(10):
            await pub.wait_connected()
            await sub_client.wait_connected()
        await sub_client.flush()
        pub.publish("q.rb", b"after")
        with trio.fail_after(5):
            assert (await sub.receive()).payload == b"after"
        assert reconnects == [1, 2]
        nursery.cancel_scope.cancel()


async def test_waiters_wake_when_the_broker_is_back_after_failed_reconnect_attempts(
    nats_server: NatsServer,
) -> None:
    """Tasks waiting for the connection while the broker is down for many reconnect attempts all
    wake when it is back (each failed attempt once replaced the event they waited on), and the
    subscriptions deliver again."""
    async with trio.open_nursery() as nursery:
        client = NatsClient(nats_server.url, reconnect_wait=0.05, connect_timeout=0.5)
        pub = NatsClient(nats_server.url, reconnect_wait=0.05)
        await nursery.start(client.run)
        await nursery.start(pub.run)
        sub = client.subscribe("q.back")
        await client.flush()
        await trio.to_thread.run_sync(nats_server.stop)
        with trio.fail_after(5):
            await client.wait_disconnected()
        woken: list[int] = []

        async def waiter(i: int) -> None:
            await client.wait_connected()
            woken.append(i)

        with trio.fail_after(15):  # the waiters' nursery ends when every waiter woke
            async with trio.open_nursery() as waiters:
                for i in range(5):  # waiting from the first failed attempt on ...
                    waiters.start_soon(waiter, i)
                    await trio.sleep(0.2)  # ... and after several more (reconnect_wait 0.05 s)
                assert woken == [] and not client.is_connected and client.generation == 1
                await trio.to_thread.run_sync(nats_server.start)
        assert sorted(woken) == list(range(5)) and client.generation == 2
        with trio.fail_after(10):
            await pub.wait_connected()
        await client.flush()
        pub.publish("q.back", b"again")
        with trio.fail_after(5):
            assert (await sub.receive()).payload == b"again"
        nursery.cancel_scope.cancel()


async def test_bounded_subscription_drops_and_counts(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        client = NatsClient(nats_server.url)
        await nursery.start(client.run)
        sub = client.subscribe("flood", max_pending=10)
        await client.flush()
        for i in range(100):
            client.publish("flood", b"%d" % i)
        await client.flush()
        await client.flush()
        kept = []
        while (message := sub.receive_nowait()) is not None:
            kept.append(message.payload)
        assert kept == [b"%d" % i for i in range(10)] and sub.dropped == 90
        nursery.cancel_scope.cancel()


async def test_stale_connection_is_detected_by_pings(nats_server: NatsServer) -> None:
    """SIGSTOP the broker: unanswered PINGs close the connection; SIGCONT: reconnected."""
    import os
    import signal

    assert nats_server.process is not None
    async with trio.open_nursery() as nursery:
        client = NatsClient(nats_server.url, ping_interval=0.2, max_outstanding_pings=2, reconnect_wait=0.1)
        await nursery.start(client.run)
        os.kill(nats_server.process.pid, signal.SIGSTOP)
        try:
            with trio.fail_after(5):
                await client.wait_disconnected()
        finally:
            os.kill(nats_server.process.pid, signal.SIGCONT)
        with trio.fail_after(10):
            await client.wait_connected()
        assert client.generation == 2
        nursery.cancel_scope.cancel()


async def test_credentials_in_the_url(tmp_path: Path) -> None:
    broker = NatsServer(free_port(), tmp_path, args=("--user", "core", "--pass", "s3cret"))
    broker.start()
    try:
        async with trio.open_nursery() as nursery:
            good = NatsClient(f"nats://core:s3cret@127.0.0.1:{broker.port}")
            await nursery.start(good.run)
            await good.flush()
            bad = NatsClient(f"nats://core:wrong@127.0.0.1:{broker.port}", reconnect_wait=0.1)
            nursery.start_soon(bad.run)
            await trio.sleep(0.5)
            assert not bad.is_connected and bad.generation == 0
            nursery.cancel_scope.cancel()
    finally:
        broker.stop()
    token = NatsServer(free_port(), tmp_path, args=("--auth", "t0ken"))
    token.start()
    try:
        async with trio.open_nursery() as nursery:
            client = NatsClient(f"nats://t0ken@127.0.0.1:{token.port}")
            await nursery.start(client.run)
            await client.flush()
            nursery.cancel_scope.cancel()
    finally:
        token.stop()


async def test_request_callback_answers_and_times_out(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        core = NatsClient(nats_server.url)
        gw = NatsClient(nats_server.url)
        await nursery.start(core.run)
        await nursery.start(gw.run)
        rpc = core.subscribe("cmd")
        silent = core.subscribe("cmd.silent")
        await core.flush()
        answers: list[object] = []
        done = trio.Event()

        def got(answer: object) -> None:
            answers.append(answer)
            if len(answers) == 3:
                done.set()

        for i in range(2):
            gw.request_callback("cmd", b"%d" % i, got, within=5)
        gw.request_callback("cmd.silent", b"", got, within=0.3)
        for _ in range(2):
            message = await rpc.receive()
            assert message.reply is not None
            core.publish(message.reply, b"ok " + message.payload)
        with trio.fail_after(5):
            await done.wait()
        assert [a.payload for a in answers if hasattr(a, "payload")] == [b"ok 0", b"ok 1"]  # in order
        assert isinstance(answers[2], RequestTimeout)
        assert (await silent.receive()).payload == b""  # it was delivered, just not answered
        nursery.cancel_scope.cancel()


async def test_publish_bounds(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        client = NatsClient(nats_server.url, max_pending_bytes=10_000)
        await nursery.start(client.run)
        assert client.max_payload == 1 << 20  # from the server's INFO
        with pytest.raises(ValueError, match="max_payload"):
            client.publish("big", b"x" * (client.max_payload + 1))
        sent = [client.publish("burst", b"y" * 1000) for _ in range(20)]  # one scheduler pass: no write yet
        assert sent[:9] == [True] * 9 and not all(sent) and client.dropped == sent.count(False)
        await client.flush()
        assert client.publish("burst", b"y" * 1000)  # written: room again
        nursery.cancel_scope.cancel()
