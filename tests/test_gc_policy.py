"""qaex.gc_policy: collections on a timer, young and middle together, everything less often."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

from qaex import gc_policy


async def test_the_gc_timer_collects_young_and_middle_together_and_everything_less_often(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(gc_policy, "FULL_EVERY", 4)  # a full collection every 4 timed ones
    seen: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    was_enabled = gc.isenabled()
    gc.disable()  # only the timer's collections, none triggered by allocations
    gc.callbacks.append(record)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gc_policy.collect_on_timer, 0.02)
            await trio.sleep(0.02 * 12 + 0.001)  # twelve timer periods must pass (the clock autojumps)
            nursery.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(record)
        if was_enabled:
            gc.enable()
    assert seen == [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2]
    with pytest.raises(ValueError):
        await gc_policy.collect_on_timer(0)
