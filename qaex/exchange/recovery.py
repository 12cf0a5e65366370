"""Recovery: rebuild the engine from the newest valid checkpoint and the journal records after it.

Runs before the exchange serves (synchronous file IO; nothing else is running yet). The rules:

* The newest checkpoint that decodes is the base; a damaged one is logged and the older one tried.
  With no checkpoint at all, the base is a fresh engine, and the journal must then start at seq 1.
* Records after the base are replayed with `Engine.apply`, and `Engine.flush` is called at each
  batch end, as the router did, so positions are marked to market at the same moments and the
  rebuilt state is bit for bit the same (`Engine.state_digest`).
* A torn tail — the end of the newest segment damaged or cut short by a crash mid-write, with no
  valid record after it — is truncated back to the last complete batch, with a WARNING. Nothing there
  was acknowledged: the router answers only after the whole batch is durable.
* Any other damage (a bad CRC with valid records after it, a sequence gap, a damaged older segment)
  raises JournalCorrupt naming the file and offset. Recovery never drops data silently.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaex.core.commands import (
    AnyCommand,
    Cancel,
    ChangePassword,
    Deposit,
    Insert,
    OpenAccount,
    SetSuspended,
    Settle,
    UpsertInstrument,
    Withdraw,
)
from qaex.core.engine import Engine
from qaex.core.errors import QaexError
from qaex.core.journal_format import Checkpoint, JournalCorrupt, SegmentScan, decode_checkpoint, scan_segment
from qaex.exchange.journal import CHECKPOINT_SUFFIX, SEGMENT_SUFFIX, Journal, fsync_directory, numbered_files

log = logging.getLogger("qaex.recovery")


@dataclass(slots=True)
class Recovered:
    engine: Engine
    last_seq: int  # of the last record replayed (== engine.seq)
    last_ts: int  # of that record: the router's clock restarts after it
    checkpoint_seq: int | None  # the checkpoint recovery started from, None for a fresh engine
    replayed: int = 0
    warnings: list[str] = field(default_factory=list)  # torn tails truncated, damaged checkpoints skipped


def load_checkpoint(checkpoints_dir: Path, warnings: list[str], *, oldest: bool = False) -> Checkpoint | None:
    """The newest (or oldest) checkpoint that decodes; damaged ones are reported in `warnings` and skipped."""
    found = numbered_files(checkpoints_dir, CHECKPOINT_SUFFIX)
    for _, path in found if oldest else reversed(found):
        try:
            return decode_checkpoint(path.read_bytes())
        except Exception as exc:  # a damaged pickle can raise nearly anything
            message = f"checkpoint {path} is damaged ({exc}); trying an older one"
            log.error("%s", message)
            warnings.append(message)
    return None


def recover(
    data_dir: str | os.PathLike[str],
    fresh_engine: Callable[[], Engine],
    *,
    repair: bool = True,
    oldest_checkpoint: bool = False,
) -> Recovered:
    """Rebuild the engine; with `repair`, truncate a torn tail on disk (the CLI reads without it).

    `oldest_checkpoint` replays from the oldest checkpoint instead (`qaex journal verify` uses it to
    check that a longer replay reaches the same state). Raises JournalCorrupt for damage that is not
    a torn tail.
    """
    path = Path(data_dir)
    segments_dir, checkpoints_dir = path / "journal", path / "checkpoints"
    warnings: list[str] = []
    checkpoint = load_checkpoint(checkpoints_dir, warnings, oldest=oldest_checkpoint)
    if checkpoint is None:
        engine, base_seq, last_ts = fresh_engine(), 0, 0
    else:
        engine, base_seq, last_ts = checkpoint.engine, checkpoint.seq, checkpoint.last_ts
        log.info("recovering from checkpoint at seq %d", base_seq)
    result = Recovered(engine, base_seq, last_ts, None if checkpoint is None else base_seq, warnings=warnings)
    segments = numbered_files(segments_dir, SEGMENT_SUFFIX)
    expected = base_seq + 1
    for index, (first_seq, segment) in enumerate(segments):
        newest = index == len(segments) - 1
        if not newest and segments[index + 1][0] <= base_seq + 1:
            continue  # every record of it is in the checkpoint
        if first_seq > expected:
            raise JournalCorrupt(
                f"journal gap: records {expected}..{first_seq - 1} are missing before {segment} "
                f"(recovering from {'checkpoint ' + str(base_seq) if checkpoint else 'an empty state'})"
            )
        scan = scan_segment(segment.read_bytes(), first_seq)
        _check_damage(scan, segment, newest, result, repair)
        for record in scan.complete_records:
            if record.seq < expected:
                continue
            try:
                command = record.command()
            except Exception as exc:
                raise JournalCorrupt(
                    f"{segment}: record seq {record.seq} at offset {record.offset} does not decode "
                    f"as a command ({exc}); was it written by another qaex version?"
                ) from None
            try:
                engine.apply(command)
            except QaexError as exc:
                raise JournalCorrupt(
                    f"{segment}: record seq {record.seq} at offset {record.offset} was refused on replay "
                    f"({exc.message}): replay diverged from the original run"
                ) from None
            if record.batch_end:
                engine.flush()
            expected = record.seq + 1
            result.last_ts = command.ts
            result.replayed += 1
    engine.flush()  # nothing pending (the last record replayed ended a batch), but start clean
    result.last_seq = expected - 1
    if engine.seq != result.last_seq:
        raise JournalCorrupt(
            f"engine applied {engine.seq} commands but the journal ends at {result.last_seq}"
        )
    log.info(
        "recovered to seq %d: %d records replayed after %s",
        result.last_seq,
        result.replayed,
        f"checkpoint {base_seq}" if checkpoint else "an empty state",
    )
    return result


def _check_damage(scan: SegmentScan, segment: Path, newest: bool, result: Recovered, repair: bool) -> None:
    """Truncate a torn tail of the newest segment, or raise JournalCorrupt for anything else."""
    damage = scan.damage
    if damage is None and scan.incomplete == 0:
        return
    if damage is not None and (damage.data_follows or not newest):
        raise JournalCorrupt(
            f"journal damaged in {segment} at offset {damage.offset}: {damage.reason}"
            + ("; valid records follow, so this is not a torn tail" if damage.data_follows else "")
            + ". Refusing to start rather than drop acknowledged commands: restore the data directory "
            "from a backup, or inspect it with `qaex journal verify`"
        )
    if damage is None and not newest:
        raise JournalCorrupt(
            f"{segment} ends inside a batch at offset {scan.batch_end}, but is not the newest"
        )
    reason = damage.reason if damage is not None else "unfinished batch"
    offset = damage.offset if damage is not None else scan.batch_end
    message = (
        f"journal {segment}: torn tail at offset {offset} ({reason}): truncating to {scan.batch_end} bytes, "
        f"dropping {scan.size - scan.batch_end} bytes ({scan.incomplete} whole records of an unfinished, "
        "never acknowledged batch)"
    )
    log.warning("%s", message)
    result.warnings.append(message)
    if not repair:
        return
    # Durably, before anything new is written: a later segment after a still-torn one is corruption.
    if scan.complete_records:
        fd = os.open(segment, os.O_WRONLY)
        try:
            os.ftruncate(fd, scan.batch_end)
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        segment.unlink()
        fsync_directory(segment.parent)


def open_journal(
    data_dir: str | os.PathLike[str],
    fresh_engine: Callable[[], Engine],
    *,
    fsync: bool = True,
    max_orders_per_second: int | None = None,
    **journal_options: Any,
) -> tuple[Journal, Recovered]:
    """Recover, then open the journal on the recovered engine, ready for the router.

    A checkpoint carries the engine's settings, because replay must use the ones the commands were
    applied with. A changed rate limit from the configuration is applied only after replay, followed
    by a checkpoint, so the commands that follow replay against the new value too.
    """
    recovered = recover(data_dir, fresh_engine)
    engine = recovered.engine
    journal = Journal(
        data_dir,
        engine,
        last_seq=recovered.last_seq,
        last_ts=recovered.last_ts,
        fsync=fsync,
        **journal_options,
    )
    journal.open()
    if max_orders_per_second is not None and engine.max_orders_per_second != max_orders_per_second:
        log.info("max_orders_per_second %d -> %d", engine.max_orders_per_second, max_orders_per_second)
        engine.max_orders_per_second = max_orders_per_second
        journal.checkpoint_now()
    return journal, recovered


def describe(command: AnyCommand) -> str:
    """One line for `qaex journal inspect`: time, command type and the fields that identify it."""
    moment = dt.datetime.fromtimestamp(command.ts / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    kind = type(command).__name__
    if isinstance(command, Insert):
        order = command.order
        price = f"@{order.limit_price:g}" if order.price_type == "LIMIT" else order.price_type
        fields = (
            f"{order.user_id} {order.order_id} {order.exchange_id}.{order.instrument_id} "
            f"{order.direction} {order.offset} {order.volume} {price} {order.time_condition}"
        )
    elif isinstance(command, Cancel):
        fields = f"{command.user_id} {command.order_id}"
    elif isinstance(command, OpenAccount):
        fields = f"{command.user_id} init_cash={command.init_cash:g}"
    elif isinstance(command, Deposit | Withdraw):
        fields = f"{command.user_id} {command.amount:g}"
    elif isinstance(command, ChangePassword):
        fields = command.user_id
    elif isinstance(command, Settle):
        fields = f"trading_day={command.trading_day or '(next)'} prices={command.prices}"
    elif isinstance(command, UpsertInstrument):
        fields = f"{command.spec.get('exchange_id')}.{command.spec.get('instrument_id')}"
    elif isinstance(command, SetSuspended):
        fields = f"{command.symbol} suspended={command.suspended}"
    else:
        fields = ""
    return f"{moment}Z {kind} {fields}"
