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
* thresholds ``(1000, 2, 1000)`` (``QAEX_GC_THRESHOLD`` sets the first; 0 keeps all of CPython's):
  young collections often, so each is short; the middle generation every second young collection,
  so it stays short too; full collections rarely.

Why these. What a collection costs is the number of live objects it walks, and a DIFF session keeps
a chain of suspended coroutines per task (reader, writer, trio-websocket's reader) that is rebuilt
every time the session wakes. With 1,000 sessions woken by each quote publish, the young generation
held ~49,000 objects (12,000 of them coroutines) although its allocation count said 10,000, and a
young collection at the former threshold of 10,000 took 16 ms every 0.6 s: that was the P99 of order
latency (qaex.stalls found it). At ``(1000, 2, 1000)`` ``bench.latency`` gives P99 11-15 ms instead of
22-25 ms and P99.9 17-20 ms instead of 30-41 ms; the in-process pipeline loses 6-7 % of its orders/s
(docs/benchmarks.md has both runs).

Most of the exchange's own records never reach the collector anyway: orders, trades and positions
are ``gc=False`` msgspec structs, and dicts holding only numbers and strings are untracked.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("qaex.gc")

DEFAULT_THRESHOLD = 1000  # young generation: net allocations between two young collections
MIDDLE_THRESHOLD = 2  # young collections between two middle-generation collections
OLD_THRESHOLD = 1000  # middle collections between two full ones (CPython also waits for 25 % growth)


def tune(young_threshold: int = DEFAULT_THRESHOLD) -> None:
    """Set the thresholds to ``(young_threshold, MIDDLE_THRESHOLD, OLD_THRESHOLD)``; 0 leaves CPython's."""
    if young_threshold < 0:
        raise ValueError("the gc threshold must be >= 0")
    if young_threshold == 0:
        return
    gc.set_threshold(young_threshold, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def freeze_loaded_state() -> None:
    """Collect once, then move every object alive now to the permanent generation."""
    gc.collect()
    gc.freeze()
    log.info(
        "gc: %d objects loaded at start frozen; thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )
