"""The benches' "other sessions" worker: N DIFF sessions in one process, driven over stdin.

``python -m bench._session_worker --spec FILE`` (started by ``_common.start_session_workers``) opens the
spec's sessions, logs each in, subscribes it to the spec's symbols and waits for their full quotes; then
it answers ``{"ready": n, "failed": k, ...}`` on stdout and from then on keeps one peek outstanding on
every session (a new ``peek_message`` after each ``rtn_data``), counting and scanning what arrives.
Commands on stdin, one JSON answer line each: ``RESET`` (zero the counters), ``STATS``, ``ORDERS
{"price":..,"direction":..}`` (one order per user, from its first open session), ``CHECK {...}``
(see ``_common._check``), ``EXIT``.

These sessions stand for clients on other machines, so what they cost here is the harness's cost, not
the server's: on a 2-core machine they share the load generator's core. They are therefore one thread
over a ``selectors`` poll of plain non-blocking sockets with wsproto (the WebSocket protocol object
trio-websocket is built on) and msgspec: no task, channel or lock per frame. The server sees the same
traffic as from any DIFF client (a real handshake, masked frames, pongs, a close handshake).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from bench._common import (
    PEEK,
    DiffConn,
    _check,
    _cpu_seconds,
    _decode,
    _encode,
    _stats,
    insert_order_message,
    pin_self,
    raise_nofile,
)

SETUP_AT_ONCE = 128  # sessions connecting / logging in at the same time
SETUP_WITHIN = 120.0  # seconds a session may take from connect to its full quotes
ORDERS_STEP = 50  # ORDERS sends this many, then waits ORDERS_PAUSE (the server's rate limits)
ORDERS_PAUSE = 0.05


class Session:
    """One DIFF session: its socket, its wsproto connection, what it has seen (a DiffConn record)."""

    def __init__(self, worker: Worker, user: str, password: str) -> None:
        self.worker = worker
        self.user, self.password = user, password
        self.conn = DiffConn(None)
        self.conn.user = user
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.text: list[str] = []  # the fragments of a text message in progress
        self.stage = "connect"  # connect, handshake, login, quotes, ready, closed
        self.started = 0.0

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.sock is None or self.stage == "closed":
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.close(f"send: {exc}")
                return
            data = data[sent:]
            if not data:
                return
            self.worker.want_write(self, True)
        self.out += data

    def send_text(self, text: str) -> None:
        self.send(self.ws.send(Message(data=text)))

    def flush(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(f"send: {exc}")
            return
        del self.out[:sent]
        if not self.out:
            self.worker.want_write(self, False)

    # -- receiving -------------------------------------------------------------------------------------
    def readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(f"recv: {exc}")
            return
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.text.append(event.data)
                if event.message_finished:
                    text = "".join(self.text)
                    self.text.clear()
                    self.on_message(text)
            elif isinstance(event, Ping):
                self.send(self.ws.send(event.response()))
            elif isinstance(event, AcceptConnection):
                self.stage = "login"
                self.send_text(PEEK)
                self.send_text(
                    _encode(
                        {"aid": "req_login", "bid": "qaex", "user_name": self.user, "password": self.password}
                    ).decode()
                )
            elif isinstance(event, RejectConnection):
                self.close(f"handshake rejected: {event.status_code}")
                return
            elif isinstance(event, CloseConnection):
                self.conn.closed = event.reason or str(event.code)
                self.send(self.ws.send(event.response()))
                self.close(None)
                return
        if not data:
            self.close(None if self.conn.closed else "connection lost")

    def on_message(self, text: str) -> None:
        message = _decode(text)
        if message.get("aid") != "rtn_data":
            return
        data = message["data"]
        self.send_text(PEEK)
        conn = self.conn
        conn.frames += 1
        conn.patches += len(data)
        for patch in data:
            conn._scan(patch)
        if self.stage == "login":
            if conn.login_failed:
                self.worker.setup_failed(self, f"login failed for {self.user}: {conn.errors}")
            elif conn.logged_in and conn.account_seen:
                self.stage = "quotes"
                self.send_text(_encode({"aid": "subscribe_quote", "ins_list": self.worker.symbols}).decode())
        elif self.stage == "quotes" and "price_tick" in conn.quote.get(self.worker.first_symbol, {}):
            self.stage = "ready"
            self.worker.setup_done(self)

    def close(self, why: str | None) -> None:
        if self.stage == "closed":
            return
        was = self.stage
        self.stage = "closed"
        if self.conn.closed is None:
            self.conn.closed = why or "closed"
        if self.sock is not None:
            self.worker.forget(self)
            self.sock.close()
        if was not in ("ready", "closed"):
            self.worker.setup_failed(self, f"session {self.user}: {why}")


class Worker:
    def __init__(self, url: str, assigned: list[tuple[str, str]], symbols: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.symbols = symbols
        self.first_symbol = symbols.split(",")[0]
        self.sessions = [Session(self, u, p) for u, p in assigned]
        self.selector = selectors.DefaultSelector()
        self.setting_up: set[Session] = set()
        self.failures: list[str] = []
        self.ready: list[Session] = []
        self.stdin = bytearray()
        self.orders: deque[Session] = deque()
        self.orders_sent = 0
        self.orders_unsendable: list[str] = []
        self.orders_next = 0.0
        self.check: tuple[dict[str, Any], float] | None = None
        self.exit = False

    # -- selector bookkeeping --------------------------------------------------------------------------
    def want_write(self, session: Session, on: bool) -> None:
        assert session.sock is not None
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        self.selector.modify(session.sock, events, session)

    def forget(self, session: Session) -> None:
        assert session.sock is not None
        try:
            self.selector.unregister(session.sock)
        except (KeyError, ValueError):
            pass
        self.setting_up.discard(session)

    # -- setup -----------------------------------------------------------------------------------------
    def connect(self, session: Session) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        session.sock = sock
        session.started = time.monotonic()
        self.setting_up.add(session)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            self.selector.register(sock, selectors.EVENT_READ, session)
            session.close(f"connect: {os.strerror(code)}")
            return
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, session)

    def connected(self, session: Session) -> None:
        assert session.sock is not None
        code = session.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            session.close(f"connect: {os.strerror(code)}")
            return
        session.stage = "handshake"
        self.want_write(session, False)
        session.send(session.ws.send(Request(host=f"{self.host}:{self.port}", target=self.target)))

    def setup_done(self, session: Session) -> None:
        self.setting_up.discard(session)
        self.ready.append(session)

    def setup_failed(self, session: Session, why: str) -> None:
        if session in self.setting_up:
            self.setting_up.discard(session)
            self.failures.append(why)
        if session.stage != "closed":
            session.stage = "failed"  # kept open (as before): it still peeks, but is not counted ready

    def set_up(self) -> float:
        """Connect the first session of each user, then the rest, SETUP_AT_ONCE at a time."""
        t0 = time.monotonic()
        seen: set[str] = set()
        firsts = [s for s in self.sessions if not (s.user in seen or seen.add(s.user))]  # type: ignore[func-returns-value]
        first_set = set(firsts)
        rest = [s for s in self.sessions if s not in first_set]
        for group in (firsts, rest):
            queue = deque(group)
            while queue or self.setting_up:
                while queue and len(self.setting_up) < SETUP_AT_ONCE:
                    self.connect(queue.popleft())
                self.poll(0.05)
                now = time.monotonic()
                for session in [s for s in self.setting_up if now - s.started > SETUP_WITHIN]:
                    self.setup_failed(
                        session, f"{session.user}: not ready within {SETUP_WITHIN:g} s ({session.stage})"
                    )
        return time.monotonic() - t0

    # -- the loop --------------------------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        for key, mask in self.selector.select(timeout):
            session = key.data
            if session is None:
                self.stdin_readable()
                continue
            if mask & selectors.EVENT_WRITE:
                if session.stage == "connect":
                    self.connected(session)
                    continue
                session.flush()
            if mask & selectors.EVENT_READ and session.stage != "closed":
                session.readable()

    def stdin_readable(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.exit = True
            return
        self.stdin += data
        while b"\n" in self.stdin:
            line, _, rest = bytes(self.stdin).partition(b"\n")
            self.stdin = bytearray(rest)
            self.command(line.decode().strip())

    def command(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        conns = [s.conn for s in self.ready]
        if not line or verb == "EXIT":
            self.exit = True
        elif verb == "RESET":
            for conn in conns:
                conn.frames = conn.patches = 0
            answer({"ok": True, "cpu": _cpu_seconds()})
        elif verb == "STATS":
            answer(_stats(conns) | {"cpu": _cpu_seconds()})
        elif verb == "ORDERS":
            params = json.loads(rest)
            seen: set[str] = set()
            self.orders = deque()
            for s in self.ready:
                if s.user not in seen and s.stage == "ready":
                    seen.add(s.user)
                    self.orders.append(s)
            self.orders_params = params
            self.orders_sent, self.orders_unsendable, self.orders_next = 0, [], 0.0
        elif verb == "CHECK":
            expected = json.loads(rest)
            self.check = (expected, time.monotonic() + expected.get("within", 10))
        else:
            answer({"error": f"unknown command {line!r}"})

    def step_orders(self) -> None:
        now = time.monotonic()
        if not self.orders or now < self.orders_next:
            return
        for _ in range(min(ORDERS_STEP, len(self.orders))):
            s = self.orders.popleft()
            if s.stage != "ready":
                self.orders_unsendable.append(f"{s.user}: {s.conn.closed}")
                continue
            p = self.orders_params
            s.send_text(insert_order_message(s.user, f"chk-{s.user}", p["direction"], p["price"]))
            self.orders_sent += 1
        self.orders_next = now + ORDERS_PAUSE
        if not self.orders:
            answer({"sent": self.orders_sent, "unsendable": self.orders_unsendable[:5]})

    def step_check(self) -> None:
        if self.check is None:
            return
        expected, deadline = self.check
        conns = [s.conn for s in self.ready]
        good, problems = _check(conns, expected)
        if good == len(conns) or time.monotonic() > deadline:
            self.check = None
            answer(
                {
                    "checked": len(conns),
                    "good": good,
                    "all_good": good == len(conns),
                    "problems": problems[:10],
                }
            )

    def run(self) -> None:
        seconds = self.set_up()
        answer(
            {
                "ready": len(self.ready),
                "failed": len(self.failures),
                "failures": self.failures[:5],
                "seconds": round(seconds, 2),
            }
        )
        os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, None)
        while not self.exit:
            busy = bool(self.orders) or self.check is not None
            self.poll(0.01 if busy else 1.0)
            self.step_orders()
            self.step_check()
        for s in self.sessions:
            if s.stage not in ("closed", "connect"):
                s.send(s.ws.send(CloseConnection(code=1000)))
                s.close("exit")


def answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N DIFF sessions driven over stdin (used by the benches)")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--core", type=int, default=-1)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--nofile", type=int, default=4096)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    raise_nofile(args.nofile)
    pin_self(args.core)
    if args.nice:
        os.nice(args.nice)
    Worker(spec["url"], [(u, p) for u, p in spec["sessions"]], spec["symbols"]).run()


if __name__ == "__main__":
    main()
