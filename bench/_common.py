"""Shared helpers of the end-to-end benchmarks (bench/latency.py, throughput.py, sessions.py, scaleout.py).

* start the real server (``hypercorn qaex.app:app --worker-class trio``) or the baseline echo server in a
  subprocess, through a tiny wrapper that raises RLIMIT_NOFILE and pins it to one core; the same for
  a nats-server of its own and ``qaex gateway`` processes (bench.scaleout);
* open accounts over HTTP;
* a lean DIFF connection for the load generators (msgspec decoding, keeps a peek outstanding);
* start the "other sessions" worker processes (bench/_session_worker.py): N DIFF sessions each,
  logged in and subscribed to quotes, that peek forever, count what they receive and can check it;
* the bare trio-websocket echo server (``python -m bench._common echo --port P``), the baseline;
* HdrHistogram summaries, JSON + Markdown output in bench/results/, the percentile plot, py-spy.

Run ``python -m bench.latency --help`` (or throughput, sessions, scaleout); this module is not a
benchmark itself.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PEEK = '{"aid":"peek_message"}'
SYMBOL = "SHFE.rb2601"  # the traded instrument: tick 1.0, pre_settlement 3100
PRICE = 3100.0
TICK = 1.0
SESSION_SYMBOLS = "SHFE.rb2601,SHFE.cu2601,DCE.m2601"  # what the other sessions subscribe to
_decode = msgspec.json.decode
_encode = msgspec.json.encode

# Runs in the server's process before exec: raise RLIMIT_NOFILE, pin to one core, exec the command.
_WRAPPER = """
import os, resource, sys
core, nofile = int(sys.argv[1]), int(sys.argv[2])
if nofile:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(nofile, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
if core >= 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
os.execvp(sys.argv[3], sys.argv[3:])
"""


# -- machine, load, progress ------------------------------------------------------------------------------
def cpu_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of all CPUs so far (/proc/stat; (0, 0) where there is none)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time the hypervisor took (steal) between two cpu_ticks()."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 4) if total > 0 else 0.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def load() -> str:
    """The load average, as `uptime` prints it (other jobs may share this machine)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cores(server: int | None = None, client: int | None = None) -> tuple[int, int]:
    """(server core, client core); -1 = no pinning (fewer than 2 cores or no sched_setaffinity)."""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        allowed = sorted(os.sched_getaffinity(0))
        server = allowed[0] if server is None else server
        client = next(c for c in allowed if c != server) if client is None else client
        return server, client
    return -1, -1


def pin_self(core: int) -> None:
    if core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def place_load_generator(args: argparse.Namespace) -> dict[str, Any]:
    """Pin this process (the load generator) to the client core and, with ``--client-rt``, run it
    under SCHED_FIFO (priority 1, reset on fork: the servers, session workers and threads it starts
    stay SCHED_OTHER).

    The load generator is the measuring instrument. On a 2-core machine it shares its core with the
    other sessions' processes (clients that would be on other machines); under the default scheduler
    it waits behind them for up to a few ms when it should send or read, which shows up in every
    latency as if it were the server's. Real-time priority lets it run the moment it is woken, the
    same in every phase (the echo baseline has no other sessions to wait behind). The default where
    the server has a core of its own (bench.latency, bench.throughput); not in bench.scaleout, where
    the gateways and the broker, which orders pass through, share the driver's core, and a driver
    that always runs first lengthens their queue (docs/benchmarks.md). Needs root or CAP_SYS_NICE;
    without it the bench says so and runs at normal priority.
    """
    server_core, client_core = cores(args.server_core, args.client_core)
    pin_self(client_core)
    rt = False
    if args.client_rt and hasattr(os, "SCHED_FIFO"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
            rt = True
        except PermissionError:
            say("cannot run the load generator under SCHED_FIFO (no CAP_SYS_NICE): normal priority")
    return {"server_core": server_core, "client_core": client_core, "client_rt": rt}


def rt_note(pinning: dict[str, Any]) -> str:
    """How a report says that the load generator ran under SCHED_FIFO (place_load_generator)."""
    return " (the load generator under SCHED_FIFO)" if pinning.get("client_rt") else ""


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Progress:
    """tqdm when installed, else a plain line every few seconds."""

    def __init__(self, total: float, desc: str, unit: str = "it") -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0.0
        self._last = time.monotonic()
        try:
            from tqdm import tqdm

            self._bar: Any = tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5)
        except ImportError:
            self._bar = None

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last > 2.0:
            self._last = time.monotonic()
            say(f"{self.desc}: {self.n:,.0f}/{self.total:,.0f} {self.unit}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- servers ----------------------------------------------------------------------------------------------
LISTEN_PORTS = range(20_000, 32_000)
"""Where the benches' and the tests' servers listen: below Linux's ephemeral range (32768-60999), so
that a port found free here is not taken, before the server binds it, by the local end of some
client's connection (thousands of them in a bench)."""


def free_port() -> int:
    """A port of LISTEN_PORTS that is free now (the OS's choice if 50 random tries are not)."""
    rng = random.Random()
    for _ in range(50):
        port = rng.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


START_ATTEMPTS = 3


def _port_retried(start: Callable[[], ServerProc], what: str) -> ServerProc:
    """``start()``, again (up to START_ATTEMPTS times, each picking new ports) when it failed because
    a port free_port() found free was taken before the server bound it."""
    for _ in range(START_ATTEMPTS - 1):
        try:
            return start()
        except RuntimeError as exc:
            if "address already in use" not in str(exc).lower():
                raise
            say(f"{what} did not start (a port was taken meanwhile); again with new ports ({exc})"[:200])
    return start()


@dataclass
class ServerProc:
    kind: str  # "qaex", "echo", "nats" or "gateway"
    process: subprocess.Popen[bytes]
    diff_url: str
    http_url: str
    workdir: Path
    log_path: Path
    admin_token: str = ""
    env: dict[str, str] = field(default_factory=dict)
    _worker_pid: int | None = None

    @property
    def url(self) -> str:
        """Where a client connects: the DIFF WebSocket URL (the NATS URL of a nats-server)."""
        return self.diff_url

    @property
    def pid(self) -> int:
        """The process that serves: hypercorn runs the app in a worker child (spawned) of its master."""
        if self.kind != "qaex":
            return self.process.pid
        if self._worker_pid is None:
            import psutil

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                children = [
                    p
                    for p in psutil.Process(self.process.pid).children(recursive=True)
                    if "resource_tracker" not in " ".join(p.cmdline())
                ]
                if children:
                    self._worker_pid = max(children, key=lambda p: p.memory_info().rss).pid
                    break
                time.sleep(0.1)
            else:
                self._worker_pid = self.process.pid
        return self._worker_pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wrapped(command: list[str], core: int, nofile: int) -> list[str]:
    return [sys.executable, "-c", _WRAPPER, str(core), str(nofile), *command]


def start_qaex(
    workdir: Path,
    *,
    core: int,
    extra_env: dict[str, str] | None = None,
    nofile: int = 0,
    timeout: float = 30.0,
    wait_history: bool = True,
) -> ServerProc:
    """The real server, as the README starts it, pinned to `core`; waits for /health and the DIFF port,
    and (`wait_history`) until the market history of every contract is loaded."""
    return _port_retried(
        lambda: _start_qaex_once(workdir, core, extra_env, nofile, timeout, wait_history), "qaex"
    )


def _start_qaex_once(
    workdir: Path,
    core: int,
    extra_env: dict[str, str] | None,
    nofile: int,
    timeout: float,
    wait_history: bool,
) -> ServerProc:
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, diff_port = free_port(), free_port()
    admin_token = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.pop("QAEX_CONFIG", None)
    env.update(
        QAEX_DIFF_HOST="127.0.0.1",
        QAEX_DIFF_PORT=str(diff_port),
        QAEX_DATA_DIR=str(workdir / "data"),
        QAEX_ADMIN_TOKEN=admin_token,
        QAEX_MARKET_MAKER="0",
        QAEX_SETTLEMENT_TIME="",
        QAEX_LOG="warning",
        # The load generators log many sessions in per user (--sessions-per-user, 40 by default).
        QAEX_MAX_SESSIONS_PER_USER="0",
        QAEX_MAX_ACCOUNTS_PER_ADDRESS_PER_HOUR="0",  # every account is opened from 127.0.0.1
        # The benchmarks trade SYMBOL on fixed contracts (the tests' pinned set), on any date;
        # bench.idle passes QAEX_INSTRUMENTS="" for the product listing a user gets.
        QAEX_INSTRUMENTS=str(ROOT / "tests" / "pinned_instruments.toml"),
    )
    env.update(extra_env or {})
    log_path = workdir / f"qaex-{http_port}.log"
    command = [sys.executable, "-m", "hypercorn", "qaex.app:app", "--worker-class", "trio"]
    command += ["-b", f"127.0.0.1:{http_port}"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            _wrapped(command, core, nofile), env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProc(
        "qaex",
        process,
        f"ws://127.0.0.1:{diff_port}/ws/diff",
        f"http://127.0.0.1:{http_port}",
        workdir,
        log_path,
        admin_token,
        env,
    )
    _wait_ready(server, http_port, diff_port, timeout)
    if wait_history:
        _wait_history(server, HISTORY_TIMEOUT)
    return server


HISTORY_TIMEOUT = 180.0


def metric(text: str, name: str) -> float:
    """One sample of a /metrics exposition (NaN when it is not there)."""
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def _wait_history(server: ServerProc, timeout: float) -> None:
    """Until every contract's history is loaded: a fresh data directory builds it in the background
    (a worker thread holding the GIL for seconds), which is a start-up cost, not the steady state the
    benchmarks measure."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending = metric(
            httpx.get(server.http_url + "/metrics", timeout=5.0).text, "qaex_market_history_pending"
        )
        if not pending > 0:  # 0, or NaN: a server without a history store
            say(f"market history ready after {time.monotonic() - started:.1f} s")
            return
        time.sleep(0.25)
    raise RuntimeError(f"market history still loading after {timeout:.0f} s")


def start_echo(workdir: Path, *, core: int, nofile: int = 0, timeout: float = 20.0) -> ServerProc:
    """The baseline: a bare trio-websocket echo server, started and pinned the same way."""
    port = free_port()
    log_path = workdir / f"echo-{port}.log"
    command = [sys.executable, "-m", "bench._common", "echo", "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            _wrapped(command, core, nofile), env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProc("echo", process, f"ws://127.0.0.1:{port}/ws/diff", "", workdir, log_path)
    _wait_ready(server, 0, port, timeout)
    return server


def _wait_ready(server: ServerProc, http_port: int, diff_port: int, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {server.process.returncode}:\n{server.log()}")
        try:
            if http_port:
                if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1.0).status_code != 200:
                    raise OSError("not ready")
            with socket.create_connection(("127.0.0.1", diff_port), timeout=1.0):
                return
        except (OSError, httpx.TransportError):
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.kind} not ready after {timeout} s:\n{server.log()}")


def nats_server_binary() -> str:
    """nats-server's path (Debian's package puts it in /usr/sbin, which is not always on PATH)."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        raise RuntimeError("nats-server is not installed (apt-get install -y nats-server)")
    return binary


def start_nats(workdir: Path, *, core: int, config: str = "", timeout: float = 20.0) -> ServerProc:
    """A nats-server of our own on a free 127.0.0.1 port, pinned to `core`; stopped by its PID."""
    return _port_retried(lambda: _start_nats_once(workdir, core, config, timeout), "nats-server")


def _start_nats_once(workdir: Path, core: int, config: str, timeout: float) -> ServerProc:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"nats-{port}.log"
    command = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", "0"]
    if config:
        config_path = workdir / f"nats-{port}.conf"
        config_path.write_text(config)
        command += ["-c", str(config_path)]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            _wrapped(command, core, 0), cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProc("nats", process, f"nats://127.0.0.1:{port}", "", workdir, log_path)
    _wait_ready(server, 0, port, timeout)
    return server


def start_gateway(
    core_server: ServerProc,
    broker_url: str,
    workdir: Path,
    *,
    core: int,
    nofile: int = 0,
    timeout: float = 30.0,
) -> ServerProc:
    """``qaex gateway --broker URL --diff-port N`` with the core's settings, pinned to `core`."""
    return _port_retried(
        lambda: _start_gateway_once(core_server, broker_url, workdir, core, nofile, timeout), "qaex gateway"
    )


def _start_gateway_once(
    core_server: ServerProc, broker_url: str, workdir: Path, core: int, nofile: int, timeout: float
) -> ServerProc:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"gateway-{port}.log"
    command = [sys.executable, "-m", "qaex", "gateway", "--broker", broker_url, "--diff-port", str(port)]
    env = dict(core_server.env)
    env["QAEX_LOG"] = "info"  # the gateway's closes (heartbeat timeouts) and resyncs, for the report
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            _wrapped(command, core, nofile), env=env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProc("gateway", process, f"ws://127.0.0.1:{port}/ws/diff", "", workdir, log_path, env=env)
    _wait_ready(server, 0, port, timeout)
    return server


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def open_accounts(
    http_url: str,
    users: Iterable[tuple[str, str]],
    init_cash: float,
    *,
    concurrency: int = 8,
    login: bool = False,
) -> None:
    """POST /api/account/open for each (user, password); each costs the server one scrypt hash.

    `login`: also POST /api/auth/login once per user, which verifies the password (one scrypt check)
    and warms the server's cache of verified passwords, so later DIFF logins of that user are cheap.
    """
    import concurrent.futures

    import httpx

    users = list(users)
    progress = Progress(len(users), "open accounts", "acct")

    def one(user: tuple[str, str]) -> None:
        body = {"user_id": user[0], "password": user[1], "init_cash": init_cash}
        answer = httpx.post(http_url + "/api/account/open", json=body, timeout=120.0)
        if answer.status_code != 201:
            raise RuntimeError(f"open {user[0]}: {answer.status_code} {answer.text}")
        if login:
            http_login(http_url, *user)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for _ in pool.map(one, users):
            progress.update()
    progress.close()


def http_login(http_url: str, user: str, password: str) -> str:
    import httpx

    answer = httpx.post(
        http_url + "/api/auth/login", json={"user_id": user, "password": password}, timeout=60
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def make_users(prefix: str, count: int) -> list[tuple[str, str]]:
    tag = secrets.token_hex(3)
    return [(f"{prefix}{tag}{i}", secrets.token_hex(8)) for i in range(count)]


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qaex-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# -- DIFF messages ----------------------------------------------------------------------------------------
def insert_order_message(
    user: str, order_id: str, direction: str, price: float, volume: int = 1, symbol: str = SYMBOL
) -> str:
    exchange_id, instrument_id = symbol.split(".", 1)
    return _encode(
        {
            "aid": "insert_order",
            "user_id": user,
            "order_id": order_id,
            "exchange_id": exchange_id,
            "instrument_id": instrument_id,
            "direction": direction,
            "offset": "OPEN",
            "volume": volume,
            "price_type": "LIMIT",
            "limit_price": price,
            "volume_condition": "ANY",
            "time_condition": "GFD",
        }
    ).decode()


class DiffConn:
    """One DIFF session for a load generator: peeks after every rtn_data and hands each patch list on."""

    def __init__(self, ws: Any, on_data: Callable[[float, list[dict[str, Any]]], None] | None = None) -> None:
        self.ws = ws
        self.on_data = on_data
        self.user: str | None = None
        self.logged_in = False
        self.login_failed = False
        self.account_seen = False
        self.frames = 0
        self.patches = 0
        self.errors: list[dict[str, Any]] = []
        self.quote: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # only filled when track_orders
        self.track_orders = True
        self.closed: str | None = None  # the close reason, when the server closed the session

    async def reader(self) -> None:
        import trio
        from trio_websocket import ConnectionClosed

        ws = self.ws
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed as exc:
                self.closed = str(exc.reason)
                return
            now = trio.current_time()
            message = _decode(frame)
            if message.get("aid") != "rtn_data":
                continue
            data = message["data"]
            try:
                await ws.send_message(PEEK)
            except ConnectionClosed as exc:
                self.closed = str(exc.reason)
                return
            self.frames += 1
            self.patches += len(data)
            for patch in data:
                self._scan(patch)
            if self.on_data is not None:
                self.on_data(now, data)

    def _scan(self, patch: dict[str, Any]) -> None:
        notify = patch.get("notify")
        if notify:
            for note in notify.values():
                if note.get("code") == 401:
                    self.logged_in = True
                elif note.get("level") == "ERROR":
                    self.errors.append(note)
                    if note.get("code") in (402, 403):
                        self.login_failed = True
        quotes = patch.get("quotes")
        if quotes:
            for symbol, quote in quotes.items():
                if isinstance(quote, dict):
                    self.quote.setdefault(symbol, {}).update(quote)
        trade = patch.get("trade")
        if trade and self.user in trade:
            tree = trade[self.user]
            if isinstance(tree, dict):
                if "accounts" in tree:
                    self.account_seen = True
                orders = tree.get("orders")
                if orders and self.track_orders:
                    for order_id, order in orders.items():
                        if isinstance(order, dict):
                            self.orders.setdefault(order_id, {}).update(order)

    async def login(self, user: str, password: str, within: float = 120.0) -> None:
        import trio

        self.user = user
        await self.ws.send_message(
            _encode({"aid": "req_login", "bid": "qaex", "user_name": user, "password": password}).decode()
        )
        with trio.fail_after(within):
            while not (self.logged_in and self.account_seen):
                if self.login_failed:
                    raise RuntimeError(f"login failed for {user}: {self.errors}")
                await trio.sleep(0.005)

    async def subscribe(self, ins_list: str) -> None:
        await self.ws.send_message(_encode({"aid": "subscribe_quote", "ins_list": ins_list}).decode())


@contextlib.asynccontextmanager
async def diff_session(url: str, on_data: Any = None) -> Any:
    import trio
    from trio_websocket import ConnectionClosed, open_websocket_url

    with contextlib.suppress(ConnectionClosed):  # the server may close it (e.g. its heartbeat timeout)
        async with open_websocket_url(url, max_message_size=1 << 24) as ws:
            conn = DiffConn(ws, on_data)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.reader)
                await ws.send_message(PEEK)
                yield conn
                nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], within: float, step: float = 0.01) -> bool:
    import trio

    with trio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 (polling a plain predicate is the point)
            await trio.sleep(step)
        return True
    return False


# -- histograms and output --------------------------------------------------------------------------------
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, 600_000_000, 3)  # microseconds, 1 µs .. 10 min, 3 significant digits


def summarize(hist: Any) -> dict[str, float]:
    """P50/P90/P99/P99.9/max/mean in milliseconds, plus the count."""
    if hist.get_total_count() == 0:
        return {"count": 0}
    out: dict[str, float] = {"count": hist.get_total_count()}
    for p in PERCENTILES:
        out[f"p{p:g}"] = hist.get_value_at_percentile(p) / 1000.0
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = hist.get_mean_value() / 1000.0
    return out


def percentile_curve(hist: Any) -> list[tuple[float, float]]:
    """(percentile, latency ms) points for a plot, denser in the tail."""
    points = []
    for nines in [i / 20 for i in range(0, 81)]:  # 0 .. 4 nines (99.99 %)
        percentile = 100.0 * (1 - 10 ** (-nines))
        points.append((percentile, hist.get_value_at_percentile(percentile) / 1000.0))
    points.append((100.0, hist.get_max_value() / 1000.0))
    return points


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def latency_table(rows: list[tuple[str, dict[str, float]]], baseline: dict[str, float] | None = None) -> str:
    head = "| run | count | P50 ms | P90 ms | P99 ms | P99.9 ms | max ms |"
    if baseline:
        head += " P50 ÷ base | P99 ÷ base |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for name, s in rows:
        if not s.get("count"):
            lines.append(f"| {name} | 0 |" + " – |" * (head.count("|") - 3))
            continue
        line = (
            f"| {name} | {int(s['count']):,} | "
            + " | ".join(fmt_ms(s[k]) for k in ("p50", "p90", "p99", "p99.9", "max"))
            + " |"
        )
        if baseline:
            line += f" {s['p50'] / baseline['p50']:.2f}× | {s['p99'] / baseline['p99']:.2f}× |"
        lines.append(line)
    return "\n".join(lines)


def write_outputs(name: str, result: dict[str, Any], markdown: str, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"{name}-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2, default=str))
    md_path = out_dir / f"{name}-{stamp}.md"
    md_path.write_text(markdown)
    (out_dir / f"{name}-latest.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / f"{name}-latest.md").write_text(markdown)
    say(f"wrote {json_path} and {md_path}")
    return json_path


def plot_percentiles(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> Path | None:
    """Latency by percentile (log-scaled 'nines' on x), one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return None
    import math

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for label, points in curves.items():
        xs = [min(-math.log10(max(1 - p / 100.0, 1e-5)), 5) for p, _ in points]
        ys = [max(v, 1e-3) for _, v in points]
        ax.plot(xs, ys, label=label, linewidth=1.8)
    ticks = [0, 1, 2, 3, 4, 5]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "max"])
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    say(f"wrote {path}")
    return path


# -- profiling --------------------------------------------------------------------------------------------
def start_profile(pid: int, duration: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record (raw collapsed stacks) on `pid`; None when py-spy is missing."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        say("py-spy not installed: no profile (pip install py-spy)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)  # py-spy does not create it
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration)))]
    command += ["--format", "raw", "--rate", "200", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by self samples and by inclusive samples, from py-spy's collapsed-stack output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


def _short_frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file_part = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in file_part:
            file_part = file_part.split(marker, 1)[1]
    if "/qaex/" in file_part:
        file_part = "qaex/" + file_part.rsplit("/qaex/", 1)[1]
    return f"{name} ({file_part})"


def profile_markdown(summary: dict[str, Any], top: int = 15) -> str:
    if not summary.get("samples"):
        return "(no profile samples)"
    lines = [f"py-spy, {summary['samples']:,} samples of the server process.", ""]
    lines.append("| self % | function | | inclusive % | function |")
    lines.append("|---:|---|---|---:|---|")
    for (a, pa), (b, pb) in zip(summary["self"][:top], summary["inclusive"][:top], strict=False):
        lines.append(f"| {pa} | `{a}` | | {pb} | `{b}` |")
    return "\n".join(lines)


# -- the "other sessions" worker process ----------------------------------------------------------------
@dataclass
class WorkerHandle:
    process: subprocess.Popen[str]

    def command(self, line: str, timeout: float = 600.0) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def read(self, timeout: float = 600.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"session worker exited with {self.process.poll()}")
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer
        raise TimeoutError("session worker did not answer")

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.write("EXIT\n")
                self.process.stdin.flush()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_session_workers(
    url: str,
    users: list[tuple[str, str]],
    sessions: int,
    processes: int,
    *,
    core: int,
    workdir: Path,
    nice: int = 10,
    symbols: str = SESSION_SYMBOLS,
    timeout: float = 600.0,
) -> tuple[list[WorkerHandle], list[dict[str, Any]]]:
    """Spread `sessions` sessions (round-robin over `users`) over `processes` worker processes.

    Returns once every worker has connected, logged in and subscribed all its sessions (their READY
    answers). Users are logged in by their first session before the others (the server caches a
    verified password, so only the first login of a user costs a scrypt check).
    """
    processes = max(1, min(processes, sessions)) if sessions else 0
    handles = []
    for k in range(processes):
        assigned = [users[i % len(users)] for i in range(k, sessions, processes)]
        spec = workdir / f"sessions-{k}.json"
        spec.write_text(json.dumps({"url": url, "sessions": assigned, "symbols": symbols}))
        command = [sys.executable, "-m", "bench._session_worker", "--spec", str(spec)]
        command += ["--core", str(core), "--nice", str(nice), "--nofile", str(len(assigned) + 512)]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        handles.append(WorkerHandle(process))
    ready = [h.read(timeout) for h in handles]
    return handles, ready


def workers_command(handles: list[WorkerHandle], line: str, timeout: float = 600.0) -> list[dict[str, Any]]:
    """Send one command to every worker, then collect every answer (they work in parallel)."""
    for h in handles:
        assert h.process.stdin is not None
        h.process.stdin.write(line + "\n")
        h.process.stdin.flush()
    return [h.read(timeout) for h in handles]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 3)


def _stats(conns: list[DiffConn]) -> dict[str, Any]:
    return {
        "sessions": len(conns),
        "frames": sum(c.frames for c in conns),
        "patches": sum(c.patches for c in conns),
        "with_account": sum(c.account_seen for c in conns),
        "errors": sum(len(c.errors) for c in conns),
    }


def _check(conns: list[DiffConn], expected: dict[str, Any]) -> tuple[int, list[str]]:
    """Sessions that got their snapshot (account, full quotes) and the updates (final quote, own order)."""
    good = 0
    problems: list[str] = []
    volumes: dict[str, int] = expected.get("quote_volume", {})
    order_prefix = expected.get("order_prefix")
    for c in conns:
        why = []
        if c.closed is not None:
            why.append(f"closed by the server: {c.closed}")
        if not c.account_seen:
            why.append("no account snapshot")
        for symbol, volume in volumes.items():
            quote = c.quote.get(symbol, {})
            if "price_tick" not in quote:
                why.append(f"no full quote {symbol}")
            if quote.get("volume") != volume:
                why.append(f"{symbol} volume {quote.get('volume')} != {volume}")
        if order_prefix:
            order = c.orders.get(f"{order_prefix}{c.user}", {})
            if order.get("status") != "FINISHED" or order.get("volume_left") != 0:
                why.append(f"own order not filled: {order.get('status')}")
        if why:
            if len(problems) < 10:
                problems.append(f"{c.user}: {'; '.join(why)}")
        else:
            good += 1
    return good, problems


# -- the baseline echo server ------------------------------------------------------------------------------
def _echo_main(args: argparse.Namespace) -> None:
    import trio
    from trio_websocket import ConnectionClosed, serve_websocket

    async def handler(request: Any) -> None:
        ws = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    async def main() -> None:
        await serve_websocket(handler, "127.0.0.1", args.port, None, max_message_size=1 << 20)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="helper processes of the qaex end-to-end benchmarks")
    sub = parser.add_subparsers(dest="what", required=True)
    echo = sub.add_parser("echo", help="a bare trio-websocket echo server (the baseline)")
    echo.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _echo_main(args)


if __name__ == "__main__":
    main()


def add_output_args(
    parser: argparse.ArgumentParser, *, cores: bool = True, profile: str = "", client_rt: bool = True
) -> None:
    """The options every end-to-end bench shares: pinning, profiling, where results go."""
    if cores:
        parser.add_argument(
            "--server-core", type=int, default=None, help="core for the server (default: the first)"
        )
        parser.add_argument(
            "--client-core", type=int, default=None, help="core for the clients (default: another)"
        )
        parser.add_argument(
            "--client-rt",
            action=argparse.BooleanOptionalAction,
            default=client_rt,
            help="run the load generator under SCHED_FIFO (see place_load_generator; default %(default)s)",
        )
    if profile:
        parser.add_argument("--profile", action="store_true", help=f"py-spy the server {profile}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go (bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' working directories")


def new_result(bench: str, args: argparse.Namespace, argv: list[str] | None, **extra: Any) -> dict[str, Any]:
    """The header every result file starts with: what ran, where, with which settings, at what load."""
    return {
        "bench": bench,
        "machine": machine(),
        "command": " ".join([f"python -m bench.{bench}", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: str(v) for k, v in vars(args).items()},
        **extra,
        "load_start": load(),
    }
