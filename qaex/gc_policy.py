"""How a qaex server runs CPython's cyclic garbage collector.

The exchange keeps a large heap that lives all day (books, accounts, every user's trade tree) and
allocates many short-lived containers per order (commands, rendered records, patches, frames). With
CPython's default thresholds ``(700, 10, 10)`` the young generation is collected every 700 net
allocations, and every so often a full collection walks the whole heap. In ``bench/pipeline.py``
that was about 18 % of the run, with full-collection pauses of ~45 ms: a pause is a latency spike
for every order and every session at that moment.

Two measures, both applied once the server has loaded its state:

* a larger young-generation threshold (``QAEX_GC_THRESHOLD``, 10,000 by default; 0 keeps CPython's
  default): fewer collections, each over more objects, far less overhead in total;
* ``gc.freeze()`` after recovery: everything loaded at start (the recovered engine, instruments,
  snapshot trees) moves to the permanent generation, which later collections never walk. Frozen
  objects are still freed by reference counting; only cycles among them would stay (the engine's
  records are not cyclic).

Most of the exchange's own records never reach the collector anyway: orders, trades and positions
are ``gc=False`` msgspec structs, and dicts holding only numbers and strings are untracked.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("qaex.gc")

DEFAULT_THRESHOLD = 10_000


def tune(young_threshold: int = DEFAULT_THRESHOLD) -> None:
    """Set the young-generation threshold (0: leave CPython's default); older generations keep theirs."""
    if young_threshold < 0:
        raise ValueError("the gc threshold must be >= 0")
    if young_threshold == 0:
        return
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def freeze_loaded_state() -> None:
    """Collect once, then move every object alive now to the permanent generation."""
    gc.collect()
    gc.freeze()
    log.info(
        "gc: %d objects loaded at start frozen; thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )
