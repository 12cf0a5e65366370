"""qaex.stalls: event-loop stalls are reported with the task, the stack and the collector's share."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from types import FrameType

import pytest
import trio
import trio.testing

from qaex.stalls import StallReporter


def watchdog_running() -> bool:
    """Whether a thread is inside StallReporter._watch (the watchdog that catches a stalled step's stack)."""
    for frame in sys._current_frames().values():
        current: FrameType | None = frame
        while current is not None:
            if current.f_code is StallReporter._watch.__code__:
                return True
            current = current.f_back
    return False


async def watchdog_started(seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not watchdog_running():  # noqa: ASYNC110 (a worker thread's stack: no event to wait on)
            await trio.sleep(0.001)


def hog_the_loop(seconds: float) -> None:
    """Keep the loop's thread busy in Python code (so the watchdog thread still gets the GIL to look)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


async def test_a_long_task_step_is_reported_with_its_task_and_stack(caplog: pytest.LogCaptureFixture) -> None:
    reporter = StallReporter(0.01)
    caplog.set_level(logging.WARNING, logger="qaex.stalls")

    async def slow_task() -> None:
        await trio.lowlevel.checkpoint()
        hog_the_loop(0.2)
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        await nursery.start(reporter.run)
        await watchdog_started()
        async with trio.open_nursery() as work:
            work.start_soon(slow_task, name="tests.SlowService.run")
        await trio.sleep(0.02)  # an I/O wait, so that the pass with the stall ends
        nursery.cancel_scope.cancel()
    messages = [record.getMessage() for record in caplog.records]
    busy = [m for m in messages if m.startswith("event loop busy")]
    assert busy, messages
    assert any("SlowService.run ×1" in m for m in busy)
    assert reporter.stalls >= 1 and reporter.longest >= 0.2
    stacks = [m for m in messages if m.startswith("task SlowService.run ran")]
    assert len(stacks) == 1, messages
    assert "hog_the_loop" in stacks[0]


async def test_quick_steps_are_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    reporter = StallReporter(0.05)
    caplog.set_level(logging.WARNING, logger="qaex.stalls")
    async with trio.open_nursery() as nursery:
        await nursery.start(reporter.run)
        for _ in range(50):
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert reporter.stalls == 0
    assert not [r for r in caplog.records if r.name == "qaex.stalls"]


async def test_garbage_collection_inside_a_stall_is_named(caplog: pytest.LogCaptureFixture) -> None:
    reporter = StallReporter(0.005)
    caplog.set_level(logging.WARNING, logger="qaex.stalls")
    garbage = []
    for _ in range(200_000):  # cycles, so the collector has work to do
        cell: list[object] = []
        cell.append(cell)
        garbage.append(cell)

    async def collect() -> None:
        nonlocal garbage
        garbage = []
        gc.collect()
        hog_the_loop(0.01)  # past the threshold even if collecting was quick

    async with trio.open_nursery() as nursery:
        await nursery.start(reporter.run)
        async with trio.open_nursery() as work:
            work.start_soon(collect)
        await trio.sleep(0.01)  # an I/O wait, so that the pass with the stall ends
        nursery.cancel_scope.cancel()
    busy = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event loop busy")]
    assert any("garbage collection" in m and "up to generation 2" in m for m in busy), busy


async def test_cancelling_the_reporter_stops_the_watchdog_and_removes_its_hooks() -> None:
    reporter = StallReporter(0.01)
    threads_before = threading.active_count()
    async with trio.open_nursery() as nursery:
        await nursery.start(reporter.run)
        assert reporter._gc_event in gc.callbacks
        assert threading.active_count() >= threads_before  # the watchdog runs in a trio worker
        nursery.cancel_scope.cancel()
    assert reporter._gc_event not in gc.callbacks
    assert reporter._stop.is_set()
    stalls = reporter.stalls
    hog_the_loop(0.03)
    await trio.lowlevel.checkpoint()  # no instrument left: nothing is counted any more
    assert reporter.stalls == stalls
