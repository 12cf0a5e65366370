"""Journal: the write-ahead log that makes "acknowledged" mean "durable".

The OrderRouter applies a run of commands, then awaits `Journal.commit(commands)` before it sends
the batch to the gateway or answers anyone. `commit` encodes the batch's records in the event loop
(msgpack, microseconds) and writes and fsyncs them in one worker thread call — one fsync per batch,
whatever its size: group commit. While that thread waits for the disk, the event loop keeps serving,
and commands arriving meanwhile queue in the router and form the next, larger batch; so the fsync
cost is shared by more commands exactly when load is high.

Layout under the data directory (format in qaex.core.journal_format)::

    journal/00000000000000000001.log       segments, named after their first sequence number
    checkpoints/00000000000000050000.ckpt   engine snapshots, named after the last record they hold

Checkpoints bound recovery time. Every `checkpoint_records` records or `checkpoint_seconds`,
`commit` pickles the engine (in the loop: the router is awaiting us, so the engine is between two
batches and cannot change) and hands the bytes to the journal's own task, which writes them
atomically (temp file, fsync, rename, fsync directory) without delaying acknowledgements. The two
newest checkpoints are kept, and a segment is deleted only once the *older* of them covers it, so
a damaged newest checkpoint still leaves a way to recover.

A write or fsync error is fatal: the router crashes, the exchange stops, and the process exits.
After a failed fsync the page cache can no longer be trusted (Linux may drop the dirty pages), so
carrying on could acknowledge commands that are lost.

Recovery tells a torn tail from damage (qaex.core.journal_format.classify) by two properties of
this writer: one commit at a time, so a batch is written only after the previous one's fsync
returned (a valid later batch proves an earlier one was acknowledged); and each run appends to its
own new segment, so only the newest segment can end in a torn write.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from qaex.core.commands import AnyCommand
from qaex.core.engine import Engine
from qaex.core.journal_format import SEGMENT_MAGIC, encode_batch, encode_checkpoint

log = logging.getLogger("qaex.journal")

SEGMENT_SUFFIX = ".log"
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
CHECKPOINT_SUFFIX = ".ckpt"
CHECKPOINTS_KEPT = 2


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def checkpoint_name(seq: int) -> str:
    return f"{seq:020d}{CHECKPOINT_SUFFIX}"


def numbered_files(directory: Path, suffix: str) -> list[tuple[int, Path]]:
    """(number, path) of every ``<digits><suffix>`` file, in ascending order; other files are ignored."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        stem = path.name.removesuffix(suffix)
        if path.name.endswith(suffix) and stem.isdigit():
            found.append((int(stem), path))
    found.sort()
    return found


def fsync_directory(directory: Path) -> None:
    """Make a created, renamed or deleted name durable (the file's own fsync does not cover it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_checkpoint(directory: Path, seq: int, data: bytes) -> Path:
    """Write a checkpoint atomically: it is either absent or complete, never half there."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(seq)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(directory)
    return path


def prune(segments_dir: Path, checkpoints_dir: Path) -> list[Path]:
    """Delete checkpoints beyond the newest CHECKPOINTS_KEPT and segments the oldest kept one covers.

    A segment is covered when the next segment starts at or before ``checkpoint seq + 1``: every
    record in it is then in the checkpoint. The newest segment is never deleted.
    """
    removed: list[Path] = []
    checkpoints = numbered_files(checkpoints_dir, CHECKPOINT_SUFFIX)
    for _, path in checkpoints[:-CHECKPOINTS_KEPT]:
        path.unlink(missing_ok=True)
        removed.append(path)
    kept = checkpoints[-CHECKPOINTS_KEPT:]
    if len(kept) < CHECKPOINTS_KEPT:
        return removed
    covered = kept[0][0]
    segments = numbered_files(segments_dir, SEGMENT_SUFFIX)
    for (_, path), (next_first, _) in itertools.pairwise(segments):
        if next_first <= covered + 1:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        fsync_directory(segments_dir)
    return removed


class Journal:
    """The CommandLog of the OrderRouter (see qaex.exchange.router), plus checkpoints.

    Created after recovery (qaex.exchange.recovery) with the recovered engine and the sequence
    number of its last record. Call `open()` before the first commit; `run()` writes checkpoints and,
    when cancelled at shutdown, waits for an in-flight commit, writes a final checkpoint and closes.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        engine: Engine,
        *,
        last_seq: int = 0,
        last_ts: int = 0,
        fsync: bool = True,
        segment_bytes: int = 64 << 20,
        checkpoint_records: int = 100_000,
        checkpoint_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(data_dir)
        self.segments_dir = self.path / "journal"
        self.checkpoints_dir = self.path / "checkpoints"
        self.engine = engine
        self.last_seq = last_seq
        self.last_ts = last_ts
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.checkpoint_records = checkpoint_records
        self.checkpoint_seconds = checkpoint_seconds
        self._clock = clock
        self._fd: int | None = None
        self._segment_size = 0
        self._lock = trio.Lock()  # one commit at a time, and shutdown waits for it
        self._checkpoint_send, self._checkpoint_receive = trio.open_memory_channel[tuple[int, bytes]](1)
        self._checkpoint_seq = last_seq
        self._checkpoint_time = clock()
        self.checkpointed_seq = -1  # newest checkpoint on disk, -1 until one is known
        self.closed = False
        # Counters, for metrics and the benchmark.
        self.batches = 0
        self.records = 0
        self.fsync_seconds = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------
    def open(self) -> None:
        """Start a new segment after `last_seq`, and make sure some checkpoint exists.

        Each run writes its own segment, so a segment that recovery truncated is never appended to.
        The first checkpoint of a fresh directory (seq 0) pins the instruments and settings the
        commands will be replayed against, whatever the configuration says at the next start.
        """
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = numbered_files(self.checkpoints_dir, CHECKPOINT_SUFFIX)
        if checkpoints:
            self.checkpointed_seq = checkpoints[-1][0]
        else:
            self.checkpoint_now()
        self._open_segment(self.last_seq + 1)

    def _open_segment(self, first_seq: int) -> None:
        path = self.segments_dir / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        write_all(fd, SEGMENT_MAGIC)
        if self.fsync:
            os.fsync(fd)
            fsync_directory(self.segments_dir)
        self._fd = fd
        self._segment_size = len(SEGMENT_MAGIC)
        log.info("journal segment %s opened", path)

    def _rotate(self, first_seq: int) -> None:
        """Close the full segment (fsynced even with fsync off: only the newest segment may be torn)."""
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self._open_segment(first_seq)

    def close(self) -> None:
        """Make everything written durable (also with fsync off) and close the segment."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self.closed = True

    def checkpoint_now(self) -> Path:
        """Write a checkpoint of the engine synchronously (start-up and shutdown, not serving)."""
        self._check_engine()
        path = write_checkpoint(
            self.checkpoints_dir, self.last_seq, encode_checkpoint(self.engine, self.last_seq, self.last_ts)
        )
        self._checkpoint_done(self.last_seq)
        log.info("checkpoint %s written", path.name)
        return path

    def _checkpoint_done(self, seq: int) -> None:
        self.checkpointed_seq = max(self.checkpointed_seq, seq)
        for path in prune(self.segments_dir, self.checkpoints_dir):
            log.info("removed %s (covered by a checkpoint)", path.name)

    def _check_engine(self) -> None:
        if self.engine.seq != self.last_seq:
            raise RuntimeError(
                f"engine has applied {self.engine.seq} commands but the journal holds {self.last_seq}"
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the checkpoints `commit` hands over; on cancellation, close cleanly."""
        if self._fd is None and not self.closed:
            self.open()
        task_status.started()
        log.info("journal ready at seq %d (fsync %s)", self.last_seq, "per batch" if self.fsync else "off")
        try:
            async with self._checkpoint_receive:
                async for seq, data in self._checkpoint_receive:
                    await trio.to_thread.run_sync(write_checkpoint, self.checkpoints_dir, seq, data)
                    await trio.to_thread.run_sync(self._checkpoint_done, seq)
                    log.info("checkpoint at seq %d written (%d bytes)", seq, len(data))
        finally:
            with trio.CancelScope(shield=True):
                async with self._lock:  # an in-flight commit finishes first
                    self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        try:
            # If the router was cancelled between applying a batch and journaling it, the engine is
            # ahead of the journal: a checkpoint then would hold commands no record describes.
            if self.engine.seq == self.last_seq and self.last_seq > self.checkpointed_seq:
                self.checkpoint_now()
        finally:
            self.close()
            log.info("journal closed at seq %d, state digest %s", self.last_seq, self.engine.state_digest())

    # -- the CommandLog ------------------------------------------------------------------------------
    async def commit(self, commands: list[AnyCommand]) -> None:
        """Make a batch of applied commands durable; returns once they are (or raises: fatal)."""
        if not commands:
            return
        async with self._lock:
            if self.closed or self._fd is None:
                raise RuntimeError("journal is not open")
            first = self.last_seq + 1
            data = encode_batch(first, commands)
            rotate = self._segment_size + len(data) > self.segment_bytes and self._segment_size > len(
                SEGMENT_MAGIC
            )
            if self.fsync or rotate:
                await trio.to_thread.run_sync(self._write, data, first if rotate else 0)
            else:  # QAEX_FSYNC=off: a write to the page cache, microseconds: no thread hop
                self._write(data, 0)
            self.last_seq += len(commands)
            self.last_ts = commands[-1].ts
            self.batches += 1
            self.records += len(commands)
            self._maybe_checkpoint()

    def _write(self, data: bytes, rotate_to: int) -> None:
        """Append one batch and (fsync on) wait until it is on disk: in a worker thread when it
        fsyncs or rotates to a new segment, on the loop otherwise (the page cache takes it at once)."""
        if rotate_to:
            self._rotate(rotate_to)
        assert self._fd is not None
        write_all(self._fd, data)
        self._segment_size += len(data)
        if self.fsync:
            started = time.perf_counter()
            _fdatasync(self._fd)  # the file only grows; fdatasync covers the size change
            self.fsync_seconds += time.perf_counter() - started

    def _maybe_checkpoint(self) -> None:
        pending = self.last_seq - self._checkpoint_seq
        if pending <= 0:
            return
        due = pending >= self.checkpoint_records
        due = due or self._clock() - self._checkpoint_time >= self.checkpoint_seconds
        if not due:
            return
        if self._checkpoint_send.statistics().current_buffer_used:
            return  # the writer is behind: try again after the next batch
        self._check_engine()
        # The engine is between batches and the router is waiting for us: a consistent snapshot.
        data = encode_checkpoint(self.engine, self.last_seq, self.last_ts)
        self._checkpoint_send.send_nowait((self.last_seq, data))
        self._checkpoint_seq = self.last_seq
        self._checkpoint_time = self._clock()
