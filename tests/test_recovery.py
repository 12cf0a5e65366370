"""Recovery in one process: a real Exchange with the journal on a temp dir, crash images, replays.

A "crash image" is a copy of the data directory taken while the exchange runs, once every
submitted command has been answered: exactly what a `kill -9` at that moment would leave on disk.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from qaex.core.commands import AnyCommand, Deposit, OpenAccount
from qaex.core.engine import Engine
from qaex.core.errors import QaexError
from qaex.core.journal_format import HEADER, JournalCorrupt, Record, encode_batch, scan_segment
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.journal import CHECKPOINT_SUFFIX, SEGMENT_SUFFIX, Journal, numbered_files
from qaex.exchange.recovery import CannotCut, cut_journal, open_journal, plan_cut, recover

SYMBOLS = (("SHFE", "cu2601", 86000.0, 10.0), ("SHFE", "rb2601", 3100.0, 1.0))


def fresh_engine() -> Engine:
    return Engine(max_orders_per_second=0)


async def run_exchange(
    data_dir: Path,
    body: Callable[[Exchange], Awaitable[None]],
    *,
    mark_interval: float = 0.5,
    **journal_options: Any,
) -> Exchange:
    """Recover, serve `body`, shut down gracefully (as SIGTERM does); returns the stopped exchange."""
    journal, recovered = open_journal(data_dir, fresh_engine, **journal_options)
    exchange = Exchange(recovered.engine, journal=journal, mark_interval=mark_interval)
    exchange.router.resume_after(recovered.last_ts)
    exchange.seed_from_engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        await body(exchange)
        nursery.cancel_scope.cancel()
    return exchange


async def trade(exchange: Exchange, users: tuple[str, ...] = ("alice", "bob"), orders: int = 300) -> None:
    """Accounts, deposits and `orders` crossing orders and cancels from concurrent submitters."""
    run = uuid.uuid4().hex[:6]
    for user in users:
        if user not in exchange.engine.users:
            await exchange.open_account(user, "pw-123456", 10_000_000.0)
    await exchange.deposit(users[0], 1234.5)

    async def submitter(user: str, seed: int) -> None:
        rng = random.Random(seed)
        for n in range(orders // len(users)):
            exchange_id, instrument_id, mid, tick = SYMBOLS[rng.randrange(len(SYMBOLS))]
            order_id = f"{user}-{run}-{seed}-{n}"
            await exchange.insert_order(
                InsertOrder(
                    user_id=user,
                    order_id=order_id,
                    exchange_id=exchange_id,
                    instrument_id=instrument_id,
                    direction=rng.choice(("BUY", "SELL")),
                    offset="OPEN",
                    volume=rng.randint(1, 5),
                    limit_price=mid + tick * rng.randint(-3, 3),
                )
            )
            if rng.random() < 0.3:
                order = exchange.engine.users[user].orders[order_id]
                if order.status == "ALIVE":
                    with contextlib.suppress(QaexError):  # filled meanwhile by another submitter
                        await exchange.cancel_order(user, order_id)

    async with trio.open_nursery() as nursery:
        for index, user in enumerate(users):
            for seed in range(2):
                nursery.start_soon(submitter, user, index * 10 + seed)


async def idle(exchange: Exchange) -> None:
    await trio.lowlevel.checkpoint()


def crash_image(data_dir: Path, target: Path) -> Path:
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("LOCK"))
    return target


def segments(data_dir: Path) -> list[tuple[int, Path]]:
    return numbered_files(data_dir / "journal", SEGMENT_SUFFIX)


def checkpoints(data_dir: Path) -> list[tuple[int, Path]]:
    return numbered_files(data_dir / "checkpoints", CHECKPOINT_SUFFIX)


async def checkpoints_written(journal: Journal, seconds: float = 10.0) -> None:
    """Wait until the journal task has written every checkpoint handed to it, at most `seconds`.

    Written means on disk and pruned after: the task is back waiting for the next one, with none queued.
    """
    with trio.fail_after(seconds):
        while True:
            stats = journal._checkpoint_receive.statistics()
            if stats.current_buffer_used == 0 and stats.tasks_waiting_receive == 1:
                return
            await trio.sleep(0.005)


# -- replay ---------------------------------------------------------------------------------------------
async def test_restart_rebuilds_the_same_state(tmp_path: Path) -> None:
    first = await run_exchange(tmp_path, trade)
    assert first.engine.trades_made > 10
    digest = first.engine.state_digest()
    second = await run_exchange(tmp_path, idle)
    assert second.engine.state_digest() == digest


async def test_replay_of_every_record_rebuilds_the_same_state(tmp_path: Path) -> None:
    """Without the shutdown checkpoint, recovery replays the whole journal from seq 0."""
    first = await run_exchange(tmp_path, trade)
    digest = first.engine.state_digest()
    for seq, path in checkpoints(tmp_path):
        if seq:
            path.unlink()
    recovered = recover(tmp_path, fresh_engine)
    assert recovered.checkpoint_seq == 0
    assert recovered.replayed == first.engine.seq
    assert recovered.engine.state_digest() == digest


async def test_crash_image_recovers_every_answered_command(tmp_path: Path) -> None:
    digests: list[str] = []

    async def body(exchange: Exchange) -> None:
        await trade(exchange)
        digests.append(exchange.engine.state_digest())
        crash_image(tmp_path / "data", tmp_path / "crash")

    await run_exchange(tmp_path / "data", body)
    recovered = recover(tmp_path / "crash", fresh_engine)
    assert recovered.checkpoint_seq == 0  # no shutdown checkpoint in a crash
    assert recovered.engine.state_digest() == digests[0]


async def test_recovered_sessions_see_complete_user_trees(tmp_path: Path) -> None:
    first = await run_exchange(tmp_path, trade)
    trees: dict[str, Any] = {}

    async def look(exchange: Exchange) -> None:
        trees.update(exchange.snapshots.full_view("alice")["trade"])

    await run_exchange(tmp_path, look)
    tree = trees["alice"]
    assert set(tree["orders"]) == set(first.engine.users["alice"].orders)
    assert set(tree["trades"]) == set(first.engine.users["alice"].trades)
    assert tree["accounts"]["CNY"] == first.engine.users["alice"].account.to_diff()


async def test_router_clock_continues_after_the_last_record(tmp_path: Path) -> None:
    await run_exchange(tmp_path, trade)
    last_ts = recover(tmp_path, fresh_engine, repair=False).last_ts
    seen: list[int] = []

    async def body(exchange: Exchange) -> None:
        exchange.router._clock = lambda: 1  # a clock far behind the journal
        await exchange.deposit("alice", 1.0)
        seen.append(exchange.router._last_ts)

    await run_exchange(tmp_path, body)
    assert seen[0] > last_ts


# -- torn tails and corruption ----------------------------------------------------------------------------
async def crashed_journal(tmp_path: Path) -> tuple[Path, str]:
    """A crash image of a traded exchange, and the digest of the state it must recover to.

    Taken with no write in flight (the mark-to-market timer is off), so the tests below that append
    a torn or damaged tail append it to a journal ending with a complete batch, as a crash would.
    """
    digests: list[str] = []

    async def body(exchange: Exchange) -> None:
        await trade(exchange, orders=120)
        digests.append(exchange.engine.state_digest())
        crash_image(tmp_path / "data", tmp_path / "crash")

    await run_exchange(tmp_path / "data", body, mark_interval=3600)
    return tmp_path / "crash", digests[0]


@pytest.mark.parametrize("cut", [1, 5, 17, 30], ids=["1-byte", "short-header", "header-only", "short-body"])
async def test_torn_tail_is_truncated_with_a_warning(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, digest = await crashed_journal(tmp_path)
    _, segment = segments(data_dir)[-1]
    size = segment.stat().st_size
    engine = fresh_engine()
    torn = encode_batch(10**6, [_deposit(engine)])[:cut]
    with segment.open("ab") as file:
        file.write(torn)
    with caplog.at_level(logging.WARNING, logger="qaex.recovery"):
        recovered = recover(data_dir, fresh_engine)
    assert recovered.engine.state_digest() == digest
    assert "torn tail" in caplog.text
    assert segment.stat().st_size == size


async def test_unfinished_batch_is_dropped_whole(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Whole records without the batch's end record were never acknowledged: all of them go."""
    data_dir, digest = await crashed_journal(tmp_path)
    last_seq = recover(data_dir, fresh_engine, repair=False).last_seq
    _, segment = segments(data_dir)[-1]
    size = segment.stat().st_size
    batch = encode_batch(last_seq + 1, [_deposit(fresh_engine()), _deposit(fresh_engine())])
    with segment.open("ab") as file:
        file.write(batch[: len(batch) - 3])  # first record whole, second torn
    with caplog.at_level(logging.WARNING, logger="qaex.recovery"):
        recovered = recover(data_dir, fresh_engine)
    assert recovered.last_seq == last_seq
    assert recovered.engine.state_digest() == digest
    assert "1 whole records of an unfinished" in caplog.text
    assert segment.stat().st_size == size


async def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    """After a power loss the file size may be durable while its last pages read as zeros."""
    data_dir, digest = await crashed_journal(tmp_path)
    _, segment = segments(data_dir)[-1]
    with segment.open("ab") as file:
        file.write(bytes(4096))
    assert recover(data_dir, fresh_engine).engine.state_digest() == digest


async def test_bad_crc_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    data_dir, _ = await crashed_journal(tmp_path)
    _, segment = segments(data_dir)[-1]
    data = bytearray(segment.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(
        JournalCorrupt, match=rf"{segment.name} at offset \d+ \(record seq \d+\): CRC mismatch"
    ):
        recover(data_dir, fresh_engine)
    assert segment.read_bytes() == bytes(data)  # nothing truncated


async def test_damaged_length_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    """A flipped length makes the record look cut short; the valid records after it give it away."""
    data_dir, _ = await crashed_journal(tmp_path)
    _, segment = segments(data_dir)[-1]
    data = bytearray(segment.read_bytes())
    data[8 + 3] = 0x7F  # the first record's length: now about 2 GiB
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=r"offset 8 \(record seq 1\): impossible record length"):
        recover(data_dir, fresh_engine)


async def test_damaged_newest_checkpoint_falls_back_to_the_older_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = await run_exchange(tmp_path, trade)
    digest = first.engine.state_digest()
    seq, newest = checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:-10])
    with caplog.at_level(logging.ERROR, logger="qaex.recovery"):
        recovered = recover(tmp_path, fresh_engine)
    assert recovered.checkpoint_seq is not None and recovered.checkpoint_seq < seq
    assert recovered.engine.state_digest() == digest
    assert "is damaged" in caplog.text


# -- checkpoints ------------------------------------------------------------------------------------------
async def test_checkpoint_then_crash_recovers_from_the_checkpoint(tmp_path: Path) -> None:
    digests: list[str] = []
    seqs: list[tuple[int, int]] = []  # (newest checkpoint on disk, last record) at the crash

    async def body(exchange: Exchange) -> None:
        await trade(exchange)
        journal = exchange.journal
        assert journal is not None
        await checkpoints_written(journal)
        digests.append(exchange.engine.state_digest())
        seqs.append((journal.checkpointed_seq, journal.last_seq))
        crash_image(tmp_path / "data", tmp_path / "crash")

    await run_exchange(tmp_path / "data", body, checkpoint_records=50)
    [(checkpointed, last)] = seqs
    assert 0 < checkpointed <= last  # checkpoints were written while serving
    recovered = recover(tmp_path / "crash", fresh_engine)
    # Recovery starts from the newest checkpoint and replays exactly the records after it.
    assert recovered.checkpoint_seq == checkpointed
    assert recovered.replayed == last - checkpointed
    assert recovered.engine.state_digest() == digests[0]


async def test_segments_are_kept_until_a_checkpoint_covers_them(tmp_path: Path) -> None:
    await run_exchange(tmp_path, trade, segment_bytes=4096)
    assert segments(tmp_path)[0][0] == 1  # only the seq-0 and shutdown checkpoints: older one covers nothing
    assert len(segments(tmp_path)) > 3
    await run_exchange(tmp_path, trade, segment_bytes=4096, checkpoint_records=100)
    kept = checkpoints(tmp_path)
    assert len(kept) == 2
    first_segments = segments(tmp_path)
    assert first_segments[0][0] > 1  # old segments were removed...
    assert first_segments[0][0] <= kept[0][0] + 1  # ...but only those the older checkpoint covers
    digest = recover(tmp_path, fresh_engine, repair=False).engine.state_digest()
    oldest = recover(tmp_path, fresh_engine, repair=False, oldest_checkpoint=True)
    assert oldest.replayed > 0
    assert oldest.engine.state_digest() == digest


async def test_fsync_off_journals_the_same_records(tmp_path: Path) -> None:
    first = await run_exchange(tmp_path, trade, fsync=False)
    assert first.journal is not None
    recovered = recover(tmp_path, fresh_engine)
    assert recovered.engine.state_digest() == first.engine.state_digest()


async def test_changed_rate_limit_applies_after_replay(tmp_path: Path) -> None:
    await run_exchange(tmp_path, trade)
    journal, recovered = open_journal(tmp_path, fresh_engine, max_orders_per_second=7)
    journal.close()
    assert recovered.engine.max_orders_per_second == 7
    assert recover(tmp_path, fresh_engine, repair=False).engine.max_orders_per_second == 7


def _deposit(engine: Engine) -> Any:
    return Deposit(ts=1, user_id="alice", amount=1.0)


# -- issue #13: damage in the last acknowledged batch is not a torn tail ----------------------------------
BATCH_SIZES = (1, 3, 2, 4)


def deposits(first_ts: int, count: int) -> list[AnyCommand]:
    return [Deposit(ts=first_ts + n, user_id="alice", amount=1.0 + n) for n in range(count)]


async def acknowledged_journal(
    tmp_path: Path, sizes: tuple[int, ...] = BATCH_SIZES, *, stop: bool = False, **journal_options: Any
) -> tuple[Path, str]:
    """The data directory `kill -9` leaves right after the last batch was acknowledged, and its digest.

    Batches go through open_journal and Journal.commit (written and fsynced); the journal is closed
    without the shutdown checkpoint, so only the seq-0 checkpoint exists and every record is needed.
    With `stop`, a checkpoint of the end is written first, as a graceful stop does.
    """
    data_dir = tmp_path / "data"
    journal, recovered = open_journal(data_dir, fresh_engine, **journal_options)
    engine = recovered.engine
    ts = 1
    batches: list[list[AnyCommand]] = [
        [OpenAccount(ts=ts, user_id="alice", password_hash="h", init_cash=1e6)]
    ]
    for size in sizes[1:]:
        ts += 10
        batches.append(deposits(ts, size))
    for batch in batches:
        for command in batch:
            engine.apply(command)
        engine.flush()
        await journal.commit(batch)
    if stop:
        journal.checkpoint_now()
    journal.close()
    return data_dir, engine.state_digest()


def last_batch(data_dir: Path) -> tuple[Path, list[Record], int]:
    """The newest segment, its records, and the first seq of its last batch."""
    first_seq, segment = segments(data_dir)[-1]
    scan = scan_segment(segment.read_bytes(), first_seq)
    assert scan.damage is None and scan.incomplete == 0
    ends = [record.seq for record in scan.records[:-1] if record.batch_end]
    return segment, scan.records, ends[-1] + 1 if ends else first_seq


def flip(path: Path, offset: int, mask: int) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)


# (offset in the record, bit mask): every field of the header, and the body.
FLIPS = {
    "body": (HEADER.size + 5, 0x04),
    "body-last-byte": (-1, 0x01),
    "crc": (4, 0x01),
    "crc-high-bit": (7, 0x80),
    "seq": (8, 0x01),
    "seq-high-byte": (15, 0x01),
    "flags": (16, 0x01),
    "length-bit-0": (0, 0x01),
    "length-bit-3": (0, 0x08),
    "length-bit-12": (1, 0x10),
    "length-bit-20": (2, 0x10),
    "length-bit-30": (3, 0x40),
}


@pytest.mark.parametrize("where", list(FLIPS))
async def test_bit_flip_in_the_last_acknowledged_record_refuses_to_start(tmp_path: Path, where: str) -> None:
    data_dir, _ = await acknowledged_journal(tmp_path)
    segment, records, batch_start = last_batch(data_dir)
    last = records[-1]
    assert last.batch_end
    at, mask = FLIPS[where]
    damaged = flip(segment, last.end - 1 if at < 0 else last.offset + at, mask)
    before = {path.name for _, path in segments(data_dir)}
    with pytest.raises(JournalCorrupt) as caught:
        open_journal(data_dir, fresh_engine)
    message = str(caught.value)
    assert f"journal damaged in {segment} at offset {last.offset} (record seq {last.seq})" in message
    assert "\n" not in message  # one line for `qaex cannot start: ...`
    assert f"qaex journal truncate --data-dir {data_dir} --at-seq {batch_start}" in message
    assert segment.read_bytes() == damaged  # nothing truncated
    assert {path.name for _, path in segments(data_dir)} == before  # and no new segment started


async def test_bit_flip_in_an_earlier_record_of_the_last_batch_refuses_to_start(tmp_path: Path) -> None:
    """The batch's end record is intact: the damaged record is still part of an acknowledged batch."""
    data_dir, _ = await acknowledged_journal(tmp_path)
    segment, records, batch_start = last_batch(data_dir)
    first = next(record for record in records if record.seq == batch_start)
    flip(segment, first.offset + HEADER.size + 3, 0x20)
    with pytest.raises(JournalCorrupt, match=rf"at offset {first.offset} \(record seq {first.seq}\)"):
        recover(data_dir, fresh_engine)


async def test_bit_flip_in_the_last_record_of_a_traded_journal_refuses_to_start(tmp_path: Path) -> None:
    await run_exchange(tmp_path, lambda exchange: trade(exchange, orders=60))
    for seq, path in checkpoints(tmp_path):
        if seq:
            path.unlink()  # as if killed right after the last acknowledgement
    segment, records, _ = last_batch(tmp_path)
    flip(segment, records[-1].offset + HEADER.size + len(records[-1].body) // 2, 0x01)
    with pytest.raises(JournalCorrupt, match=rf"record seq {records[-1].seq}\)"):
        recover(tmp_path, fresh_engine)


async def test_zeroed_sectors_before_later_batches_refuse_to_start(tmp_path: Path) -> None:
    """Zeros in the middle, then valid batches: a crash only loses the batch it interrupted, so this is damage."""
    data_dir, _ = await acknowledged_journal(tmp_path, sizes=(1, 40, 40, 40))
    segment, records, _ = last_batch(data_dir)
    data = bytearray(segment.read_bytes())
    start = (records[2].offset // 512 + 1) * 512
    data[start : start + 1024] = bytes(1024)  # covers several whole records of the second batch
    assert start + 1024 < records[-41].offset  # the last batch is intact
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="later batch") as caught:
        recover(data_dir, fresh_engine)
    assert segment.read_bytes() == bytes(data)
    assert caught.value.cut_seq == 2
    plan = plan_cut(data_dir, 2)  # what the cut gives up includes the intact batches after the zeros
    assert (
        plan.removed_last_seq == records[-1].seq
        and "(up to seq 121) and the damaged bytes" in plan.describe()[1]
    )


# -- what a crash leaves is still truncated, and the server starts -----------------------------------------
@pytest.mark.parametrize("keep", [1, 8, HEADER.size, HEADER.size + 4, -1], ids=lambda keep: f"keep-{keep}")
async def test_last_record_cut_short_is_a_torn_tail(tmp_path: Path, keep: int) -> None:
    """`kill -9` while the last batch was being written: the file ends inside its last record."""
    data_dir, _ = await acknowledged_journal(tmp_path)
    segment, records, batch_start = last_batch(data_dir)
    last = records[-1]
    with segment.open("r+b") as file:
        file.truncate(last.end - 1 if keep < 0 else last.offset + keep)
    journal, recovered = open_journal(data_dir, fresh_engine)
    journal.close()
    assert recovered.last_seq == batch_start - 1
    assert any("torn tail" in warning for warning in recovered.warnings)
    assert segment.stat().st_size == next(r for r in records if r.seq == batch_start).offset


async def test_zeroed_end_of_the_last_batch_is_a_torn_tail(tmp_path: Path) -> None:
    """Power loss: the file size reached the disk, the last sectors of the batch did not (they read as zeros)."""
    data_dir, digest = await acknowledged_journal(tmp_path)
    segment, records, _ = last_batch(data_dir)
    size = segment.stat().st_size
    batch = encode_batch(records[-1].seq + 1, deposits(1000, 30))
    data = segment.read_bytes() + batch
    cut = (size // 512 + 2) * 512  # some of the batch's sectors made it, the later ones read as zeros
    assert cut < len(data)
    segment.write_bytes(data[:cut] + bytes(len(data) - cut))
    recovered = recover(data_dir, fresh_engine)
    assert recovered.engine.state_digest() == digest
    assert segment.stat().st_size == size


async def test_zeroed_sector_inside_the_unfinished_batch_is_a_torn_tail(tmp_path: Path) -> None:
    """Power loss, sectors written out of order: a hole of zeros, then more records of the same batch."""
    data_dir, digest = await acknowledged_journal(tmp_path)
    segment, records, _ = last_batch(data_dir)
    size = segment.stat().st_size
    batch = bytearray(encode_batch(records[-1].seq + 1, deposits(1000, 40)))
    hole = (size // 512 + 1) * 512 - size + 512  # the second whole sector of the batch
    batch[hole : hole + 512] = bytes(512)
    with segment.open("ab") as file:
        file.write(bytes(batch))
    recovered = recover(data_dir, fresh_engine)
    assert recovered.engine.state_digest() == digest
    assert segment.stat().st_size == size


async def test_zero_filled_new_segment_is_a_torn_tail(tmp_path: Path) -> None:
    """With QAEX_FSYNC=off the new segment of a run is not fsynced: after a power loss it may read as zeros."""
    data_dir, digest = await acknowledged_journal(tmp_path)
    last_seq = recover(data_dir, fresh_engine, repair=False).last_seq
    (data_dir / "journal" / f"{last_seq + 1:020d}.log").write_bytes(bytes(600))
    journal, recovered = open_journal(data_dir, fresh_engine)
    journal.close()
    assert recovered.engine.state_digest() == digest


# -- the operator's way past damage: `qaex journal truncate` ----------------------------------------------
async def test_truncate_before_the_damaged_batch_lets_the_server_start(tmp_path: Path) -> None:
    data_dir, _ = await acknowledged_journal(tmp_path)
    _, shorter = await acknowledged_journal(tmp_path / "shorter", BATCH_SIZES[:-1])
    segment, records, batch_start = last_batch(data_dir)
    damaged = flip(segment, records[-1].offset + HEADER.size + 2, 0x01)
    with pytest.raises(JournalCorrupt) as caught:
        open_journal(data_dir, fresh_engine)
    assert caught.value.cut_seq == batch_start and caught.value.seq == records[-1].seq
    keep = next(record for record in records if record.seq == batch_start).offset
    plan = plan_cut(data_dir, batch_start)
    assert (plan.segment, plan.keep, plan.base_seq, plan.recovers_to) == (segment, keep, 0, batch_start - 1)
    assert plan.removed_records == len(records) - batch_start  # the intact ones before the damaged one
    assert plan.removed_damage
    assert segment.read_bytes() == damaged  # planning changes nothing
    saved = cut_journal(plan)
    assert saved == [segment.with_name(f"{segment.name}.cut-at-{batch_start}")]
    assert saved[0].read_bytes() == damaged[keep:]
    journal, recovered = open_journal(data_dir, fresh_engine)
    journal.close()
    assert recovered.last_seq == batch_start - 1 and not recovered.warnings
    assert recovered.engine.state_digest() == shorter


async def test_truncate_keeps_what_the_newest_checkpoint_holds(tmp_path: Path) -> None:
    """After a graceful stop the shutdown checkpoint holds every record: cutting the damage loses nothing."""
    data_dir, digest = await acknowledged_journal(tmp_path, stop=True)
    segment, records, batch_start = last_batch(data_dir)
    last_seq = records[-1].seq
    assert checkpoints(data_dir)[-1][0] == last_seq
    flip(segment, records[-1].offset + 4, 0x02)
    with pytest.raises(JournalCorrupt):
        recover(data_dir, fresh_engine)  # the checkpoint holds it, but the journal is still damaged
    plan = plan_cut(data_dir, batch_start)
    assert plan.base_seq == last_seq and plan.recovers_to == last_seq
    assert [path.name for path in plan.checkpoints_aside] == ["00000000000000000000.ckpt"]
    assert "are kept" in plan.describe()[-1]
    cut_journal(plan)
    assert recover(data_dir, fresh_engine).engine.state_digest() == digest
    oldest = recover(data_dir, fresh_engine, oldest_checkpoint=True)  # what `qaex journal verify` replays
    assert oldest.engine.state_digest() == digest
    await run_exchange(data_dir, lambda exchange: trade(exchange, orders=20))
    assert recover(data_dir, fresh_engine).last_seq > last_seq  # the journal goes on after the cut


async def test_truncate_refuses_a_cut_inside_a_batch_or_past_the_damage(tmp_path: Path) -> None:
    data_dir, _ = await acknowledged_journal(tmp_path)
    segment, records, batch_start = last_batch(data_dir)
    damaged = flip(segment, records[-1].offset + HEADER.size + 2, 0x01)
    with pytest.raises(CannotCut, match=rf"inside a batch that starts at seq {batch_start}"):
        plan_cut(data_dir, batch_start + 1)
    with pytest.raises(
        CannotCut, match=rf"damaged at offset {records[-1].offset} \(record seq {records[-1].seq}\)"
    ):
        plan_cut(data_dir, records[-1].seq + 1)
    assert segment.read_bytes() == damaged


async def test_truncate_in_an_older_segment_moves_the_later_ones_aside(tmp_path: Path) -> None:
    data_dir, _ = await acknowledged_journal(tmp_path, segment_bytes=200)
    assert len(segments(data_dir)) > 2
    first_seq, older = segments(data_dir)[1]
    flip(older, 8 + HEADER.size + 1, 0x40)  # its first record
    with pytest.raises(
        JournalCorrupt, match=rf"{older.name} at offset 8 \(record seq {first_seq}\)"
    ) as caught:
        recover(data_dir, fresh_engine)
    assert caught.value.cut_seq == first_seq
    later = [path for _, path in segments(data_dir)[2:]]
    plan = plan_cut(data_dir, first_seq)
    assert plan.keep == 0 and plan.later_segments == later
    cut_journal(plan)
    assert [seq for seq, _ in segments(data_dir)] == [1]
    assert all(path.with_name(f"{path.name}.cut-at-{first_seq}").exists() for path in [older, *later])
    assert recover(data_dir, fresh_engine).last_seq == first_seq - 1


async def test_nothing_to_truncate_on_a_sound_journal(tmp_path: Path) -> None:
    data_dir, _ = await acknowledged_journal(tmp_path)
    last_seq = recover(data_dir, fresh_engine, repair=False).last_seq
    with pytest.raises(CannotCut, match=rf"ends at seq {last_seq}; there is no seq {last_seq + 2}"):
        plan_cut(data_dir, last_seq + 2)
