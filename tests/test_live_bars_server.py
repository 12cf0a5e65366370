"""Live bars across restarts of a real server (hypercorn, HTTP), under libfaketime (minutes on cue).

A server trades, a minute finishes, the server stops (SIGTERM); the next start serves history, the first
run's bars (the one in progress at the stop too) and its own, with no gap and no duplicate. That server
trades, a minute finishes and it is killed (SIGKILL): the next start still has every finished bar.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import STOP_TIMEOUT, Server, User, faketime_env, launch, open_user, wait_ready
from test_crash import worker_pid
from test_history_server import klines

SYMBOL = "SHFE.rb2601"  # one of tests/pinned_instruments.toml
MINUTE = 60_000_000_000
WAIT = 75.0  # seconds for the minute of a trade to finish and be written
TIMEOUT = 120.0  # seconds per request: password hashing, and the first klines builds history on the loop


def relogin(server: Server, users: list[User]) -> list[User]:
    """The same users on a restarted server (tokens survive a restart; no password hashing)."""
    again = []
    for user in users:
        headers = {"Authorization": f"Bearer {user.token}"}
        client = httpx.Client(base_url=server.http_url, headers=headers, timeout=TIMEOUT)
        server.clients.append(client)
        again.append(User(user.user_id, user.password, user.token, client))
    return again


def cross(users: list[User], price: float, volume: int = 1) -> None:
    seller, buyer = users
    for user, direction in ((seller, "SELL"), (buyer, "BUY")):
        order = {"instrument_id": SYMBOL, "direction": direction, "offset": "OPEN", "volume": volume,
                 "price": price, "order_type": "LIMIT"}  # fmt: skip
        answer = user.post("/api/order/submit", json=order)
        assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "FINISHED", answer.text


def minute_bars(server: Server) -> list[dict[str, Any]]:
    bars: list[dict[str, Any]] = klines(server.http_url, SYMBOL, 60, 400, timeout=TIMEOUT)
    ids = [bar.pop("id") for bar in bars]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    times = [bar["datetime"] for bar in bars]
    assert times == sorted(set(times)), "bars out of order or repeated"
    return bars


def traded_bar(server: Server, price: float) -> int:
    """The start of the newest bar with trades once it closes at ``price`` (the trade just made reaches
    the market data a moment after the order's answer)."""
    deadline = time.monotonic() + 10
    while True:
        traded = [bar for bar in minute_bars(server) if bar["volume"] > 0]  # a gap bar may follow it
        if traded and traded[-1]["close"] == price:
            return int(traded[-1]["datetime"])
        assert time.monotonic() < deadline, traded[-1:]
        time.sleep(0.05)


def history_end(server: Server) -> int:
    """The start of the kept history's last 1-minute bar (its file is written before it is served)."""
    rows = (server.data_dir / "history" / f"{SYMBOL}.60.csv").read_text().splitlines()
    return int(rows[-1].split(",")[1])


def wait_written(server: Server, bar_start: int) -> None:
    path = server.data_dir / "history" / "live" / f"{SYMBOL}.60.csv"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and f",{bar_start}," in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"bar {bar_start} not written to {path}:\n{server.log()[-3000:]}")


def assert_continues(before: list[dict[str, Any]], after: list[dict[str, Any]], through: int) -> None:
    """Where both windows reach, ``after`` holds every bar of ``before`` up to ``through``, unchanged, and
    nothing between them."""
    start = max(before[0]["datetime"], after[0]["datetime"])
    kept = [bar for bar in before if start <= bar["datetime"] <= through]
    assert len(kept) > 100, "the windows should overlap"
    assert [bar for bar in after if start <= bar["datetime"] <= through] == kept


def test_live_bars_continue_after_a_sigterm_and_after_a_kill_9(tmp_path: Path) -> None:
    first = launch(tmp_path, extra_env=faketime_env("2026-12-02 02:00:40"))  # Wednesday 10:00:40 China
    try:
        wait_ready(first)
        users = [open_user(first, timeout=TIMEOUT), open_user(first, timeout=TIMEOUT)]
        minute_bars(first)
        end = history_end(first)
        cross(users, 3100)
        minute = traded_bar(first, 3100)
        assert minute > end
        wait_written(first, minute)  # the bar finished and was appended
        cross(users, 3105, 2)  # in the minute in progress at the stop
        in_progress = traded_bar(first, 3105)
        assert in_progress > minute
        before = minute_bars(first)
        day_before = klines(first.http_url, SYMBOL, 86400, 5, timeout=TIMEOUT)
    finally:
        code = first.stop()
    assert code == 0, first.log()[-3000:]

    second = launch(tmp_path, data_dir=first.data_dir, extra_env=faketime_env("2026-12-02 02:06:40"))
    try:
        wait_ready(second)
        users = relogin(second, users)
        after = minute_bars(second)
        assert_continues(before, after, in_progress)  # history, then the first run's bars, as served
        assert any(bar["datetime"] == end for bar in after)
        live = [bar for bar in after if bar["datetime"] > end]
        assert live[0]["datetime"] == minute and live[0]["close"] == 3100  # no gap after history
        day_after = klines(second.http_url, SYMBOL, 86400, 5, timeout=TIMEOUT)
        assert [bar["volume"] for bar in day_after[-1:]] == [bar["volume"] for bar in day_before[-1:]]
        cross(users, 3110)
        again = traded_bar(second, 3110)
        assert again > in_progress
        wait_written(second, again)
        cross(users, 3095)  # in progress at the kill: lost with it, or written if its minute ended
        middle = minute_bars(second)
    finally:
        os.kill(worker_pid(second), signal.SIGKILL)  # the worker holding the data directory
        second.process.wait(STOP_TIMEOUT)

    third = launch(tmp_path, data_dir=first.data_dir, extra_env=faketime_env("2026-12-02 02:12:40"))
    try:
        wait_ready(third)
        last = minute_bars(third)
        assert_continues(middle, last, again)  # every finished bar of both runs, no gap, no duplicate
        assert_continues(before, last, in_progress)
        assert next(bar for bar in last if bar["datetime"] == minute)["volume"] == 1
        assert "live bars" not in third.log() or "torn last line" in third.log()
    finally:
        code = third.stop()
    assert code == 0, third.log()[-3000:]
