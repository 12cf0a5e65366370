"""The kept replay progress (qaex.core.replay_progress), sans-IO: its file format, what a start
resumes from, and that a torn or hostile record is refused with ReplayProgressError only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.replay import ReplayTrack
from qaex.core.replay_progress import (
    MAX_BYTES,
    MAX_POSITION_NS,
    ReplayProgress,
    ReplayProgressError,
    decode,
    encode,
    recording_digest,
    resume,
)

S = 1_000_000_000
TRACKS = {
    "SHFE.rb2601": ReplayTrack((0, S, 2 * S), (3100.0, 3101.0, 3101.0)),
    "SHFE.cu2601": ReplayTrack((0, 5 * S), (86000.0, 86010.0)),
}
DIGEST = recording_digest(TRACKS)

symbols = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=20)
progresses = st.builds(
    ReplayProgress,
    recording=st.text("0123456789abcdef", min_size=64, max_size=64),
    speed=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    positions=st.dictionaries(symbols, st.integers(0, MAX_POSITION_NS), max_size=20),
)


@given(progresses)
def test_a_record_round_trips(progress: ReplayProgress) -> None:
    again = decode(encode(progress))
    assert again == ReplayProgress(progress.recording, progress.speed, dict(progress.positions))


@settings(max_examples=300)
@given(progresses, st.data())
def test_a_torn_or_altered_record_is_refused_or_still_a_record(
    progress: ReplayProgress, data: st.DataObject
) -> None:
    raw = encode(progress)
    cut = data.draw(st.integers(0, len(raw) - 2))  # the closing brace (before the newline) is lost
    with pytest.raises(ReplayProgressError):
        decode(raw[:cut])
    flipped = bytearray(raw)
    at = data.draw(st.integers(0, len(raw) - 1))
    flipped[at] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(flipped))
    except ReplayProgressError:
        return
    assert isinstance(decoded, ReplayProgress)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_replay_progress_error(raw: bytes) -> None:
    try:
        decode(raw)
    except ReplayProgressError:
        pass


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[" * 100_000,
        b"null",
        b'{"format": 1}',
        b'{"format": 2, "recording": "' + b"0" * 64 + b'", "speed": 1.0, "positions": {}}',
        b'{"format": 1, "recording": "xyz", "speed": 1.0, "positions": {}}',
        b'{"format": 1, "recording": "' + b"0" * 64 + b'", "speed": -1.0, "positions": {}}',
        b'{"format": 1, "recording": "' + b"0" * 64 + b'", "speed": 1.0, "positions": {"A": -5}}',
        b'{"format": 1, "recording": "' + b"0" * 64 + b'", "speed": 1.0, "positions": {"A": 1e30}}',
        b'{"format": 1, "recording": "' + b"0" * 64 + b'", "speed": 1.0, "positions": {"A": 1}, "x": 1}',
        b"\xff\xfe\x00garbage",
        b" " * (MAX_BYTES + 1),
    ],
)
def test_hostile_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ReplayProgressError):
        decode(raw)


def test_a_start_resumes_the_same_recording_at_the_same_speed_only() -> None:
    kept = ReplayProgress(DIGEST, 4.0, {"SHFE.rb2601": S})
    assert resume(kept, DIGEST, 4.0) == ({"SHFE.rb2601": S}, None)
    assert resume(None, DIGEST, 4.0) == ({}, None)
    positions, why = resume(kept, DIGEST, 2.0)
    assert positions == {} and why is not None and "speed 2" in why
    other = recording_digest({**TRACKS, "SHFE.rb2601": ReplayTrack((0, S, 2 * S), (3100.0, 3102.0, 3102.0))})
    positions, why = resume(kept, other, 4.0)
    assert positions == {} and why is not None and "another recording" in why


def test_the_digest_is_the_tracks_prices_and_times() -> None:
    assert recording_digest(dict(reversed(TRACKS.items()))) == DIGEST  # not the order given
    assert recording_digest({"SHFE.rb2601": TRACKS["SHFE.rb2601"]}) != DIGEST
    moved = {**TRACKS, "SHFE.cu2601": ReplayTrack((0, 5 * S + 1), (86000.0, 86010.0))}
    assert recording_digest(moved) != DIGEST
    renamed = {"SHFE.rb2605": TRACKS["SHFE.rb2601"], "SHFE.cu2601": TRACKS["SHFE.cu2601"]}
    assert recording_digest(renamed) != DIGEST
