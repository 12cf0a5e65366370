"""SendGate: at most `per_pass` writers send per scheduler pass, the others in order, none lost."""

from __future__ import annotations

import collections

import pytest
import trio
import trio.lowlevel

from qaex.exchange.pacing import SendGate


class Passes(trio.abc.Instrument):
    """Counts scheduler passes: trio polls for I/O once before every batch of runnable tasks."""

    def __init__(self) -> None:
        self.number = 0

    def after_io_wait(self, timeout: float) -> None:
        self.number += 1


async def take_turns(gate: SendGate, writers: int, passes: Passes) -> list[tuple[int, int]]:
    """Every writer asks for a turn at once; returns (writer, pass of its turn) in turn order."""
    turns: list[tuple[int, int]] = []

    async def writer(i: int) -> None:
        await gate.turn(i)
        turns.append((i, passes.number))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.run)
        async with trio.open_nursery() as writers_nursery:
            for i in range(writers):
                writers_nursery.start_soon(writer, i)
        nursery.cancel_scope.cancel()
    return turns


@pytest.mark.parametrize("writers", [1, 63, 64, 65, 500, 5000])
async def test_no_pass_holds_more_than_the_budget_and_every_writer_gets_a_turn(writers: int) -> None:
    passes = Passes()
    trio.lowlevel.add_instrument(passes)
    try:
        with trio.fail_after(30):
            turns = await take_turns(SendGate(64), writers, passes)
    finally:
        trio.lowlevel.remove_instrument(passes)
    assert sorted(i for i, _ in turns) == list(range(writers))
    per_pass = collections.Counter(p for _, p in turns)
    assert max(per_pass.values()) <= 64
    if writers > 64:  # the flood is spread: as few passes as the budget allows, not one per writer
        assert len(per_pass) <= -(-writers // 64) * 2


class Writers:
    """Writers that take a turn and note their name; `all_done` once `expected` have gone."""

    def __init__(self, gate: SendGate, expected: int) -> None:
        self.gate, self.expected = gate, expected
        self.done: list[object] = []
        self.all_done = trio.Event()

    async def writer(self, name: object) -> None:
        await self.gate.turn(name)
        self.done.append(name)
        if len(self.done) == self.expected:
            self.all_done.set()


async def test_waiting_writers_go_in_arrival_order() -> None:
    writers = Writers(SendGate(2), 10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writers.gate.run)
        for i in range(10):
            nursery.start_soon(writers.writer, i)
            await trio.lowlevel.checkpoint()  # arrive one after the other
        with trio.fail_after(5):
            await writers.all_done.wait()
        nursery.cancel_scope.cancel()
    assert writers.done == list(range(10))


async def test_a_cancelled_waiter_leaves_the_queue_and_the_others_still_go() -> None:
    gate = SendGate(1)
    writers = Writers(gate, 2)
    async with trio.open_nursery() as nursery:
        await writers.writer("first")  # the pass's only turn (no pump yet: no new budget either)
        doomed = trio.CancelScope()

        async def waits_then_is_cancelled() -> None:
            with doomed:
                await writers.writer("doomed")

        nursery.start_soon(waits_then_is_cancelled)
        nursery.start_soon(writers.writer, "second")
        for _ in range(10):  # both tasks start and queue within a few passes
            await trio.lowlevel.checkpoint()
        assert gate.waiting == 2
        doomed.cancel()
        await trio.lowlevel.checkpoint()
        assert gate.waiting == 1
        nursery.start_soon(gate.run)
        with trio.fail_after(5):
            await writers.all_done.wait()
        assert gate.waiting == 0
        nursery.cancel_scope.cancel()
    assert writers.done == ["first", "second"]


async def test_an_urgent_writer_leaves_the_queue_at_once() -> None:
    gate = SendGate(1)
    writers = Writers(gate, 3)
    async with trio.open_nursery() as nursery:
        await writers.writer("first")  # the pass's only turn (no pump: no new budget either)
        nursery.start_soon(writers.writer, "market data")
        nursery.start_soon(writers.writer, "an order's answer")
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        assert gate.waiting == 2
        gate.hurry("an order's answer")
        gate.hurry("not waiting")  # nothing happens
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        assert writers.done == ["first", "an order's answer"]
        nursery.start_soon(gate.run)
        with trio.fail_after(5):
            await writers.all_done.wait()
        nursery.cancel_scope.cancel()
