"""The on-disk format of the journal and of checkpoints: bytes in, records out. No IO, no trio.

A journal *segment* is a file that starts with ``SEGMENT_MAGIC`` and holds records back to back::

    record = header + body
    header = <u32 body length> <u32 crc32> <u64 seq> <u8 flags>      (little endian, 17 bytes)
    body   = msgpack(command)                                         (the AnyCommand tagged union)

The CRC covers ``seq``, ``flags`` and the body, so a damaged sequence number is caught like a damaged
body; a damaged length shows up as a CRC mismatch or a record running past the end of the file.
Sequence numbers start at 1 and rise by one per record across segments; a segment is named after
its first sequence number.

``FLAG_BATCH_END`` marks the last record of a group commit. The engine marks positions to market
once per batch (`Engine.flush`), and a later command's risk check can depend on those marks, so a
replay flushes exactly where the original run did. The batch is also the unit of atomicity: a
batch whose end record never reached the disk was never acknowledged, so recovery drops it whole.

A *checkpoint* is ``CHECKPOINT_MAGIC`` + header(seq, last_ts, payload length, crc32) + a pickle of
the Engine taken between two batches; it stands for every record up to ``seq``.

Torn write or damage (`classify`, docs/durability.md "Torn tail or damage"): a crash mid-write only
ever leaves the bytes written after the last completed fsync cut short or reading as zeros (sectors
that never reached the disk); it never turns a byte into another non-zero value, and it cannot touch
a batch once a later one was written (the journal writes a batch only after the previous one's
fsync returned). So the first invalid record is a torn write only if the file ends inside it, or
it overlaps a sector of zeros, and no valid record of a later batch follows it. A complete record
whose checksum fails with none of its sectors reading as zeros, an impossible length, a length that
a one-bit change repairs, or a valid record with the wrong sequence number is damage.
"""

from __future__ import annotations

import pickle
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

from qaex.core.commands import AnyCommand
from qaex.core.engine import Engine

SEGMENT_MAGIC = b"QAEXJRN1"
HEADER = struct.Struct("<IIQB")  # body length, crc32, seq, flags
_SEQ_FLAGS = struct.Struct("<QB")
FLAG_BATCH_END = 0x01
MAX_BODY = 16 << 20  # no command comes near this; a larger length is damage, not data
SECTOR = 512  # the unit a power loss leaves unwritten (smallest disk sector: the conservative choice)

CHECKPOINT_MAGIC = b"QAEXCKP1"
CHECKPOINT_HEADER = struct.Struct("<QqQI")  # seq, last_ts, payload length, crc32 of payload

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyCommand)


class JournalCorrupt(Exception):
    """The journal is damaged, not torn; the one-line message names file, offset and seq, and says what to do.

    ``cut_seq`` is where `qaex journal truncate --at-seq` could cut to get past the damage (the first
    record of the damaged batch), None when no cut helps.
    """

    def __init__(
        self,
        message: str,
        *,
        segment: str | None = None,
        offset: int | None = None,
        seq: int | None = None,
        cut_seq: int | None = None,
    ) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset
        self.seq = seq
        self.cut_seq = cut_seq


def _crc(seq: int, flags: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(_SEQ_FLAGS.pack(seq, flags)))


def encode_record(seq: int, command: AnyCommand, *, batch_end: bool = False) -> bytes:
    body = _encoder.encode(command)
    flags = FLAG_BATCH_END if batch_end else 0
    return HEADER.pack(len(body), _crc(seq, flags, body), seq, flags) + body


def encode_batch(first_seq: int, commands: Iterable[AnyCommand]) -> bytes:
    """The records of one group commit, numbered from `first_seq`; the last one ends the batch."""
    items = list(commands)
    last = len(items) - 1
    return b"".join(
        encode_record(first_seq + index, command, batch_end=index == last)
        for index, command in enumerate(items)
    )


def decode_command(body: bytes | memoryview) -> AnyCommand:
    command: AnyCommand = _decoder.decode(body)
    return command


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    flags: int
    offset: int  # of the header in its segment
    body: bytes

    @property
    def batch_end(self) -> bool:
        return bool(self.flags & FLAG_BATCH_END)

    @property
    def end(self) -> int:
        return self.offset + HEADER.size + len(self.body)

    def command(self) -> AnyCommand:
        return decode_command(self.body)


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int
    reason: str  # what is wrong with the record at `offset`
    data_follows: bool  # some valid record of this journal lies after the damage
    seq: int = 0  # the sequence number the record at `offset` should have
    torn: bool = False  # what a crash mid-write leaves (see `classify`); recovery may truncate it
    verdict: str = ""  # why it is, or is not, a torn write


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What one segment holds.

    ``records`` are the intact records up to the first damage; ``batch_end`` is the offset just past
    the last record that ended a batch (the length to truncate a torn segment to). ``damage`` is None
    for a clean segment; ``incomplete`` counts intact records after the last batch end.
    """

    records: list[Record]
    batch_end: int
    damage: Damage | None
    size: int

    @property
    def complete_records(self) -> list[Record]:
        """The records of whole batches (what recovery may replay)."""
        return [record for record in self.records if record.end <= self.batch_end]

    @property
    def incomplete(self) -> int:
        return sum(1 for record in self.records if record.end > self.batch_end)


@dataclass(frozen=True, slots=True)
class _Invalid:
    """Why there is no valid record at an offset."""

    kind: str  # "short header", "impossible length", "short body", "crc" or "seq"
    reason: str


def _record_at(data: bytes, offset: int, expected_seq: int | None) -> Record | _Invalid:
    """The valid record at `offset`, or why there is none."""
    if offset + HEADER.size > len(data):
        return _Invalid("short header", f"short header ({len(data) - offset} of {HEADER.size} bytes)")
    length, crc, seq, flags = HEADER.unpack_from(data, offset)
    if length > MAX_BODY:
        return _Invalid("impossible length", f"impossible record length {length}")
    start = offset + HEADER.size
    if start + length > len(data):
        return _Invalid("short body", f"short body ({len(data) - start} of {length} bytes)")
    if _crc(seq, flags, memoryview(data)[start : start + length]) != crc:
        return _Invalid("crc", f"CRC mismatch in record of {length} bytes (header says seq {seq})")
    if expected_seq is not None and seq != expected_seq:
        return _Invalid("seq", f"sequence gap: expected seq {expected_seq}, found {seq}")
    return Record(seq, flags, offset, data[start : start + length])


def _all_zero(data: bytes, start: int, end: int) -> bool:
    return data.count(0, start, end) == end - start


_NONZERO = re.compile(rb"[^\x00]")


def _candidate(data: bytes, header: int, min_seq: int, max_seq: int) -> Record | None:
    """The valid record at `header` if its seq is in [min_seq, max_seq]; cheap tests first."""
    if header + HEADER.size > len(data):
        return None
    length, crc, seq, flags = HEADER.unpack_from(data, header)
    start = header + HEADER.size
    if flags & ~FLAG_BATCH_END or not min_seq <= seq <= max_seq or start + length > len(data):
        return None
    if length > MAX_BODY or _crc(seq, flags, memoryview(data)[start : start + length]) != crc:
        return None
    return Record(seq, flags, header, data[start : start + length])


def find_record(data: bytes, start: int, min_seq: int) -> Record | None:
    """The valid record at the lowest offset >= `start` numbered `min_seq` or later, if any.

    Resynchronizes on the sequence number field: its upper six bytes are the same for 65,536
    consecutive numbers, so `bytes.find` of each possible upper part proposes the candidates and
    only those are checked. Headers lying inside a run of zeros are skipped (an all-zero header is
    never valid), so a zero-filled region costs one regex step, not one check per byte.
    """
    size = len(data)
    if start + HEADER.size > size:
        return None
    max_seq = min_seq + (size - start) // HEADER.size  # every record takes at least a header
    best: Record | None = None
    limit = size  # only an earlier record than the best so far is of interest
    for high in range(min_seq >> 16, (max_seq >> 16) + 1):
        pattern = high.to_bytes(6, "little")  # seq bytes 2..7, at header + 10
        position = data.find(pattern, start + 10, min(size, limit + 16))
        while position != -1 and position - 10 < limit:
            header = position - 10
            found = _candidate(data, header, min_seq, max_seq)
            if found is not None:
                best, limit = found, header
                break
            following = position + 1
            if _all_zero(data, header, header + HEADER.size):
                nonzero = _NONZERO.search(data, header + HEADER.size)
                following = max(following, (nonzero.span()[0] if nonzero else size) - 6)
            position = data.find(pattern, following, min(size, limit + 16))
    return best


def resync(data: bytes, offset: int, min_seq: int) -> Iterator[Record]:
    """Every valid record after `offset` numbered `min_seq` or later, in file order, skipping damage."""
    position = offset + 1
    while (found := find_record(data, position, min_seq)) is not None:
        record: Record | _Invalid = found
        last = found
        while isinstance(record, Record):
            yield record
            last = record
            record = _record_at(data, record.end, record.seq + 1)
        position, min_seq = last.end, last.seq + 1


def records_after(data: bytes, offset: int, min_seq: int) -> tuple[Record | None, Record | None]:
    """(the first valid record after `offset`, the first one that belongs to a later batch).

    "Later batch" means numbered after a valid batch end found after `offset`: the journal wrote it
    only once that batch, and so every batch before it, was fsynced. Records of the batch that was
    being written when a crash came prove nothing: a power loss can keep some of its sectors and
    lose others.
    """
    first: Record | None = None
    batch_end: int | None = None
    for record in resync(data, offset, min_seq):
        first = first or record
        if batch_end is not None and record.seq > batch_end:
            return first, record
        if record.batch_end and batch_end is None:
            batch_end = record.seq
    return first, None


def _unwritten_sector(data: bytes, start: int, end: int) -> int | None:
    """The first offset in [start, end) from which a whole sector reads as zeros, if any.

    Sectors are aligned on file offsets and clipped to [start, end of file): the one holding
    `start` shares its beginning with records that were fsynced before (they are intact), and the
    file may end inside the last one.
    """
    size = len(data)
    sector = start - start % SECTOR
    while sector < end:
        low, high = max(sector, start), min(sector + SECTOR, size)
        if low < high and _all_zero(data, low, high):
            return low
        sector += SECTOR
    return None


def _length_fix(data: bytes, offset: int) -> int | None:
    """A body length that makes the record at `offset` valid, if one bit or the end of the file gives one."""
    length: int
    length, crc, seq, flags = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
    room = min(len(data) - start, MAX_BODY)
    view = memoryview(data)
    for candidate in (*(length ^ (1 << bit) for bit in range(32)), room):
        if candidate != length and 0 <= candidate <= room:
            if _crc(seq, flags, view[start : start + candidate]) == crc:
                return candidate
    return None


def classify(data: bytes, offset: int, expected_seq: int, invalid: _Invalid) -> Damage:
    """Torn write or damage, for the first invalid record of a segment (see the module docstring).

    A torn write is reported only with positive evidence of one: the file ends inside the record,
    or the record overlaps a sector reading as zeros, or everything from `offset` on is zeros; and
    no valid record of a later batch follows. Everything else is damage.
    """

    def damage(verdict: str, follows: bool) -> Damage:
        return Damage(offset, invalid.reason, follows, expected_seq, False, verdict)

    def torn(verdict: str) -> Damage:
        return Damage(offset, invalid.reason, False, expected_seq, True, verdict)

    if invalid.kind == "seq":
        return damage("a record with a valid checksum but the wrong seq is not a torn write", True)
    if _all_zero(data, offset, len(data)):
        return torn("zeros from there to the end of the file, as a power loss leaves unwritten sectors")
    first, later = records_after(data, offset, expected_seq)
    if later is not None:
        return damage(
            f"valid records of a later batch follow (seq {later.seq} at offset {later.offset}), and a "
            "batch is written only after the previous one is on disk, so this one was acknowledged",
            True,
        )
    follows = first is not None
    if invalid.kind == "short header":
        return torn("the file ends inside the record header, as a crash mid-write leaves it")
    fix = _length_fix(data, offset)
    fixed = f"its length field is damaged: with a length of {fix} bytes the record is intact"
    if invalid.kind == "impossible length":
        return damage(
            fixed if fix is not None else "a crash leaves bytes cut short or zeroed, never a longer length",
            follows,
        )
    if invalid.kind == "short body":
        if fix is not None:
            return damage(fixed, follows)
        if follows:
            return damage("its length runs past valid records after it: the file was not cut there", True)
        return torn("the file ends inside the record, as a crash mid-write leaves it")
    length: int = HEADER.unpack_from(data, offset)[0]
    zeros = _unwritten_sector(data, offset, offset + HEADER.size + length)
    if zeros is not None:
        return torn(f"its bytes from offset {zeros} read as zeros, as a sector a power loss left unwritten")
    if fix is not None:
        return damage(fixed, follows)
    return damage(
        f"the record is complete (header and all {length} body bytes present, no sector reading as "
        "zeros) but does not match its checksum: a crash does not do that, its bytes changed after "
        "they were written",
        follows,
    )


def scan_segment(data: bytes, first_seq: int) -> SegmentScan:
    """Parse one segment whose first record must be numbered `first_seq`."""
    records: list[Record] = []
    if not data.startswith(SEGMENT_MAGIC):
        if SEGMENT_MAGIC.startswith(data) or _all_zero(data, 0, len(data)):
            # Created but its header never reached the disk (torn while being created).
            torn = Damage(
                0, "short segment header", False, first_seq, True,
                "the segment header never reached the disk (the segment was being created)",
            )  # fmt: skip
            return SegmentScan(records, 0, torn if data else None, len(data))
        alien = Damage(0, "not a qaex journal segment", False, first_seq, False, "no QAEXJRN1 header")
        return SegmentScan(records, 0, alien, len(data))
    offset = batch_end = len(SEGMENT_MAGIC)
    expected = first_seq
    damage: Damage | None = None
    while offset < len(data):
        found = _record_at(data, offset, expected)
        if isinstance(found, _Invalid):
            damage = classify(data, offset, expected, found)
            break
        records.append(found)
        offset = found.end
        expected += 1
        if found.batch_end:
            batch_end = offset
    return SegmentScan(records, batch_end, damage, len(data))


# -- checkpoints ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int  # every journal record up to this one is in `engine`
    last_ts: int  # the timestamp of record `seq` (the router never goes back before it)
    engine: Engine


def encode_checkpoint(engine: Engine, seq: int, last_ts: int) -> bytes:
    """Serialize the engine between two batches (nothing touched, nothing pending in its Batch)."""
    payload = pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL)
    header = CHECKPOINT_HEADER.pack(seq, last_ts, len(payload), zlib.crc32(payload))
    return CHECKPOINT_MAGIC + header + payload


def decode_checkpoint(data: bytes) -> Checkpoint:
    """The checkpoint in `data`; ValueError says what is wrong with a damaged one.

    Checkpoints are pickles, so they are as trusted as the data directory they live in.
    """
    start = len(CHECKPOINT_MAGIC) + CHECKPOINT_HEADER.size
    if len(data) < start or not data.startswith(CHECKPOINT_MAGIC):
        raise ValueError("not a qaex checkpoint")
    seq, last_ts, length, crc = CHECKPOINT_HEADER.unpack_from(data, len(CHECKPOINT_MAGIC))
    payload = data[start:]
    if len(payload) != length:
        raise ValueError(f"checkpoint payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise ValueError("checkpoint CRC mismatch")
    engine = pickle.loads(payload)
    if not isinstance(engine, Engine):
        raise ValueError(f"checkpoint holds a {type(engine).__name__}, not an Engine")
    if engine.seq != seq:
        raise ValueError(f"checkpoint header says seq {seq} but the engine has applied {engine.seq}")
    return Checkpoint(seq, last_ts, engine)
