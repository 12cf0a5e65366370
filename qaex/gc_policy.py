"""How a qaex server runs CPython's cyclic garbage collector.

The exchange keeps a large heap that lives all day (books, accounts, every user's trade tree) and
allocates many short-lived containers per order (commands, rendered records, patches, frames). With
CPython's default thresholds ``(700, 10, 10)`` the young generation is collected every 700 net
allocations, and every so often a full collection walks the whole heap. In ``bench/pipeline.py``
that was about 18 % of the run, with full-collection pauses of ~45 ms: a pause is a latency spike
for every order and every session at that moment.

Two measures, both applied once the server has loaded its state:

* ``gc.freeze()`` after recovery: everything loaded at start (the recovered engine, instruments,
  snapshot trees) moves to the permanent generation, which later collections never walk. Frozen
  objects are still freed by reference counting; only cycles among them would stay (the engine's
  records are not cyclic).
* collections on a timer (:func:`collect_on_timer`, ``QAEX_GC_INTERVAL``, 20 ms): the young and
  middle generations together every interval, so that what survives goes straight to the old
  generation, and everything every :data:`FULL_EVERY` intervals (80 s). CPython's own, count-based
  collections stay as a backstop for when the loop is too busy to run the timer, at a young
  threshold of ``QAEX_GC_THRESHOLD`` (20,000).

Why a timer. What a collection costs is the number of live objects it walks, and a DIFF session
keeps a chain of suspended coroutines per task that it rebuilds every time it wakes (three tasks
per session when this was measured, with trio-websocket; one reading task and an idle drain task
since qaex.api.ws_server). CPython counts allocations *minus deallocations*: a session
that replaces its old chain by a new one adds nothing to the count, so the count says nothing about
how many live objects are piling up in the young generation. With 1,000 sessions woken by each quote
publish, the young generation held ~49,000 objects (12,000 coroutines) when the count said 10,000,
and a young collection at the former threshold of 10,000 stopped the loop for 16 ms every 0.6 s:
the tail of order latency (qaex.stalls found it). A lower count threshold helped at 1,000 orders/s
and hurt at 500/s, since the count grows with the order rate and the chains do not. A timer bounds
what each collection walks by what the server allocated in the last 20 ms, whatever the load: in
``bench.latency`` P99.9 went from 25-35 ms to 17-19 ms and the worst order from 36-40 ms to 21 ms,
at no cost in the in-process pipeline; with 10,000 sessions it costs about 6 % of a core more than
count-based collections (docs/benchmarks.md).

Why the middle generation every time. What survives a collection is nearly always alive for a long
while yet (a session's suspended chain lives until its next wake-up, about half a second for a
quote-subscribed session) and the collections find no cycles: with young collections every 20 ms
and the middle one every fourth, each survivor was walked twice, and the middle collection walked
four intervals' worth in one pause. Collecting both generations each time walks a survivor once, and
every pause is one interval's worth. Measured with ``bench.latency --other-sessions 3000`` (five
runs each, alternated; docs/benchmarks.md): order P99 20.7 ms instead of 26.2, P99.9 42.8 instead of
54.3 (medians), lower in every pair; with 1,000 sessions no difference beyond the spread.

Most of the exchange's own records never reach the collector anyway: orders, trades and positions
are ``gc=False`` msgspec structs, and dicts holding only numbers and strings are untracked.
"""

from __future__ import annotations

import gc
import logging

import trio

log = logging.getLogger("qaex.gc")

DEFAULT_THRESHOLD = 20_000  # CPython's young threshold: the backstop behind the timer
DEFAULT_INTERVAL = 0.02  # seconds between two timed young collections
FULL_EVERY = 4000  # timed collections per full collection (80 s at the default interval)


def tune(young_threshold: int = DEFAULT_THRESHOLD) -> None:
    """Set CPython's automatic thresholds to ``(young_threshold, 10, FULL_EVERY)``; 0 leaves CPython's.

    CPython counts every middle-generation collection towards the next full one, the timer's too:
    with the threshold at FULL_EVERY the timer's own full collection comes first, unless automatic
    middle collections (a loop too busy for the timer) came in between.
    """
    if young_threshold < 0:
        raise ValueError("the gc threshold must be >= 0")
    if young_threshold == 0:
        return
    gc.set_threshold(young_threshold, 10, FULL_EVERY)


async def collect_on_timer(
    interval: float = DEFAULT_INTERVAL, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Collect the young and middle generations every `interval` seconds, everything every
    :data:`FULL_EVERY` intervals, until cancelled.

    Run under the server's supervisor (qaex.app). Each collection walks only what was allocated
    since the previous one and is still alive, so it stays short under any load.
    """
    if interval <= 0:
        raise ValueError("the collection interval must be > 0")
    task_status.started()
    log.info("gc: young and middle collections every %.0f ms", interval * 1000)
    ticks = 0
    while True:
        await trio.sleep(interval)
        ticks += 1
        gc.collect(2 if ticks % FULL_EVERY == 0 else 1)


def freeze_loaded_state() -> None:
    """Collect once, then move every object alive now to the permanent generation."""
    gc.collect()
    gc.freeze()
    log.info(
        "gc: %d objects loaded at start frozen; thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )
