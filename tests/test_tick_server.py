"""Recorded ticks on a real server (hypercorn, DIFF, the CLI): import and replay.

* ``qaex import-history`` of a DataDownloader tick file on a stopped server's data directory replaces
  the contract's synthetic history wholesale: after a start, ``GET /api/market/ticks`` serves the
  recorded ticks and ``GET /api/market/klines`` (and a DIFF chart) the 1-minute and daily bars built
  from them; bars of another duration (``--duration 300``) are served as imported; the admin route
  imports a tick file on the running server.
* ``qaex serve --replay FILE --replay-speed N`` with a tick recording: the market maker's quote climbs
  with the recorded prices, its trades are journaled (a restart comes back at the last one's price),
  and when the recording ends it walks on from the last price.
* a big kept tick file (100,000 ticks) never holds the server up: while a client's first ask loads
  it, ``/health`` answers within a second, and the ticks come back in a few seconds (only the last
  ones the series holds are read).
* a replay survives restarts: stopped (SIGTERM) or killed (``kill -9``) mid-replay, the server started
  again with the same recording and speed quotes on from where the recording was (``replay.json``), not
  from its start.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import Server, launch, open_user, wait_ready
from test_history_server import import_history, klines

from qaex.client import DiffClient
from qaex.core.history import format_datetime, to_csv
from qaex.core.tick_file import TickColumns, bars_from_ticks, tick_fields, tick_header, ticks_to_csv

S = 1_000_000_000
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 China time
RB = "SHFE.rb2601"  # price tick 1, pre_settlement 3100 (tests/pinned_instruments.toml)
CU = "SHFE.cu2601"  # price tick 10, pre_settlement 86000


def recorded_ticks(count: int, start: float, *, step: float, every_ns: int, tick: float = 1.0) -> TickColumns:
    ticks = TickColumns(5)
    for index in range(count):
        price = start + step * index
        values: dict[str, float] = {}
        for name, kind in tick_fields(5):
            values[name] = 4.0 if kind == "count" else price
        values.update(
            volume=10 + 3 * index,
            open_interest=20_000 + index % 5,
            amount=price * (10 + 3 * index) * 10,
            bid_price1=price - tick,
            ask_price1=price + tick,
        )
        ticks.append(T0 + index * every_ns, values)
    return ticks


def wait_for_file(path: Path, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), path


def no_nan(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()
    }


def test_an_imported_tick_file_is_the_contracts_history(tmp_path: Path) -> None:
    first = launch(tmp_path)
    try:
        wait_ready(first)
        wait_for_file(first.data_dir / "history" / f"{RB}.60.csv")  # the synthetic history, replaced below
    finally:
        first.stop()
    # 600 ticks 2 s apart (20 minutes), rising and falling a tick at a time around 3100.
    ticks = TickColumns(5)
    for index, base in enumerate(recorded_ticks(600, 3100.0, step=0.0, every_ns=2 * S).ticks()):
        price = 3100.0 + (index % 40 if index % 80 < 40 else 40 - index % 40)
        values = {name: base[name] for name, _ in tick_fields(5)}
        values.update(last_price=price, bid_price1=price - 1, ask_price1=price + 1)
        ticks.append(base["datetime"], values)
    source = tmp_path / "rb-ticks.csv"
    source.write_text(ticks_to_csv(RB, ticks, 0))
    five = bars_from_ticks(recorded_ticks(300, 86000.0, step=10.0, every_ns=5 * S, tick=10.0), 300)
    five_path = tmp_path / "cu-5min.csv"
    five_path.write_text(to_csv(CU, five, 0))
    done = import_history(first.env, str(source))
    assert done.returncode == 0, done.stderr
    minutes, days = bars_from_ticks(ticks, 60), bars_from_ticks(ticks, 86400)
    assert done.stdout.splitlines() == [
        f"imported {RB}: 600 ticks",
        f"imported {RB}: {len(minutes)} bars of 60 s",
        f"imported {RB}: 1 bars of 86400 s",
    ]
    done = import_history(first.env, "--duration", "300", str(five_path))
    assert done.returncode == 0 and f"imported {CU}: {len(five)} bars of 300 s" in done.stdout, done.stderr
    server = launch(tmp_path, data_dir=first.data_dir)
    try:
        wait_ready(server)
        served_minutes = klines(server.http_url, RB, 60, 100)
        assert [
            {k: v for k, v in bar.items() if k != "id"} for bar in served_minutes[: len(minutes)]
        ] == list(minutes.bars())
        assert len(served_minutes) <= len(minutes) + 1  # then at most the live bar at the clock
        served_days = klines(server.http_url, RB, 86400, 10)
        assert {k: v for k, v in served_days[0].items() if k != "id"} == days.bar(0)
        response = httpx.get(f"{server.http_url}/api/market/ticks/{RB}", params={"count": 1000})
        assert response.status_code == 200, response.text
        rows = response.json()["ticks"]
        assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == [
            no_nan(t) for t in ticks.ticks()
        ]
        served_five = klines(server.http_url, CU, 300, 10_000)  # then bars from the 1-minute ones
        assert [{k: v for k, v in bar.items() if k != "id"} for bar in served_five[: len(five)]] == list(
            five.bars()
        )
        chart = trio.run(diff_chart, server, RB)
        imported = [(bar["datetime"], bar["close"]) for bar in minutes.bars()]
        assert [bar for bar in chart if bar[0] <= minutes.datetime[-1]] == imported  # then a live bar or none
        assert len(chart) <= len(imported) + 1
        # A running server imports over the admin route (served already: it applies at the next start).
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        again = {"name": "again.csv", "text": ticks_to_csv(RB, ticks.slice(0, 300), 0)}
        answer = httpx.post(
            f"{server.http_url}/api/admin/history/import", json={"files": [again]}, headers=admin
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "imported": [
                {"symbol": RB, "duration": 0, "bars": 300},
                {"symbol": RB, "duration": 60, "bars": len(bars_from_ticks(ticks.slice(0, 300), 60))},
                {"symbol": RB, "duration": 86400, "bars": 1},
            ],
            "next_start": [RB],
        }
    finally:
        server.stop()
    assert (server.data_dir / "history" / f"{RB}.0.csv").read_text() == again["text"]


async def diff_chart(server: Server, symbol: str) -> list[tuple[int, float]]:
    """(datetime, close) of the bars a DIFF chart of 60 bars shows (TqSdk's set_chart, as
    get_kline_serial sends it)."""
    user = open_user(server)
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(user.user_id, user.password)
        await client.send(
            {"aid": "set_chart", "chart_id": "c", "ins_list": symbol, "duration": 60 * S, "view_width": 60}
        )

        def bars(c: DiffClient) -> list[tuple[int, float]] | None:
            series = c.tree.get("klines", {}).get(symbol, {}).get(str(60 * S), {})
            chart = c.tree.get("charts", {}).get("c", {})
            if not chart.get("ready") or series.get("last_id", -1) < 0:
                return None
            data = series["data"]
            left, right = chart["left_id"], chart["right_id"]
            bars = [data[str(i)] for i in range(left, right + 1) if str(i) in data]
            return [(bar["datetime"], bar["close"]) for bar in bars]

        return await client.wait_for(bars)


def test_serve_replays_a_tick_recording(tmp_path: Path) -> None:
    # 60 ticks 1 s apart, 2 ticks up each: 3100 .. 3218, played 4 times faster (15 s).
    ticks = recorded_ticks(60, 3100.0, step=2.0, every_ns=S)
    recording = tmp_path / "rb-day.csv"
    recording.write_text(ticks_to_csv(RB, ticks, 0))
    env = {"QAEX_MARKET_MAKER": "1", "QAEX_MARKET_MAKER_SYMBOLS": RB, "QAEX_SEED": "3"}
    server = launch(
        tmp_path, extra_env=env, serve=True, serve_args=["--replay", str(recording), "--replay-speed", "4"]
    )
    bids: list[float] = []
    try:
        wait_ready(server)
        started = time.monotonic()
        while time.monotonic() - started < 14.0:
            quote = httpx.get(f"{server.http_url}/api/market/quote/{RB}").json()
            if quote["bid_price1"] is not None:
                bids.append(quote["bid_price1"])
            time.sleep(0.25)
        time.sleep(4.0)  # the recording has ended: the walk again, from the last price
        after = httpx.get(f"{server.http_url}/api/market/quote/{RB}").json()["bid_price1"]
        trades = httpx.get(f"{server.http_url}/api/market/ticks/{RB}", params={"count": 10000}).json()[
            "ticks"
        ]
        last_trade = trades[-1]["last_price"]
    finally:
        server.stop()
    assert len(bids) >= 20, bids  # a quote every ~0.25 s for 14 s, fewer on a busy machine
    assert all(3098 <= bid <= 3220 for bid in bids), bids
    assert all(later >= earlier - 2 for earlier, later in itertools.pairwise(bids)), bids  # it climbs
    assert bids[0] <= 3160 and max(bids) >= 3190, bids
    assert abs(after - 3218) <= 12, after
    assert len(trades) >= 5 and all(3095 <= t["last_price"] <= 3235 for t in trades), trades
    # The replay's trades are ordinary trades: journaled, so a restart (no replay) comes back at the last.
    again = launch(tmp_path, data_dir=server.data_dir)
    try:
        wait_ready(again)
        assert httpx.get(f"{again.http_url}/api/market/quote/{RB}").json()["last_price"] == last_trade
    finally:
        again.stop()


def bids_for(server: Server, seconds: float) -> list[float]:
    """The quote's best bid, sampled for ``seconds``."""
    bids: list[float] = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        bid = httpx.get(f"{server.http_url}/api/market/quote/{RB}").json()["bid_price1"]
        if bid is not None:
            bids.append(bid)
        time.sleep(0.1)
    return bids


def bid_reaching(server: Server, at_least: float, within: float = 60.0) -> float:
    """Wait until the best bid is at least ``at_least``; the bid then."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        bid = httpx.get(f"{server.http_url}/api/market/quote/{RB}").json()["bid_price1"]
        if bid is not None and bid >= at_least:
            return float(bid)
        time.sleep(0.1)
    raise AssertionError(f"bid below {at_least} after {within} s:\n{server.log()[-3000:]}")


def test_a_replay_goes_on_after_a_stop_and_a_kill(tmp_path: Path) -> None:
    # 170 ticks 0.5 s apart, a tick up each: 3100 .. 3269 over 85 s, played at 2x (4 ticks a second).
    recording = tmp_path / "rb-day.csv"
    recording.write_text(ticks_to_csv(RB, recorded_ticks(170, 3100.0, step=1.0, every_ns=S // 2), 0))
    env = {"QAEX_MARKET_MAKER": "1", "QAEX_MARKET_MAKER_SYMBOLS": RB, "QAEX_SEED": "3"}
    args = ["--replay", str(recording), "--replay-speed", "2"]
    data_dir = tmp_path / "data"

    def start() -> Server:
        server = launch(tmp_path, data_dir=data_dir, extra_env=env, serve=True, serve_args=args)
        wait_ready(server, timeout=60.0)
        return server

    server = start()
    try:
        stopped_at = bid_reaching(server, 3130)
    finally:
        assert server.stop() == 0
    kept = (data_dir / "replay.json").read_text()
    server = start()
    try:
        after_stop = bids_for(server, 2.0)
        # Back at the start, the bid would be ~3100; it goes on near where it stopped, then climbs on.
        assert after_stop and all(stopped_at - 3 <= bid <= stopped_at + 40 for bid in after_stop), (
            stopped_at,
            after_stop,
        )
        killed_at = bid_reaching(server, 3190)
        server.process.kill()  # kill -9: the position kept up to a second (4 ticks) before
        server.process.wait()
    finally:
        server.stop()
    assert "replay of SHFE.rb2601 resumed at" in server.log(), server.log()[-3000:]
    server = start()
    try:
        after_kill = bids_for(server, 2.0)
    finally:
        server.stop()
    assert '"recording":' in kept and f'"{RB}":' in kept, kept
    assert after_kill and all(killed_at - 12 <= bid <= killed_at + 40 for bid in after_kill), (killed_at, after_kill)


def test_a_big_kept_tick_file_never_holds_up_the_server(tmp_path: Path) -> None:
    # What an import of 100,000 ticks leaves in the data directory (the rows alike but for their time:
    # the size is what matters here; the import's checks and writer are tested in test_tick_history).
    count = 100_000
    history = tmp_path / "data" / "history"
    history.mkdir(parents=True)
    few = recorded_ticks(2, 3100.0, step=0.0, every_ns=S)
    cells = ticks_to_csv(RB, few, 0).splitlines()[1].split(",", 2)[2]
    times = [T0 + index * (S // 2) for index in range(count)]
    rows = "".join(f"{format_datetime(ns)},{ns},{cells}\n" for ns in times)
    (history / f"{RB}.0.csv").write_text(tick_header(RB, 5) + "\n" + rows)
    (history / f"{RB}.60.csv").write_text(to_csv(RB, bars_from_ticks(few, 60), 0))
    (history / f"{RB}.86400.csv").write_text(to_csv(RB, bars_from_ticks(few, 86400), 0))
    server = launch(tmp_path, data_dir=tmp_path / "data")
    waits: list[float] = []
    done = threading.Event()

    def health() -> None:
        with httpx.Client(timeout=30.0) as client:
            while not done.is_set():
                asked = time.monotonic()
                assert client.get(f"{server.http_url}/health").status_code == 200
                waits.append(time.monotonic() - asked)
                time.sleep(0.05)

    try:
        wait_ready(server, timeout=60.0)
        poller = threading.Thread(target=health)
        poller.start()
        try:
            time.sleep(0.3)
            asked = time.monotonic()
            response = httpx.get(
                f"{server.http_url}/api/market/ticks/{RB}", params={"count": 10_000}, timeout=60.0
            )
            took = time.monotonic() - asked
            time.sleep(0.5)
        finally:
            done.set()
            poller.join(60.0)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    served = response.json()["ticks"]
    assert len(served) == 10_000 and [t["datetime"] for t in served] == times[-10_000:]
    assert took < 5.0, took  # ~0.3 s on an idle machine; a parse of every row takes ~10 s here
    assert len(waits) >= 5 and max(waits) < 1.0, sorted(waits)[-5:]
