"""What one market-data publish costs per subscribed session, in process: per-session merge vs shared.

A real ``Engine`` and ``MarketData`` (the default instruments), ``--sessions`` sans-IO DIFF sessions
(``SessionLink(DiffSession)``, as the DIFF server holds them) subscribed to the three symbols the
end-to-end benches' other sessions watch, each with a peek waiting. Each round trades once on each of
the three symbols (not timed), then times the fan-out: ``MarketData.publish`` (push to every
subscriber), then for every session what its writer does before the socket - ``data_to_send`` (coalesce
and encode the rtn_data), the frame as text (``bytes.decode``, as trio-websocket wants it) and, with
``--wsproto``, wsproto's framing of it - and the next peek.

Modes, in the same process, interleaved round by round:

- ``merge``: every publish patch merged into and encoded for each session (what the server did before
  #18: ``push_shared`` replaced by ``push(shared.patch)``);
- ``shared``: the publish's ``SharedPatch``-es, encoded once, their bytes copied into each frame;
- ``merge, private after`` / ``shared, private after``: each session also gets a small private patch
  (an account change) after the publish, so the shared patches are merged into it as before (the
  worst case of ``shared``).

CPU is ``time.process_time`` (this process only; still noisy on a shared machine). ``--callgrind``
instead runs each mode in a child under ``valgrind --tool=callgrind`` and reports instructions per
session per publish: the child's total minus that of a child doing the same rounds without the
fan-out, divided by rounds × sessions. Instruction counts do not depend on the machine's load.

    python -m bench.fanout [--sessions 1000] [--rounds 40] [--wsproto]
    python -m bench.fanout --callgrind [--sessions 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/fanout.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsproto.frame_protocol import FrameProtocol

from qaex.core.commands import Insert, OpenAccount
from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.market import MarketData
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.session import DiffSession

SYMBOLS = ("SHFE.rb2601", "SHFE.cu2601", "DCE.m2601")  # bench._common.SESSION_SYMBOLS
MODES = ("merge", "shared", "merge, private after", "shared, private after")
PEEK = b'{"aid":"peek_message"}'
NS = 1_000_000_000


class Fanout:
    """An engine, its MarketData and ``sessions`` subscribed sessions, each with a peek waiting."""

    def __init__(self, sessions: int, *, wsproto: bool) -> None:
        self.now = 1_763_946_000 * NS
        self.engine = Engine()
        self.market = MarketData(self.engine, clock=lambda: self.now)
        self._ids = itertools.count(1)
        for user in ("maker", "taker"):
            self.engine.apply(OpenAccount(ts=self.now, user_id=user, password_hash="x", init_cash=1e12))
        self.engine.flush()
        self.links = [SessionLink(DiffSession(n)) for n in range(sessions)]
        subscribe = json.dumps({"aid": "subscribe_quote", "ins_list": ",".join(SYMBOLS)})
        for link in self.links:
            self.market.add_session(link)
            link.session.receive(subscribe)
            self.market.subscription_changed(link)
            link.session.receive(PEEK)
            assert link.session.data_to_send() is not None  # the first rtn_data: static fields, quotes
            link.session.receive(PEEK)
        self.frames = FrameProtocol(client=False, extensions=[]) if wsproto else None
        self.bytes_sent = 0
        self.round = 0

    def trade(self) -> None:
        """One trade on each symbol, folded into the market (not part of the fan-out)."""
        self.round += 1
        for symbol in SYMBOLS:
            exchange_id, instrument_id = symbol.split(".")
            price = self.engine.instruments[symbol].pre_settlement + self.round % 5
            for user, direction in (("maker", "SELL"), ("taker", "BUY")):
                self.now += NS // 1000
                order = InsertOrder(
                    user_id=user, order_id=f"o{next(self._ids)}", exchange_id=exchange_id,
                    instrument_id=instrument_id, direction=direction, offset="OPEN", volume=1,
                    limit_price=price,
                )  # fmt: skip
                self.engine.apply(Insert(ts=self.now, order=order))
            self.market.apply(self.engine.flush())

    def fan_out(self, private: bool) -> None:
        """The timed part: publish, then every session's writer up to the socket, and its next peek."""
        self.market.publish()
        frames = self.frames
        for link in self.links:
            session = link.session
            if private:
                session.push({"trade": {"u": {"accounts": {"CNY": {"balance": float(self.round)}}}}})
            frame = session.data_to_send()
            assert frame is not None
            text = frame.decode()
            if frames is not None:
                self.bytes_sent += len(frames.send_data(text, fin=True))
            else:
                self.bytes_sent += len(text)
            session.receive(PEEK)

    def discard(self) -> None:
        """The rounds of a run without fan-out: the changes are taken and dropped."""
        self.market.state.take_changes()


def merging(run: Callable[[], None]) -> None:
    """Run with ``push_shared`` as per-session merging (the server before #18)."""
    shared = DiffSession.push_shared
    DiffSession.push_shared = lambda self, patch: self.push(patch.patch)  # type: ignore[method-assign]
    try:
        run()
    finally:
        DiffSession.push_shared = shared  # type: ignore[method-assign]


def timed(fanout: Fanout, mode: str) -> float:
    fanout.trade()
    started = time.process_time()
    private = mode.endswith("private after")
    if mode.startswith("merge"):
        merging(lambda: fanout.fan_out(private))
    else:
        fanout.fan_out(private)
    return time.process_time() - started


def measure_cpu(args: argparse.Namespace) -> None:
    fanout = Fanout(args.sessions, wsproto=args.wsproto)
    for mode in MODES:  # warm-up
        timed(fanout, mode)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            times[mode].append(timed(fanout, mode))
    base = statistics.median(times["merge"])
    print(f"{'mode':24} {'µs/session/publish (median)':>28} {'p90':>8} {'÷ merge':>8}")
    for mode in MODES:
        median = statistics.median(times[mode])
        p90 = statistics.quantiles(times[mode], n=10)[-1]
        per = 1e6 / args.sessions
        print(f"{mode:24} {median * per:28.2f} {p90 * per:8.2f} {median / base:8.2f}")


def child(args: argparse.Namespace) -> None:
    """One callgrind child: ``--rounds`` rounds of one mode (``--mode none``: no fan-out)."""
    fanout = Fanout(args.sessions, wsproto=args.wsproto)
    for _ in range(args.rounds):
        if args.mode == "none":
            fanout.trade()
            fanout.discard()
        else:
            timed(fanout, args.mode)


def instructions(args: argparse.Namespace, mode: str) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.fanout", "--child", "--mode", mode,
        "--sessions", str(args.sessions), "--rounds", str(args.rounds),
    ]  # fmt: skip
    if args.wsproto:
        command.append("--wsproto")
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def measure_instructions(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    none = instructions(args, "none")
    per = args.rounds * args.sessions
    counts = {mode: (instructions(args, mode) - none) / per for mode in MODES}
    print(f"{'mode':24} {'instructions/session/publish':>29} {'÷ merge':>8}")
    for mode, count in counts.items():
        print(f"{mode:24} {count:29,.0f} {count / counts['merge']:8.2f}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--sessions", type=int, help="subscribed sessions (1000; 200 with --callgrind)")
    parser.add_argument("--rounds", type=int, help="publishes per mode (40; 10 with --callgrind)")
    parser.add_argument("--wsproto", action="store_true", help="include wsproto's framing of each frame")
    parser.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=(*MODES, "none"), default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    small = args.callgrind or args.child
    args.sessions = args.sessions or (200 if small else 1000)
    args.rounds = args.rounds or (10 if small else 40)
    if args.child:
        child(args)
        return
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{platform.machine()}, {args.sessions} sessions x {len(SYMBOLS)} symbols, {args.rounds} publishes"
        f"{', wsproto framing' if args.wsproto else ''}"
    )
    if args.callgrind:
        measure_instructions(args)
    else:
        measure_cpu(args)


if __name__ == "__main__":
    main()
