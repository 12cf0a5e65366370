"""How far a replay has played, kept across restarts (``<data dir>/replay.json``).

Pure (no IO, no clock). A :class:`ReplayProgress` names the recording by :func:`recording_digest` (a
SHA-256 of its tracks: the recorded prices and their times, whatever the files are called or how their
numbers are written), the speed, and per symbol the recorded nanoseconds already played (past a track's
:attr:`~qaex.core.replay.ReplayTrack.length_ns`: the recording ended, the maker walks). :func:`encode`
and :func:`decode` are its file format, a small JSON object; :func:`decode` refuses anything else - torn,
hostile, or longer than :data:`MAX_BYTES` - with :class:`ReplayProgressError`, never another exception.
:func:`resume` decides where a start replays from: the kept positions for the same recording and speed,
else the beginning.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from qaex.core.replay import ReplayTrack

FORMAT = 1
MAX_BYTES = 1 << 20
"""The longest record read (a few hundred symbols take a few tens of KB)."""
MAX_SYMBOLS = 10_000
MAX_POSITION_NS = 2**62
"""A position beyond this (~146 years of recorded time) is hostile, not a recording."""

_Position = Annotated[int, msgspec.Meta(ge=0, le=MAX_POSITION_NS)]
_Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ReplayProgressError(ValueError):
    """A kept replay-progress record that cannot be used (it is ignored: the replay starts fresh)."""


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    format: Annotated[int, msgspec.Meta(ge=FORMAT, le=FORMAT)]
    recording: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    speed: Annotated[float, msgspec.Meta(gt=0, le=1e6)]
    positions: Annotated[dict[_Symbol, _Position], msgspec.Meta(max_length=MAX_SYMBOLS)]


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """A replay's recording (its digest), speed, and recorded ns played per symbol."""

    recording: str
    speed: float
    positions: Mapping[str, int] = field(default_factory=dict)


def recording_digest(tracks: Mapping[str, ReplayTrack]) -> str:
    """The SHA-256 (hex) of a recording's tracks, symbols in sorted order."""
    digest = hashlib.sha256()
    for symbol in sorted(tracks):
        track = tracks[symbol]
        name = symbol.encode()
        digest.update(len(name).to_bytes(4, "little") + name + len(track.offsets).to_bytes(8, "little"))
        digest.update(array("q", track.offsets).tobytes())
        digest.update(array("d", track.prices).tobytes())
    return digest.hexdigest()


def encode(progress: ReplayProgress) -> bytes:
    record = _Record(FORMAT, progress.recording, progress.speed, dict(sorted(progress.positions.items())))
    return msgspec.json.encode(record) + b"\n"


def decode(data: bytes) -> ReplayProgress:
    """The record in ``data``, or :class:`ReplayProgressError` saying what is wrong with it."""
    if len(data) > MAX_BYTES:
        raise ReplayProgressError(f"longer than {MAX_BYTES} bytes")
    try:
        record = msgspec.json.decode(data, type=_Record)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ReplayProgressError(str(exc) or type(exc).__name__) from None
    return ReplayProgress(record.recording, record.speed, record.positions)


def resume(kept: ReplayProgress | None, recording: str, speed: float) -> tuple[dict[str, int], str | None]:
    """The positions a replay of ``recording`` at ``speed`` starts from, and why it starts fresh (None:
    it resumes, or there was nothing kept)."""
    if kept is None:
        return {}, None
    if kept.recording != recording:
        return {}, "another recording than the kept progress's"
    if kept.speed != speed:
        return {}, f"speed {speed:g}, the kept progress was at {kept.speed:g}"
    return dict(kept.positions), None
