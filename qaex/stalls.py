"""Event-loop stall reports: which tasks kept trio from polling for I/O, and for how long.

Order latency is mostly time spent waiting for the event loop: trio runs every runnable task once
per scheduler pass and only then looks at the sockets again, so an acknowledgement that becomes
ready waits behind the whole pass. `StallReporter` is a trio instrument that times each pass (from
the end of one I/O wait to the start of the next) and each task step, and logs a pass longer than
``threshold`` seconds on the ``qaex.stalls`` logger at WARNING, naming the tasks that took the most
of it, and how much of it was garbage collection. A watchdog thread also catches where a single
task step is when it has run past the threshold, and that stack is logged once the step ends. It is
off unless ``QAEX_STALL_MS`` is set (see docs/configuration.md); when on, it costs two clock reads
per task step and a thread that wakes every ``threshold / 2``.

The first use was finding the tail of order latency: a young-generation collection of 16 ms every
0.6 s, which is why qaex.gc_policy collects the young generation on a timer.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from types import FrameType
from typing import Any

import trio

log = logging.getLogger("qaex.stalls")

TOP_TASKS = 5  # tasks named per stall
STACK_DEPTH = 12  # frames shown of a long task step
IDLE = frozenset({"_work", "wait", "_wait_for_tstate_lock", "select", "poll"})  # threads doing nothing

_Frame = tuple[str, int, str]  # file name, line number, function name


class StallReporter(trio.abc.Instrument):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.stalls = 0
        self.longest = 0.0
        self._pass_start = time.perf_counter()
        self._step_start = 0.0
        self._steps = 0
        self._spent: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._gc_start = 0.0
        self._gc_spent = 0.0
        self._gc_oldest = -1
        self._gc_collected = 0
        self._step_serial = 0  # counts task steps
        self._running = 0  # serial of the step running now, 0 between steps
        self._caught: tuple[int, list[tuple[str, list[_Frame]]]] | None = None  # (step serial, stacks)
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report stalls until cancelled (``await nursery.start(reporter.run)``).

        Adds the instrument and a garbage-collector callback, and runs the watchdog in a trio worker
        thread that this task awaits; cancelling the task stops the watchdog and removes both hooks.
        """
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        trio.lowlevel.add_instrument(self)
        gc.callbacks.append(self._gc_event)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on_cancel)
                task_status.started()
                await trio.to_thread.run_sync(self._watch)  # returns once _stop is set
        finally:
            trio.lowlevel.remove_instrument(self)
            gc.callbacks.remove(self._gc_event)

    async def _stop_on_cancel(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._stop.set()

    def _watch(self) -> None:
        """In a thread: catch the stack of a task step that is still running past the threshold.

        It can only look while the loop's thread lets go of the GIL (every few ms in Python code), so
        a stall inside one long C call is seen only after it. Other threads that ran Python code
        meanwhile are shown too: one holding the GIL stalls the loop as surely as a slow task.
        """
        while not self._stop.wait(self.threshold / 2):
            serial, started = self._running, self._step_start
            if not serial or time.perf_counter() - started < self.threshold:
                continue
            if self._caught is not None and self._caught[0] == serial:
                continue  # one stack per step is enough
            # Only reads of frame objects until the stack is recorded: no source lines, no file
            # access. Anything that releases the GIL here (linecache's os.stat) lets the step run on
            # and perhaps end before its stack is recorded; the lines are read in the loop's thread.
            frames = sys._current_frames()
            loop = frames.get(self._loop_thread)
            if loop is None or self._running != serial:
                continue
            stacks: list[tuple[str, list[_Frame]]] = [("", _frames(loop, STACK_DEPTH))]
            for ident, frame in frames.items():
                if ident in (self._loop_thread, threading.get_ident()) or frame.f_code.co_name in IDLE:
                    continue
                stacks.append((f"thread {ident}:", _frames(frame, 4)))
            self._caught = (serial, stacks)

    def _gc_event(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self._gc_spent += time.perf_counter() - self._gc_start
            self._gc_oldest = max(self._gc_oldest, info["generation"])
            self._gc_collected += info["collected"]

    def after_io_wait(self, timeout: float) -> None:
        self._pass_start = time.perf_counter()
        self._steps = 0
        self._spent.clear()
        self._counts.clear()
        self._gc_spent = 0.0
        self._gc_oldest = -1
        self._gc_collected = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_start = time.perf_counter()
        self._step_serial += 1
        self._running = self._step_serial

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        serial, self._running = self._running, 0
        name = _short(task.name)
        took = time.perf_counter() - self._step_start
        self._spent[name] = self._spent.get(name, 0.0) + took
        self._counts[name] += 1
        self._steps += 1
        caught, self._caught = self._caught, None
        if caught is not None and caught[0] == serial:
            where = "\n".join(
                "\n".join(filter(None, [title, "".join(_format(frames))])) for title, frames in caught[1]
            )
            log.warning("task %s ran %.1f ms in one step; it was here:\n%s", name, took * 1000, where)

    def before_io_wait(self, timeout: float) -> None:
        took = time.perf_counter() - self._pass_start
        if took < self.threshold:
            return
        self.stalls += 1
        self.longest = max(self.longest, took)
        top = ", ".join(
            f"{name} ×{self._counts[name]} {spent * 1000:.1f} ms"
            for name, spent in sorted(self._spent.items(), key=lambda item: -item[1])[:TOP_TASKS]
        )
        collector = ""
        if self._gc_oldest >= 0:
            collector = (
                f"; garbage collection {self._gc_spent * 1000:.1f} ms"
                f" (up to generation {self._gc_oldest}, {self._gc_collected} objects freed)"
            )
        log.warning(
            "event loop busy %.1f ms: %d task steps; most time in %s%s",
            took * 1000,
            self._steps,
            top,
            collector,
        )


def _frames(frame: FrameType | None, limit: int) -> list[_Frame]:
    """The innermost `limit` frames from `frame` outwards, outermost first, with no file access."""
    out: list[_Frame] = []
    while frame is not None and len(out) < limit:
        out.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    out.reverse()
    return out


def _format(frames: list[_Frame]) -> list[str]:
    """`frames` as traceback.format_stack writes them, with their source lines (read now)."""
    return traceback.StackSummary.from_list(
        [traceback.FrameSummary(file, line, name) for file, line, name in frames]
    ).format()


def _short(name: str) -> str:
    """A task name without its module path: the last two dotted parts (``DiffServer._writer``)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else name
