"""The replay progress of a data directory: ``<data dir>/replay.json`` (qaex.core.replay_progress).

The liquidity simulator reports how far each recording has played every
:data:`qaex.exchange.simulator.REPLAY_KEEP_EVERY` seconds and when it stops; :meth:`ReplayKeeper.save`
writes it atomically. At the next start with the same recording and speed, :meth:`ReplayKeeper.load`
gives those positions back (the replay goes on where it was); a different recording or speed starts
fresh, with a log line; a record that cannot be read (torn, hostile, too long) is ignored with a
WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from qaex.atomic_write import write_atomic
from qaex.core.replay import ReplayTrack
from qaex.core.replay_progress import (
    MAX_BYTES,
    ReplayProgress,
    ReplayProgressError,
    decode,
    encode,
    recording_digest,
    resume,
)

log = logging.getLogger("qaex.replay")

FILE_NAME = "replay.json"


class ReplayKeeper:
    """Loads and saves the progress of one replay (its recording and speed) in one data directory."""

    def __init__(self, directory: Path, tracks: Mapping[str, ReplayTrack], speed: float) -> None:
        self.path = directory / FILE_NAME
        self.recording = recording_digest(tracks)
        self.speed = speed
        self._failing = False  # a save failed: logged once until one succeeds again

    def load(self) -> dict[str, int]:
        """The recorded ns to resume each symbol's replay at (empty: from the beginning)."""
        try:
            with open(self.path, "rb") as file:
                raw = file.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning(
                "replay progress %s not read (%s): the replay starts from the beginning", self.path, exc
            )
            return {}
        try:
            kept: ReplayProgress | None = decode(raw)
        except ReplayProgressError as exc:
            log.warning(
                "replay progress %s ignored (%s): the replay starts from the beginning", self.path, exc
            )
            kept = None
        positions, fresh = resume(kept, self.recording, self.speed)
        if fresh is not None:
            log.info("replay starts from the beginning: %s", fresh)
        return positions

    def save(self, positions: Mapping[str, int]) -> None:
        """Keep ``positions`` (an OSError is logged, not raised: the replay goes on)."""
        try:
            write_atomic(self.path, encode(ReplayProgress(self.recording, self.speed, positions)))
        except OSError as exc:
            if not self._failing:
                log.warning("replay progress not kept in %s: %s", self.path, exc)
            self._failing = True
            return
        self._failing = False
