"""Recovery: rebuild the engine from the newest valid checkpoint and the journal records after it.

Runs before the exchange serves (synchronous file IO; nothing else is running yet). The rules:

* The newest checkpoint that decodes is the base; a damaged one is logged and the older one tried.
  With no checkpoint at all, the base is a fresh engine, and the journal must then start at seq 1.
* Records after the base are replayed with `Engine.apply`, and `Engine.flush` is called at each
  batch end, as the router did, so positions are marked to market at the same moments and the
  rebuilt state is bit for bit the same (`Engine.state_digest`).
* A torn tail — what a crash mid-write leaves at the end of the newest segment: the file cut short
  inside a record, sectors reading as zeros, whole records of a batch whose end record is missing,
  with no valid record of a later batch after it (`journal_format.classify`) — is truncated back to
  the last complete batch, with a WARNING. Nothing there was acknowledged: the router answers only
  after the whole batch is durable.
* Any other damage (a complete record failing its CRC, an impossible or one-bit-wrong length, a
  sequence gap, valid later batches after the damage, a damaged older segment) raises
  JournalCorrupt, one line naming file, offset and seq, and the `qaex journal truncate` command
  that gets past it. Recovery never drops data silently: only the operator does, with that command
  (`plan_cut` and `cut_journal` below), which keeps the bytes it removes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaex.core.calendar import MarketHours
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
from qaex.core.journal_format import (
    Checkpoint,
    JournalCorrupt,
    Record,
    SegmentScan,
    decode_checkpoint,
    resync,
    scan_segment,
)
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
            raise _corrupt(
                f"journal gap: records {expected}..{first_seq - 1} are missing before {segment} "
                f"(recovering from {'checkpoint ' + str(base_seq) if checkpoint else 'an empty state'})",
                path,
                expected,
                segment=segment,
                seq=expected,
            )
        scan = scan_segment(segment.read_bytes(), first_seq)
        _check_damage(scan, segment, first_seq, newest, result, repair, path)
        batch_first = first_seq
        for record in scan.complete_records:
            first_of_batch = batch_first  # where a cut before this record's batch would go
            if record.batch_end:
                batch_first = record.seq + 1
            if record.seq < expected:
                continue
            try:
                command = record.command()
            except Exception as exc:
                raise _corrupt(
                    f"{segment}: record seq {record.seq} at offset {record.offset} does not decode "
                    f"as a command ({exc}); was it written by another qaex version?",
                    path,
                    first_of_batch,
                    segment=segment,
                    offset=record.offset,
                    seq=record.seq,
                ) from None
            try:
                engine.apply(command)
            except QaexError as exc:
                raise _corrupt(
                    f"{segment}: record seq {record.seq} at offset {record.offset} was refused on replay "
                    f"({exc.message}): replay diverged from the original run",
                    path,
                    first_of_batch,
                    segment=segment,
                    offset=record.offset,
                    seq=record.seq,
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


def _corrupt(
    problem: str,
    data_dir: Path,
    cut_seq: int | None,
    *,
    segment: Path | None = None,
    offset: int | None = None,
    seq: int | None = None,
) -> JournalCorrupt:
    """JournalCorrupt for `problem`, with what the operator can do about it (one line)."""
    advice = (
        "Refusing to start rather than drop acknowledged commands: restore the data directory from backup"
    )
    if cut_seq is not None:
        advice += (
            f", or give up seq {cut_seq} and everything after it with "
            f"`qaex journal truncate --data-dir {data_dir} --at-seq {cut_seq}` "
            "(`--dry-run` first shows what it removes and what a checkpoint keeps)"
        )
    return JournalCorrupt(
        f"{problem}. {advice}",
        segment=None if segment is None else str(segment),
        offset=offset,
        seq=seq,
        cut_seq=cut_seq,
    )


def _check_damage(
    scan: SegmentScan,
    segment: Path,
    first_seq: int,
    newest: bool,
    result: Recovered,
    repair: bool,
    data_dir: Path,
) -> None:
    """Truncate a torn tail of the newest segment, or raise JournalCorrupt for anything else."""
    damage = scan.damage
    if damage is None and scan.incomplete == 0:
        return
    complete = scan.complete_records
    cut_seq = complete[-1].seq + 1 if complete else first_seq  # the first record of the damaged batch
    if damage is not None and not (damage.torn and newest):
        verdict = damage.verdict
        if damage.torn:
            verdict += (
                f", but {segment.name} is not the newest segment, and a segment is fsynced before "
                "the next one starts"
            )
        raise _corrupt(
            f"journal damaged in {segment} at offset {damage.offset} (record seq {damage.seq}): "
            f"{damage.reason}; {verdict}",
            data_dir,
            cut_seq,
            segment=segment,
            offset=damage.offset,
            seq=damage.seq,
        )
    if damage is None and not newest:
        raise _corrupt(
            f"{segment} ends inside a batch at offset {scan.batch_end} (seq {cut_seq}), but is not the "
            "newest segment, and a segment is fsynced before the next one starts",
            data_dir,
            cut_seq,
            segment=segment,
            offset=scan.batch_end,
            seq=cut_seq,
        )
    reason = f"{damage.reason}: {damage.verdict}" if damage is not None else "unfinished batch"
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


# -- `qaex journal truncate` ------------------------------------------------------------------------------
class CannotCut(Exception):
    """The cut asked for is not possible (or not needed); the message says why and what would work."""


@dataclass(slots=True)
class CutPlan:
    """What `cut_journal` does to make the journal end just before `at_seq`.

    ``segment`` is truncated to ``keep`` bytes (``keep == 0``: moved aside whole), the later segments
    and the checkpoints in ``checkpoints_aside`` are moved aside, and the next start recovers from
    checkpoint ``base_seq`` (None: an empty state) and replays up to ``at_seq - 1``. Everything moved
    aside or cut off is kept next to where it was, renamed with a ``.cut-at-<seq>`` suffix.
    """

    data_dir: Path
    at_seq: int
    segment: Path | None
    keep: int
    size: int
    later_segments: list[Path]
    checkpoints_aside: list[Path]
    base_seq: int | None
    removed_records: int  # intact records among what is cut, also those found after damage
    removed_last_seq: int | None  # the highest seq among those
    removed_damage: bool  # what is cut holds damaged bytes too

    @property
    def recovers_to(self) -> int:
        """The seq the next start ends at."""
        return max(self.at_seq - 1, self.base_seq or 0)

    def describe(self) -> list[str]:
        lines: list[str] = []
        if self.segment is not None and self.keep:
            cut = self.size - self.keep
            lines.append(f"cut {self.segment} at offset {self.keep}: {cut} bytes from seq {self.at_seq} on")
        elif self.segment is not None:
            lines.append(f"move aside {self.segment} ({self.size} bytes, from seq {self.at_seq} on)")
        lines += [f"move aside {path} (later segment)" for path in self.later_segments]
        lines += [f"move aside {path} (cannot be replayed to the new end)" for path in self.checkpoints_aside]
        count = self.removed_records
        removed = f"{count} intact record{'s' if count != 1 else ''}"
        if self.removed_last_seq is not None:
            removed += f" (up to seq {self.removed_last_seq})"
        if self.removed_damage:
            removed += " and the damaged bytes"
        lines.append(f"removed from the journal: {removed}")
        base = "an empty state" if self.base_seq is None else f"checkpoint {self.base_seq}"
        if self.base_seq is not None and self.base_seq >= self.at_seq:
            kept = f"commands up to seq {self.base_seq} are kept (checkpoint {self.base_seq} holds them)"
            if self.removed_last_seq is not None and self.removed_last_seq > self.base_seq:
                kept += f", those from seq {self.base_seq + 1} on are lost"
        else:
            kept = f"commands from seq {self.at_seq} on are lost"
        lines.append(f"the next start recovers from {base} to seq {self.recovers_to}: {kept}")
        return lines


def _aside(path: Path, at_seq: int) -> Path:
    """A free name next to `path` for what is moved aside."""
    target = path.with_name(f"{path.name}.cut-at-{at_seq}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.cut-at-{at_seq}.{number}")
    return target


def plan_cut(data_dir: str | os.PathLike[str], at_seq: int) -> CutPlan:
    """How to make the journal end just before record `at_seq`; raises CannotCut if it may not.

    `at_seq` must start a batch (the batch is the unit of acknowledgement) and must not lie beyond
    the first damage of its segment. If the newest checkpoint that decodes already holds `at_seq`,
    it becomes the only one (the others could no longer be replayed to it) and the commands it holds
    are kept; otherwise checkpoints past the new end are moved aside.
    """
    path = Path(data_dir)
    segments_dir, checkpoints_dir = path / "journal", path / "checkpoints"
    segments = numbered_files(segments_dir, SEGMENT_SUFFIX)
    if not segments:
        raise CannotCut(f"no journal in {path}")
    before = [(first, segment) for first, segment in segments if first <= at_seq]
    if not before:
        raise CannotCut(f"seq {at_seq} is before the first segment of the journal (seq {segments[0][0]})")
    index = len(before) - 1
    first_seq, segment = before[-1]
    data = segment.read_bytes()
    scan = scan_segment(data, first_seq)
    by_seq = {record.seq: record for record in scan.records}
    ends = [record.seq for record in scan.records if record.batch_end and record.seq < at_seq]
    batch_start = ends[-1] + 1 if ends else first_seq
    if at_seq == first_seq:
        keep = 0
    elif at_seq - 1 in by_seq:
        if not by_seq[at_seq - 1].batch_end:
            raise CannotCut(f"seq {at_seq} is inside a batch that starts at seq {batch_start}: cut there")
        keep = by_seq[at_seq - 1].end
    elif scan.damage is not None:
        raise CannotCut(
            f"{segment} is damaged at offset {scan.damage.offset} (record seq {scan.damage.seq}), before "
            f"seq {at_seq}: the cut must come before the damage (its batch starts at seq {batch_start})"
        )
    else:
        last = scan.records[-1].seq if scan.records else first_seq - 1
        raise CannotCut(f"the journal ends at seq {last}; there is no seq {at_seq} to cut at")
    later = [later_segment for _, later_segment in segments[index + 1 :]]
    cut = [record for record in _intact(data, scan) if record.seq >= at_seq]
    damaged = scan.damage is not None
    for later_first, later_segment in segments[index + 1 :]:
        later_data = later_segment.read_bytes()
        later_scan = scan_segment(later_data, later_first)
        cut += _intact(later_data, later_scan)
        damaged = damaged or later_scan.damage is not None
    checkpoints = numbered_files(checkpoints_dir, CHECKPOINT_SUFFIX)
    base: int | None = None
    for seq, checkpoint in reversed(checkpoints):
        try:
            decode_checkpoint(checkpoint.read_bytes())
        except Exception:  # damaged: recovery would skip it too
            continue
        base = seq
        break
    if base is not None and base >= at_seq:
        aside = [checkpoint for seq, checkpoint in checkpoints if seq != base]
    else:
        aside = [checkpoint for seq, checkpoint in checkpoints if seq >= at_seq]
    plan = CutPlan(
        path,
        at_seq,
        segment if keep < len(data) or keep == 0 else None,
        keep,
        len(data),
        later,
        aside,
        base,
        len(cut),
        max((record.seq for record in cut), default=None),
        damaged,
    )
    if plan.segment is None and not later and not aside:
        raise CannotCut(f"nothing to cut: the journal already ends at seq {at_seq - 1}")
    return plan


def _intact(data: bytes, scan: SegmentScan) -> list[Record]:
    """The valid records of a segment: those before its first damage, and those found after it."""
    if scan.damage is None:
        return scan.records
    return [*scan.records, *resync(data, scan.damage.offset, scan.damage.seq)]


def cut_journal(plan: CutPlan) -> list[Path]:
    """Carry out `plan` (the data directory lock must be held); returns the files holding what was removed.

    Each step is durable before the next, and a rerun of the same cut after an interruption finishes it.
    """
    saved: list[Path] = []
    segments_dir, checkpoints_dir = plan.data_dir / "journal", plan.data_dir / "checkpoints"
    if plan.segment is not None and plan.keep:
        target = _aside(plan.segment, plan.at_seq)
        with plan.segment.open("rb") as source:
            source.seek(plan.keep)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as copy:
                shutil.copyfileobj(source, copy)
                copy.flush()
                os.fsync(copy.fileno())
        fsync_directory(segments_dir)
        fd = os.open(plan.segment, os.O_WRONLY)
        try:
            os.ftruncate(fd, plan.keep)
            os.fsync(fd)
        finally:
            os.close(fd)
        saved.append(target)
    moves = [*([plan.segment] if plan.segment is not None and not plan.keep else []), *plan.later_segments]
    moves += plan.checkpoints_aside
    for path in moves:
        target = _aside(path, plan.at_seq)
        os.replace(path, target)
        saved.append(target)
    fsync_directory(segments_dir)
    if plan.checkpoints_aside:
        fsync_directory(checkpoints_dir)
    return saved


def open_journal(
    data_dir: str | os.PathLike[str],
    fresh_engine: Callable[[], Engine],
    *,
    fsync: bool = True,
    max_orders_per_second: int | None = None,
    market_hours: MarketHours | None = None,
    **journal_options: Any,
) -> tuple[Journal, Recovered]:
    """Recover, then open the journal on the recovered engine, ready for the router.

    A checkpoint carries the engine's settings, because replay must use the ones the commands were
    applied with. A changed rate limit from the configuration is applied only after replay, followed
    by a checkpoint, so the commands that follow replay against the new value too. The market-hours
    policy likewise (a journaled order was accepted, so a replay with the check off agrees; one with it
    on must have the calendar the order was accepted with).
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
    if market_hours is not None and engine.market_hours != market_hours:
        log.info("market_hours %s -> %s", engine.market_hours, market_hours)
        engine.market_hours = market_hours
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
