"""Shared fixtures: a real qaex server in a subprocess, started the way the README starts it.

``server`` (module scope) runs ``python -m hypercorn qaex.app:app --worker-class trio`` on free
ports with its own data directory, waits for /health, and stops it with SIGTERM at the end. Its
stderr goes to ``server.log`` in the data directory's parent and is printed when a test failed.
``open_user(server)`` opens an account and logs in over HTTP.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# TqSdk's logging package replaces logging.Logger.manager and the root logger when it is imported (by
# a test module that imports tqsdk): imported here first, before any qaex module makes its logger, so
# every logger of the test process lives in one manager (records of loggers made before it would miss
# caplog otherwise). Its root logger's level is NOTSET (it passes WARNING as the name), which would let
# every DEBUG record through to pytest's capture (tens of MB in a long in-process test): WARNING, as
# logging's own root has.
import shinny_structlog  # noqa: F401

from bench._common import free_port
from qaex.core.instruments import InstrumentRegistry

logging.getLogger().setLevel(logging.WARNING)

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _qaex_logging_restored() -> Iterator[None]:
    """``qaex.logconfig.configure`` (run by an app or a CLI command started in-process) stops the
    ``qaex`` logger's propagation and sets levels, which would hide later tests' records from
    ``caplog`` (tests failing or passing by the order they run in): put all of it back after each test."""
    logger = logging.getLogger("qaex")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    levels = {
        name: child.level
        for name, child in logging.Logger.manager.loggerDict.items()
        if name.startswith("qaex.") and isinstance(child, logging.Logger)
    }
    yield
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)
    for name, child in logging.Logger.manager.loggerDict.items():
        if name.startswith("qaex.") and isinstance(child, logging.Logger):
            child.setLevel(levels.get(name, logging.NOTSET))


@contextmanager
def records_of(name: str, level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """What logger ``name`` logs at ``level`` and above meanwhile, by a handler of its own (not
    ``caplog``, whose root handler misses records when something stopped the propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


@dataclass
class Server:
    http_url: str
    diff_url: str
    admin_token: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)  # closed before the server stops

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code."""
        for client in self.clients:
            client.close()  # an idle keep-alive connection would hold hypercorn's graceful stop for 3 s
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


PINNED_INSTRUMENTS = Path(__file__).with_name("pinned_instruments.toml")


def pinned_instruments() -> InstrumentRegistry:
    """The pinned contracts as a registry, for an in-process exchange on the wall clock: the engine's
    built-in test contracts (``InstrumentRegistry()``) expired in 2026 and would expire at its first
    settlement."""
    return InstrumentRegistry.from_toml(PINNED_INSTRUMENTS)


FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def faketime_env(utc: str) -> dict[str, str]:
    """Environment that starts a process's wall clock at ``utc`` (libfaketime, Debian's `faketime`),
    for a server or a client: fails in CI (``CI`` set) when libfaketime is missing, skips elsewhere."""
    if not FAKETIME_LIB.exists() or shutil.which("faketime") is None:
        if os.environ.get("CI"):
            pytest.fail("faketime is not installed (apt-get install -y faketime; .ci/run does it)")
        pytest.skip("faketime is not installed (apt-get install -y faketime)")
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": f"@{utc}",  # the clock starts there and runs on
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # trio's timers keep the real monotonic clock
        "TZ": "UTC",
    }


def launch(
    workdir: Path,
    *,
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    serve: bool = False,
    serve_args: Sequence[str] = (),
) -> Server:
    """Start a server process (without waiting for it to be ready): hypercorn's CLI as the README
    says, or with `serve` ``qaex serve`` (hypercorn run programmatically in the same process) with
    ``serve_args`` after its ``--bind``."""
    http_port, diff_port = free_port(), free_port()
    data_dir = data_dir or workdir / "data"
    admin_token = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.update(
        QAEX_DIFF_HOST="127.0.0.1",
        QAEX_DIFF_PORT=str(diff_port),
        QAEX_DATA_DIR=str(data_dir),
        QAEX_ADMIN_TOKEN=admin_token,
        QAEX_MARKET_MAKER="0",
        QAEX_SETTLEMENT_TIME="",  # a test run that crosses 15:30 China time must not settle mid-test
        QAEX_MAX_ACCOUNTS_PER_ADDRESS_PER_HOUR="0",  # every test opens its accounts from 127.0.0.1
        # Fixed contracts with fixed figures, on any date; a test of the product listing passes
        # QAEX_INSTRUMENTS="" (the default a user gets).
        QAEX_INSTRUMENTS=str(PINNED_INSTRUMENTS),
    )
    env.pop("QAEX_CONFIG", None)
    env.update(extra_env or {})
    log_path = workdir / f"server-{http_port}.log"
    if serve:
        command = [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{http_port}", *serve_args]
    else:
        command = [sys.executable, "-m", "hypercorn", "qaex.app:app", "--worker-class", "trio"]
        command += ["-b", f"127.0.0.1:{http_port}"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT)
    return Server(
        http_url=f"http://127.0.0.1:{http_port}",
        diff_url=f"ws://127.0.0.1:{diff_port}/ws/diff",
        admin_token=admin_token,
        data_dir=data_dir,
        log_path=log_path,
        process=process,
        env=env,
    )


def wait_ready(server: Server, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.http_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()}")


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("qaex"))
    wait_ready(running)
    failed_before = request.session.testsfailed
    yield running
    code = running.stop()
    if request.session.testsfailed > failed_before or code != 0:
        print(f"\n--- qaex server log (exit {code}) ---\n{running.log()}", file=sys.stderr)


@dataclass
class User:
    """An account opened over HTTP, with a client that sends its token."""

    user_id: str
    password: str
    token: str
    client: httpx.Client

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=json, **kwargs)


def open_user(
    server: Server, *, init_cash: float | None = None, prefix: str = "u", timeout: float = 5.0
) -> User:
    """A new account, logged in (``timeout``: per request; password hashing is slow on a busy machine)."""
    user_id = f"{prefix}{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(8)
    body: dict[str, Any] = {"user_id": user_id, "password": password}
    if init_cash is not None:
        body["init_cash"] = init_cash
    opened = httpx.post(server.http_url + "/api/account/open", json=body, timeout=timeout)
    assert opened.status_code == 201, opened.text
    login = httpx.post(
        server.http_url + "/api/auth/login", json={"user_id": user_id, "password": password}, timeout=timeout
    )
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    client = httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    )
    server.clients.append(client)
    return User(user_id, password, token, client)


@pytest.fixture
def user(server: Server) -> User:
    return open_user(server)


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as client:
        yield client


@pytest.fixture
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url) as client:
        yield client


@dataclass
class NatsServer:
    """A real nats-server on 127.0.0.1 (Debian's package), started on a free port, stopped by its PID."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    config: str = ""  # nats-server configuration file text (e.g. max_pending, write_deadline)
    args: tuple[str, ...] = ()  # more command-line options (--user, --pass, --auth)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = nats_server_binary()
        log_path = self.workdir / f"nats-{self.port}.log"
        command = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", "0", *self.args]
        if self.config:
            config_path = self.workdir / f"nats-{self.port}.conf"
            config_path.write_text(self.config)
            command += ["-c", str(config_path)]
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}: {log_path.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(5) == b"INFO ":
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def nats_server_binary() -> str:
    """nats-server's path: fails in CI (``CI`` set) when it is missing, skips elsewhere."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (apt-get install -y nats-server; .ci/run does it)")
        pytest.skip("nats-server is not installed (apt-get install -y nats-server)")
    return binary


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    broker = NatsServer(free_port(), tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
