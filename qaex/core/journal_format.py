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
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from qaex.core.commands import AnyCommand
from qaex.core.engine import Engine

SEGMENT_MAGIC = b"QAEXJRN1"
HEADER = struct.Struct("<IIQB")  # body length, crc32, seq, flags
_SEQ_FLAGS = struct.Struct("<QB")
FLAG_BATCH_END = 0x01
MAX_BODY = 16 << 20  # no command comes near this; a larger length is damage, not data

CHECKPOINT_MAGIC = b"QAEXCKP1"
CHECKPOINT_HEADER = struct.Struct("<QqQI")  # seq, last_ts, payload length, crc32 of payload

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyCommand)


class JournalCorrupt(Exception):
    """The journal is damaged somewhere other than its torn tail; the message names file and offset."""


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
    reason: str
    data_follows: bool  # a valid record of this journal lies after the damage: not a torn tail


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


def _record_at(data: bytes, offset: int, expected_seq: int | None) -> Record | str:
    """The valid record at `offset`, or why there is none."""
    if offset + HEADER.size > len(data):
        return f"short header ({len(data) - offset} of {HEADER.size} bytes)"
    length, crc, seq, flags = HEADER.unpack_from(data, offset)
    if length > MAX_BODY:
        return f"impossible record length {length}"
    start = offset + HEADER.size
    if start + length > len(data):
        return f"short body ({len(data) - start} of {length} bytes)"
    body = data[start : start + length]
    if _crc(seq, flags, body) != crc:
        return f"CRC mismatch in record of {length} bytes (header says seq {seq})"
    if expected_seq is not None and seq != expected_seq:
        return f"sequence gap: expected seq {expected_seq}, found {seq}"
    return Record(seq, flags, offset, body)


def _valid_data_after(data: bytes, offset: int, last_seq: int) -> bool:
    """True if a valid record numbered just after `last_seq` starts somewhere past `offset`.

    Used to tell a torn tail (nothing valid after the damage) from damage in the middle (the
    journal goes on after it). A damaged record is numbered last_seq + 1, so its successor is found
    by the byte pattern of its sequence number; `bytes.find` keeps this fast on large segments.
    """
    for seq in (last_seq + 1, last_seq + 2):
        pattern = struct.pack("<Q", seq)
        position = data.find(pattern, offset + 1)
        while position != -1:
            header = position - 8  # seq follows the length and crc fields
            if header > offset and isinstance(_record_at(data, header, seq), Record):
                return True
            position = data.find(pattern, position + 1)
    return False


def scan_segment(data: bytes, first_seq: int) -> SegmentScan:
    """Parse one segment whose first record must be numbered `first_seq`."""
    records: list[Record] = []
    if len(data) < len(SEGMENT_MAGIC):
        if SEGMENT_MAGIC.startswith(data):  # torn while being created
            return SegmentScan(
                records, 0, Damage(0, "short segment header", False) if data else None, len(data)
            )
        return SegmentScan(records, 0, Damage(0, "not a qaex journal segment", True), len(data))
    if not data.startswith(SEGMENT_MAGIC):
        return SegmentScan(records, 0, Damage(0, "not a qaex journal segment", True), len(data))
    offset = batch_end = len(SEGMENT_MAGIC)
    expected = first_seq
    damage: Damage | None = None
    while offset < len(data):
        found = _record_at(data, offset, expected)
        if isinstance(found, str):
            follows = found.startswith("sequence gap") or _valid_data_after(data, offset, expected - 1)
            damage = Damage(offset, found, follows)
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
