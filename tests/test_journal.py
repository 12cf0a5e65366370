"""The journal format (pure), the Journal service's group commit, and the `qaex journal` commands."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from conftest import launch

from qaex.core.commands import Cancel, Deposit, OpenAccount
from qaex.core.engine import Engine
from qaex.core.journal_format import (
    HEADER,
    SECTOR,
    SEGMENT_MAGIC,
    decode_checkpoint,
    encode_batch,
    encode_checkpoint,
    find_record,
    scan_segment,
)
from qaex.exchange.journal import Journal, numbered_files

COMMANDS = [
    OpenAccount(ts=1, user_id="alice", password_hash="h", init_cash=100.0),
    Deposit(ts=2, user_id="alice", amount=5.0),
    Cancel(ts=3, user_id="alice", order_id="x"),
]


def segment(*batches: bytes) -> bytes:
    return SEGMENT_MAGIC + b"".join(batches)


# -- format -----------------------------------------------------------------------------------------------
def test_records_decode_to_typed_commands() -> None:
    scan = scan_segment(segment(encode_batch(1, COMMANDS)), 1)
    assert scan.damage is None
    assert [record.command() for record in scan.records] == COMMANDS
    assert [record.seq for record in scan.records] == [1, 2, 3]


def test_only_the_last_record_of_a_batch_ends_it() -> None:
    scan = scan_segment(segment(encode_batch(1, COMMANDS[:2]), encode_batch(3, COMMANDS[2:])), 1)
    assert [record.batch_end for record in scan.records] == [False, True, True]
    assert scan.batch_end == scan.size


def test_a_cut_batch_leaves_its_whole_records_incomplete() -> None:
    data = segment(encode_batch(1, COMMANDS[:1]), encode_batch(2, COMMANDS[1:]))
    scan = scan_segment(data[:-2], 1)
    assert scan.damage is not None and "short body" in scan.damage.reason
    assert not scan.damage.data_follows
    assert len(scan.complete_records) == 1
    assert scan.incomplete == 1  # seq 2 is whole, but its batch never ended


def test_crc_covers_the_sequence_number() -> None:
    data = bytearray(segment(encode_batch(1, COMMANDS)))
    data[len(SEGMENT_MAGIC) + 8] ^= 0x01  # low byte of the first record's seq
    scan = scan_segment(bytes(data), 1)
    assert scan.damage is not None and "CRC mismatch" in scan.damage.reason
    assert scan.damage.data_follows and not scan.damage.torn


def test_sequence_gap_is_damage_with_data_after_it() -> None:
    scan = scan_segment(segment(encode_batch(1, COMMANDS[:1]), encode_batch(3, COMMANDS[1:])), 1)
    assert scan.damage is not None and "expected seq 2, found 3" in scan.damage.reason
    assert scan.damage.data_follows


def test_segment_torn_while_being_created_is_empty() -> None:
    scan = scan_segment(SEGMENT_MAGIC[:3], 1)
    assert scan.records == [] and scan.damage is not None and not scan.damage.data_follows
    assert scan.damage.torn
    zeros = scan_segment(bytes(700), 1)  # created, size on disk, header never written
    assert zeros.damage is not None and zeros.damage.torn
    alien = scan_segment(b"PK\x03\x04" + bytes(100), 1)
    assert alien.damage is not None and not alien.damage.torn


# -- torn write or damage ---------------------------------------------------------------------------------
def deposit(ts: int, user: str = "alice") -> Deposit:
    return Deposit(ts=ts, user_id=user, amount=1.0)


def journal_with_last_batch(size: int, *, inside_one_sector: bool = False) -> tuple[bytes, int]:
    """A segment of a few acknowledged batches and a last one of `size` records; and where that batch starts.

    With `inside_one_sector`, the last record does not cross a sector boundary (a padding user id
    moves it), so no single bit flip can leave a whole sector piece of zeros in it.
    """
    for pad in range(200):
        head = segment(
            encode_batch(1, [deposit(10), deposit(11, "b" * (1 + pad))]), encode_batch(3, [deposit(12)] * 3)
        )
        data = head + encode_batch(6, [deposit(20 + n) for n in range(size)])
        last = scan_segment(data, 1).records[-1]
        if not inside_one_sector or last.offset // SECTOR == (last.end - 1) // SECTOR:
            return data, len(head)
    raise AssertionError("no padding puts the last record inside one sector")


def test_every_bit_flip_in_the_last_record_is_damage_not_a_torn_tail() -> None:
    """Issue #13: the last record of the last batch was written and fsynced, then one bit changed."""
    data, _ = journal_with_last_batch(1, inside_one_sector=True)
    last = scan_segment(data, 1).records[-1]
    for position in range(last.offset, last.end):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            scan = scan_segment(bytes(damaged), 1)
            assert scan.damage is not None, (position, bit)
            assert not scan.damage.torn, (position - last.offset, bit, scan.damage)
            assert scan.damage.offset == last.offset and scan.damage.seq == last.seq


def test_every_bit_flip_in_a_multi_record_last_batch_is_damage() -> None:
    data, start = journal_with_last_batch(4)
    for position in range(start, len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        scan = scan_segment(bytes(damaged), 1)
        assert scan.damage is not None and not scan.damage.torn, (position - start, scan.damage)


def test_every_cut_of_the_last_batch_is_a_torn_tail() -> None:
    """`kill -9` mid-write leaves a prefix of the batch: at any byte, it is torn and cut back to the batch start."""
    data, start = journal_with_last_batch(4)
    for cut in range(start + 1, len(data)):
        scan = scan_segment(data[:cut], 1)
        assert scan.damage is None or scan.damage.torn, (cut - start, scan.damage)
        assert scan.batch_end == start
        assert scan.damage is not None or scan.incomplete > 0


def test_power_loss_images_of_the_last_batch_are_torn_tails() -> None:
    """A power loss keeps some sectors of the batch being written, not others (they read as zeros), and may
    lose the end of the file: every such image is a torn tail."""
    rng = random.Random(13)
    data, start = journal_with_last_batch(60)
    sectors = range(start // SECTOR, (len(data) - 1) // SECTOR + 1)
    for _ in range(300):
        image = bytearray(data[: rng.randrange(start + 1, len(data) + 1)])
        for sector in sectors:
            if rng.random() < 0.3:
                low = max(sector * SECTOR, start)  # the first sector's beginning was fsynced before
                high = min((sector + 1) * SECTOR, len(image))
                image[low:high] = bytes(max(0, high - low))
        scan = scan_segment(bytes(image), 1)
        assert scan.damage is None or scan.damage.torn, scan.damage
        assert scan.batch_end == start


def test_zeros_followed_by_a_later_batch_are_damage() -> None:
    data, _ = journal_with_last_batch(3)
    damaged = bytearray(data)
    damaged[len(SEGMENT_MAGIC) : len(SEGMENT_MAGIC) + 40] = bytes(40)  # the first batch, acknowledged
    scan = scan_segment(bytes(damaged), 1)
    assert scan.damage is not None and not scan.damage.torn and scan.damage.data_follows
    assert "later batch" in scan.damage.verdict


def test_a_one_bit_length_error_is_named() -> None:
    data, _ = journal_with_last_batch(1)
    last = scan_segment(data, 1).records[-1]
    damaged = bytearray(data)
    damaged[last.offset + 1] ^= 0x01  # length + 256: runs past the end of the file
    scan = scan_segment(bytes(damaged), 1)
    assert scan.damage is not None and not scan.damage.torn
    assert f"with a length of {len(last.body)} bytes the record is intact" in scan.damage.verdict


def test_resynchronizing_after_damage_is_fast_on_large_segments() -> None:
    """The search for records after damage proposes candidates by seq, and skips runs of zeros."""
    records = encode_batch(1, [deposit(n) for n in range(60_000)])  # seqs below 65,536: upper bytes 0
    data = SEGMENT_MAGIC + bytes(8 << 20) + records  # 8 MiB of zeros, then valid records
    started = time.perf_counter()
    found = find_record(data, len(SEGMENT_MAGIC), 1)
    assert found is not None and found.seq == 1 and found.offset == len(SEGMENT_MAGIC) + (8 << 20)
    damaged = bytearray(SEGMENT_MAGIC + records)
    damaged[len(SEGMENT_MAGIC) + 20] ^= 0xFF  # the first record: everything after it has to be read
    scan = scan_segment(bytes(damaged) + bytes(4 << 20), 1)
    assert scan.damage is not None and scan.damage.data_follows and not scan.damage.torn
    assert time.perf_counter() - started < 5


def test_header_layout_is_17_bytes() -> None:
    assert HEADER.size == 17


def test_checkpoint_round_trips_the_engine_exactly() -> None:
    engine = Engine()
    for command in COMMANDS[:2]:
        engine.apply(command)
    engine.flush()
    checkpoint = decode_checkpoint(encode_checkpoint(engine, 2, 2))
    assert checkpoint.seq == 2 and checkpoint.last_ts == 2
    assert checkpoint.engine.state_digest() == engine.state_digest()


def test_damaged_checkpoint_is_refused() -> None:
    data = bytearray(encode_checkpoint(Engine(), 0, 0))
    data[-1] ^= 0xFF
    with pytest.raises(ValueError, match="CRC mismatch"):
        decode_checkpoint(bytes(data))


# -- group commit -----------------------------------------------------------------------------------------
async def test_commit_writes_one_batch_per_call(tmp_path: Path) -> None:
    engine = Engine()
    journal = Journal(tmp_path, engine)
    journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for command in COMMANDS[:2]:
            engine.apply(command)
        engine.flush()
        await journal.commit(COMMANDS[:2])
        assert (journal.last_seq, journal.batches, journal.records) == (2, 1, 2)
        nursery.cancel_scope.cancel()
    (_, path), *_ = numbered_files(tmp_path / "journal", ".log")
    scan = scan_segment(path.read_bytes(), 1)
    assert [record.batch_end for record in scan.records] == [False, True]


async def test_commit_refuses_an_engine_ahead_of_it(tmp_path: Path) -> None:
    """A checkpoint must never hold commands the journal lacks: the counts are checked."""
    engine = Engine()
    journal = Journal(tmp_path, engine, checkpoint_records=1)
    journal.open()
    engine.apply(COMMANDS[0])
    engine.apply(COMMANDS[1])
    with pytest.raises(RuntimeError, match="engine has applied 2 commands but the journal holds 1"):
        await journal.commit(COMMANDS[:1])
    journal.close()


# -- command line and server start -----------------------------------------------------------------------
def qaex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qaex", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    async def write() -> None:
        engine = Engine()
        journal = Journal(tmp_path, engine)
        journal.open()
        for first in (0, 1):
            engine.apply(COMMANDS[first])
            engine.flush()
            await journal.commit([COMMANDS[first]])
        journal.close()

    trio.run(write)
    return tmp_path


def test_inspect_prints_records(journal_dir: Path) -> None:
    done = qaex("journal", "inspect", "--data-dir", str(journal_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert "OpenAccount alice init_cash=100" in lines[0]
    assert lines[1].split()[0] == "2" and "Deposit alice 5" in lines[1]
    limited = qaex("journal", "inspect", "--data-dir", str(journal_dir), "--limit", "1")
    assert len(limited.stdout.splitlines()) == 1


def test_verify_prints_the_state_digest(journal_dir: Path) -> None:
    engine = Engine()
    for command in COMMANDS[:2]:
        engine.apply(command)
        engine.flush()
    done = qaex("journal", "verify", "--data-dir", str(journal_dir))
    assert done.returncode == 0, done.stderr
    assert f"state digest: {engine.state_digest()}" in done.stdout


def test_verify_fails_on_corruption(journal_dir: Path) -> None:
    (_, path), *_ = numbered_files(journal_dir / "journal", ".log")
    data = bytearray(path.read_bytes())
    data[len(SEGMENT_MAGIC) + HEADER.size + 2] ^= 0xFF  # inside the first record's body
    path.write_bytes(bytes(data))
    done = qaex("journal", "verify", "--data-dir", str(journal_dir))
    assert done.returncode == 1
    assert (
        f"CORRUPT: journal damaged in {path} at offset {len(SEGMENT_MAGIC)} (record seq 1): CRC mismatch"
        in done.stderr
    )


def test_server_refuses_to_start_on_a_corrupt_journal(journal_dir: Path) -> None:
    (_, path), *_ = numbered_files(journal_dir / "journal", ".log")
    data = bytearray(path.read_bytes())
    data[len(SEGMENT_MAGIC) + HEADER.size + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    server = launch(journal_dir.parent, data_dir=journal_dir)
    server.process.wait(30)  # hypercorn 0.18's CLI exits 0 even when its worker fails (docs/deployment.md)
    assert (
        f"qaex cannot start: journal damaged in {path} at offset 8 (record seq 1): CRC mismatch"
        in server.log()
    )


def test_checkpoint_command_refuses_while_a_server_holds_the_directory(journal_dir: Path) -> None:
    from qaex.datadir import DataDir

    holder = DataDir(journal_dir)
    holder.lock()
    try:
        done = qaex("journal", "checkpoint", "--data-dir", str(journal_dir))
        assert done.returncode == 1 and "another qaex server" in done.stderr
        assert qaex("journal", "verify", "--data-dir", str(journal_dir)).returncode == 0  # reading is fine
    finally:
        holder.unlock()
    done = qaex("journal", "checkpoint", "--data-dir", str(journal_dir))
    assert done.returncode == 0, done.stderr
    assert numbered_files(journal_dir / "checkpoints", ".ckpt")[-1][0] == 2
