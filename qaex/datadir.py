"""The data directory: one server at a time, and the secret that signs login tokens.

One hypercorn worker owns one exchange. Two processes writing the same journal would corrupt it, so
the server takes an exclusive ``flock`` on ``DATA_DIR/LOCK`` before it starts the exchange and keeps
it until it exits; the kernel drops the lock when the process dies, even on ``kill -9``, so a crash
never leaves a stale lock behind. The pid written into the file is only for the error message.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""


class DataDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the directory for this process; raises DataDirLocked if another server has it."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"another qaex server (pid {holder}) is using data directory {self.path}; "
                "stop it or set QAEX_DATA_DIR to another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def secret(self) -> bytes:
        """32 random bytes kept in ``DATA_DIR/secret`` (mode 0600), so tokens survive restarts."""
        path = self.path / "secret"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_bytes()
            if len(value) < 32:
                raise RuntimeError(
                    f"{path} is damaged (shorter than 32 bytes): delete it to make a new one"
                ) from None
            return value
        value = secrets.token_bytes(32)
        try:
            os.write(fd, value)
            os.fsync(fd)
        finally:
            os.close(fd)
        return value
