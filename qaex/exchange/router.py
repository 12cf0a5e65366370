"""OrderRouter: the single writer.

Every state change, whatever transport it came from, is a command sent to the router's channel. The
router stamps each command with a strictly increasing timestamp, applies it to the engine, and after
a run of commands (as many as are waiting, up to `max_batch`) flushes the engine into one `Batch`:
the journal makes the batch's commands durable (one fsync for the whole run: group commit), the
batch goes to the TradeGateway, and only then are the callers told the result. So nobody hears about
a command before it is durable and its patches are on their way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar, overload

import msgspec
import trio

from qaex.core import commands as c
from qaex.core.account import Account
from qaex.core.commands import AnyCommand
from qaex.core.engine import Batch, CommandResult, Engine
from qaex.core.errors import QaexError
from qaex.core.instruments import Instrument
from qaex.core.orders import Order

log = logging.getLogger("qaex.router")

_C = TypeVar("_C")
Submitted: TypeAlias = _C | Callable[[int], _C]
"""A command, or a factory that builds it from the router's timestamp (``lambda ts: Cancel(ts=ts, ...)``)."""


class CommandLog(Protocol):
    """Where applied commands are made durable (the journal); see qaex.exchange.journal."""

    async def commit(self, commands: list[AnyCommand]) -> None: ...


@dataclass(slots=True, eq=False)
class Request:
    """One command waiting for the router, and its outcome."""

    command: Submitted[AnyCommand]
    # Set when the command is done, for a caller that waits (execute); a pipelined caller has none.
    done: trio.Event | None = None
    result: CommandResult = None
    error: QaexError | None = None
    # Called (synchronously, in the router task) once the command is durable and dispatched, for
    # callers that pipeline commands instead of waiting for each one (DIFF sessions).
    on_done: Callable[[Request], None] | None = None


class OrderRouter:
    def __init__(
        self,
        engine: Engine,
        batches: trio.MemorySendChannel[Batch],
        *,
        journal: CommandLog | None = None,
        clock: Callable[[], int] = time.time_ns,
        max_batch: int = 512,
        queue_size: int = 4096,
    ) -> None:
        self.engine = engine
        self._batches = batches
        self._journal = journal
        self._clock = clock
        self._last_ts = 0
        self.max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[Request](queue_size)
        self.commands_applied = 0
        self.batches_flushed = 0

    def now(self) -> int:
        """A strictly increasing timestamp (ns), so that every command's time is unique and ordered."""
        ts = self._clock()
        if ts <= self._last_ts:
            ts = self._last_ts + 1
        self._last_ts = ts
        return ts

    def resume_after(self, ts: int) -> None:
        """After recovery: never stamp a command before the last journaled one, even if the clock lags."""
        self._last_ts = max(self._last_ts, ts)

    # The result of each command, as Engine.apply's overloads give it.
    @overload
    async def execute(self, command: Submitted[c.Insert | c.Cancel]) -> Order: ...
    @overload
    async def execute(self, command: Submitted[c.OpenAccount | c.Deposit | c.Withdraw]) -> Account: ...
    @overload
    async def execute(
        self, command: Submitted[c.UpsertInstrument | c.SetSuspended | c.Delist]
    ) -> Instrument: ...
    @overload
    async def execute(self, command: Submitted[c.Settle]) -> dict[str, float]: ...
    @overload
    async def execute(self, command: Submitted[c.MarkToMarket]) -> int: ...
    @overload
    async def execute(self, command: Submitted[c.ChangePassword]) -> None: ...
    async def execute(self, command: Submitted[AnyCommand]) -> CommandResult:
        """Apply a command (or a factory taking the router's timestamp) and return its result.

        Raises the QaexError the engine refused it with. Returns only once the command is durable
        and its patches have been handed to the gateway.
        """
        done = trio.Event()
        request = Request(command, done)
        await self._send.send(request)
        await done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    async def execute_all(self, commands: Sequence[Submitted[AnyCommand]]) -> list[Request]:
        """Apply `commands` in their order and wait until all are done: queued together, they share
        batches (and their journal commits) instead of waiting for one commit each, as a start-up's
        listing of a few hundred contracts would. Each Request holds its result or its error."""
        requests: list[Request] = []
        if not commands:
            return requests
        all_done = trio.Event()
        left = len(commands)

        def finished(request: Request) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                all_done.set()

        for command in commands:
            request = Request(command, on_done=finished)
            requests.append(request)
            await self._send.send(request)
        await all_done.wait()
        return requests

    async def submit(
        self,
        command: Submitted[AnyCommand],
        on_done: Callable[[Request], None],
    ) -> None:
        """Queue a command without waiting for it; `on_done(request)` runs when it is done.

        Commands from one caller are applied in the order they were submitted (one channel, one
        writer), so a session can pipeline an insert and a cancel and still have them in order.
        Waits only while the router's queue is full (backpressure).
        """
        await self._send.send(Request(command, on_done=on_done))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        log.info("router ready")
        async with self._receive:
            while True:
                requests = [await self._receive.receive()]
                # Let every task that is ready to submit do so first: callers woken by the previous
                # batch queue their next command, and the batch (and its fsync) covers them all.
                await trio.lowlevel.checkpoint()
                while len(requests) < self.max_batch:
                    try:
                        requests.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                applied: list[AnyCommand] = []
                for request in requests:
                    command = request.command
                    if not isinstance(command, msgspec.Struct):
                        command = command(self.now())
                    else:
                        command = msgspec.structs.replace(command, ts=self.now())
                    try:
                        request.result = self.engine.apply(command)
                        applied.append(command)
                    except QaexError as exc:
                        # Refused as a whole: nothing changed, so there is nothing to journal.
                        request.error = exc
                batch = self.engine.flush()
                if self._journal is not None and applied:
                    await self._journal.commit(applied)
                self.commands_applied += len(applied)
                self.batches_flushed += 1
                if batch:
                    await self._batches.send(batch)
                for request in requests:
                    if request.done is not None:
                        request.done.set()
                    if request.on_done is not None:
                        try:
                            request.on_done(request)
                        except Exception:  # a caller's callback must not take the writer down
                            log.exception("completion callback of %r failed", request.command)
