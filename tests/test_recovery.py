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

from qaex.core.engine import Engine
from qaex.core.errors import QaexError
from qaex.core.journal_format import JournalCorrupt, encode_batch
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.journal import CHECKPOINT_SUFFIX, SEGMENT_SUFFIX, numbered_files
from qaex.exchange.recovery import open_journal, recover

SYMBOLS = (("SHFE", "cu2601", 86000.0, 10.0), ("SHFE", "rb2601", 3100.0, 1.0))


def fresh_engine() -> Engine:
    return Engine(max_orders_per_second=0)


async def run_exchange(
    data_dir: Path,
    body: Callable[[Exchange], Awaitable[None]],
    **journal_options: Any,
) -> Exchange:
    """Recover, serve `body`, shut down gracefully (as SIGTERM does); returns the stopped exchange."""
    journal, recovered = open_journal(data_dir, fresh_engine, **journal_options)
    exchange = Exchange(recovered.engine, journal=journal)
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
            await exchange.open_account(user, "pw", 10_000_000.0)
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
    """A crash image of a traded exchange, and the digest of the state it must recover to."""
    digests: list[str] = []

    async def body(exchange: Exchange) -> None:
        await trade(exchange, orders=120)
        digests.append(exchange.engine.state_digest())
        crash_image(tmp_path / "data", tmp_path / "crash")

    await run_exchange(tmp_path / "data", body)
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
    with pytest.raises(JournalCorrupt, match=rf"{segment.name} at offset \d+: CRC mismatch"):
        recover(data_dir, fresh_engine)
    assert segment.read_bytes() == bytes(data)  # nothing truncated


async def test_damaged_length_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    """A flipped length makes the record look cut short; the valid records after it give it away."""
    data_dir, _ = await crashed_journal(tmp_path)
    _, segment = segments(data_dir)[-1]
    data = bytearray(segment.read_bytes())
    data[8 + 3] = 0x7F  # the first record's length: now about 2 GiB
    segment.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="offset 8: impossible record length"):
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

    async def body(exchange: Exchange) -> None:
        await trade(exchange)
        await trio.sleep(0.2)  # let the journal task finish writing its last checkpoint
        digests.append(exchange.engine.state_digest())
        crash_image(tmp_path / "data", tmp_path / "crash")

    await run_exchange(tmp_path / "data", body, checkpoint_records=50)
    recovered = recover(tmp_path / "crash", fresh_engine)
    assert recovered.checkpoint_seq is not None and recovered.checkpoint_seq > 0
    assert recovered.replayed < 50 + 512  # the records after the checkpoint, not the whole journal
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
    from qaex.core.commands import Deposit

    return Deposit(ts=1, user_id="alice", amount=1.0)
