"""DiffWriter: one task sends every session's frames, urgent ones first, at most a budget per pass."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest
import trio
import trio.lowlevel

from qaex.api.diff_writer import INLINE_BUDGET, DiffWriter
from qaex.api.heartbeat import Watch
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.session import DiffSession


class Passes(trio.abc.Instrument):
    """Counts scheduler passes: trio polls for I/O once before every batch of runnable tasks."""

    def __init__(self) -> None:
        self.number = 0

    def after_io_wait(self, timeout: float) -> None:
        self.number += 1


class FakeConnection:
    """What the writer needs of a WebSocketConnection: records each frame with the pass it went in."""

    def __init__(self, name: object, log: list[tuple[object, int, dict[str, Any]]], passes: Passes) -> None:
        self.name, self.log, self.passes = name, log, passes
        self.writable = True
        self.on_drained: Any = None
        self.closed_with: tuple[int, str] | None = None

    def text(self, payload: bytes) -> None:
        self.log.append((self.name, self.passes.number, json.loads(payload)))

    def close_now(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


class Bench:
    def __init__(self, per_pass: int = 64, full_view: Any = None) -> None:
        self.passes = Passes()
        self.log: list[tuple[object, int, dict[str, Any]]] = []
        self.writer = DiffWriter(full_view or (lambda link: []), per_pass)
        self.links: dict[object, SessionLink] = {}
        self.connections: dict[object, FakeConnection] = {}

    def session(self, name: object) -> SessionLink:
        link = SessionLink(DiffSession(len(self.links) + 1), self.writer)
        connection = FakeConnection(name, self.log, self.passes)
        watch = Watch(connection, lambda: None, 0.0, link.session.wants_data)  # type: ignore[arg-type]
        self.writer.add(link, connection, watch)  # type: ignore[arg-type]
        self.links[name], self.connections[name] = link, connection
        link.session.receive('{"aid":"peek_message"}', 0.0)
        return link

    def names(self) -> list[object]:
        return [name for name, _, _ in self.log]


async def run_until(bench: Bench, frames: int) -> None:
    trio.lowlevel.add_instrument(bench.passes)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bench.writer.run)
            with trio.fail_after(10):
                while len(bench.log) < frames:
                    await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(bench.passes)


@pytest.mark.parametrize("sessions", [1, 63, 64, 65, 1000])
async def test_no_pass_sends_more_than_the_budget_and_every_session_gets_its_frame(sessions: int) -> None:
    bench = Bench(per_pass=64)
    for i in range(sessions):
        link = bench.session(i)
        link.session.push({"quotes": {"X": {"last_price": i}}})
        link.wake()
    await run_until(bench, sessions)
    assert bench.names() == list(range(sessions))  # in the order they became ready, once each
    assert [frame["data"][0]["quotes"]["X"]["last_price"] for _, _, frame in bench.log] == list(
        range(sessions)
    )
    per_pass = collections.Counter(p for _, p, _ in bench.log)
    assert max(per_pass.values()) <= 64
    assert len(per_pass) <= -(-sessions // 64) + 1  # as few passes as the budget allows
    assert bench.writer.frames == sessions


async def test_an_urgent_session_goes_before_every_market_data_session() -> None:
    bench = Bench(per_pass=8)
    for i in range(100):
        link = bench.session(f"quotes {i}")
        link.session.push({"quotes": {"X": {"last_price": i}}})
        link.wake()
    answer = bench.session("an order's answer")
    answer.session.push({"trade": {"u": {"orders": {"o1": {"status": "ALIVE"}}}}})
    answer.mark_urgent()
    answer.wake()
    assert bench.names() == ["an order's answer"]  # sent at once, in the waker's step
    queued = bench.links["quotes 50"]  # queued behind market data, then its user's patch arrives
    queued.session.push({"trade": {"v": {"orders": {"o2": {"status": "ALIVE"}}}}})
    queued.mark_urgent()
    await run_until(bench, 101)
    assert bench.names()[:2] == ["an order's answer", "quotes 50"]
    assert bench.log[1][1] == bench.log[2][1]  # queued behind market data, it still went first
    assert not answer.urgent  # sent: its next frame is market data again


async def test_a_connection_with_output_queued_is_skipped_and_served_once_drained() -> None:
    bench = Bench()
    slow, fast = bench.session("slow"), bench.session("fast")
    bench.connections["slow"].writable = False
    for link in (slow, fast):
        link.session.push({"quotes": {"X": {"last_price": 1}}})
        link.wake()
    await run_until(bench, 1)
    assert bench.names() == ["fast"]
    slow.session.push({"quotes": {"X": {"last_price": 2}}})  # coalesced meanwhile
    connection = bench.connections["slow"]
    connection.writable = True
    connection.on_drained()  # what the connection's drain task calls
    await run_until(bench, 2)
    assert bench.names() == ["fast", "slow"]
    assert [patch.get("quotes") for patch in bench.log[1][2]["data"]] == [{"X": {"last_price": 2}}]


async def test_a_session_whose_frame_cannot_be_built_is_closed_and_the_others_go_on() -> None:
    def broken_view(link: SessionLink) -> list[dict[str, Any]]:
        raise RuntimeError("boom")

    bench = Bench(full_view=broken_view)
    doomed, other = bench.session("doomed"), bench.session("other")
    doomed.session.resync_needed = True
    for link in (doomed, other):
        link.session.push({"quotes": {"X": {"last_price": 1}}})
        link.wake()
    doomed.writer.ready(doomed)  # type: ignore[union-attr]  # a resync wants data however little is pending
    await run_until(bench, 1)
    assert bench.names() == ["other"]
    assert bench.connections["doomed"].closed_with == (1011, "internal error")


async def test_a_removed_session_is_forgotten() -> None:
    bench = Bench()
    gone, kept = bench.session("gone"), bench.session("kept")
    for link in (gone, kept):
        link.session.push({"quotes": {"X": {"last_price": 1}}})
        link.wake()
    assert bench.writer.waiting == 2
    bench.writer.remove(gone)
    assert bench.writer.waiting == 1
    await run_until(bench, 1)
    assert bench.names() == ["kept"]


async def test_at_most_the_inline_budget_of_answers_goes_out_between_two_passes() -> None:
    bench = Bench()
    links = [bench.session(i) for i in range(INLINE_BUDGET + 4)]
    for link in links:
        link.session.push({"trade": {"u": {"orders": {"o": {"status": "ALIVE"}}}}})
        link.mark_urgent()
        link.wake()
    assert bench.names() == list(range(INLINE_BUDGET))  # the rest wait for the writer's pass
    assert bench.writer.waiting == 4
    await run_until(bench, INLINE_BUDGET + 4)
    assert bench.names() == list(range(INLINE_BUDGET + 4))
    late = bench.session("after the pass")  # the pass renewed the budget
    late.session.push({"trade": {"u": {"orders": {"o": {"status": "FINISHED"}}}}})
    late.mark_urgent()
    late.wake()
    assert bench.names()[-1] == "after the pass"
