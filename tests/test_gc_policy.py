"""qaex.gc_policy: collections on a timer, young often and older generations less."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

from qaex import gc_policy


async def test_the_gc_timer_collects_young_often_and_older_generations_less(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(gc_policy, "FULL_EVERY", 3)  # a full collection every 3 middle ones
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
    assert seen == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    with pytest.raises(ValueError):
        await gc_policy.collect_on_timer(0)
