"""Market history on a real server, as TqSdk 3.10.4 (unchanged) and the HTTP API see it.

A fresh server has bars at once: TqSdk's ``get_kline_serial(sym, 60, 200)`` gets 200 bars with no NaN
and ``(sym, 86400, 100)`` 100 daily bars within a couple of seconds, and the quote has a ``last_price``
(history's last close) before any trade; the moving-average example trades. The history is written
under the data directory once and the same bars come back after a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import launch, open_user, wait_ready

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "tqsdk_history_driver.py"
EXAMPLE = HERE.parent / "examples" / "tqsdk_ma_crossover.py"
SYMBOL = "SHFE.rb2601"  # one of tests/pinned_instruments.toml


def klines(
    http_url: str, symbol: str, duration: int, count: int, *, timeout: float = 5.0
) -> list[dict[str, object]]:
    response = httpx.get(
        f"{http_url}/api/market/klines/{symbol}",
        params={"duration": duration, "count": count},
        timeout=timeout,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    bars = body["klines"]
    assert isinstance(bars, list)
    return bars


def run_driver(diff_url: str, user_id: str, password: str, symbol: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(DRIVER), diff_url, user_id, password, symbol],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, object] = json.loads(lines[-1][len("RESULT ") :])
    assert "failed" not in result, result
    return result


def test_tqsdk_gets_history_at_once_and_it_is_kept(tmp_path: Path) -> None:
    server = launch(tmp_path, extra_env={"QAEX_SEED": "7"})
    try:
        wait_ready(server)
        user = open_user(server)
        result = run_driver(server.diff_url, user.user_id, user.password, SYMBOL)
        assert result["minute_rows"] == 200 and result["minute_nan"] == 0
        assert result["day_rows"] == 100 and result["day_nan"] == 0
        assert result["minute_datetimes_increase"]
        assert result["full_rows"] == 10_000 and result["full_nan"] == 0  # a main contract's 10,000
        assert float(result["minutes_s"]) < 2.0 and float(result["days_s"]) < 2.0  # type: ignore[arg-type]
        assert result["last_price"] == result["pre_close"] == result["pre_settlement"]
        assert result["last_minute_close"] == result["last_price"]  # no trade yet: history's last close
        # The 10,000 bars TqSdk can ask for.
        assert len(klines(server.http_url, SYMBOL, 60, 10_000)) == 10_000
        before = klines(server.http_url, SYMBOL, 60, 500)
        history = server.data_dir / "history"
        deadline = time.monotonic() + 30
        while len(list(history.glob("*.csv"))) < 18 and time.monotonic() < deadline:
            time.sleep(0.2)  # the background build writes every contract's files
        assert len(list(history.glob("*.csv"))) == 18  # nine pinned contracts, two files each
        assert json.loads((history / "meta.json").read_text())["seed"] == 7
        header = (history / f"{SYMBOL}.60.csv").read_text().splitlines()[0]
        assert header == (
            f"datetime,datetime_nano,{SYMBOL}.open,{SYMBOL}.high,{SYMBOL}.low,{SYMBOL}.close,"
            f"{SYMBOL}.volume,{SYMBOL}.open_oi,{SYMBOL}.close_oi"
        )
        journal_bytes = sum(p.stat().st_size for p in (server.data_dir / "journal").rglob("*") if p.is_file())
        history_bytes = sum(p.stat().st_size for p in history.glob("*.csv"))
    finally:
        server.stop()
    # A restart loads the same bars (QAEX_SEED unset now: the stored seed is used).
    again = launch(tmp_path, data_dir=server.data_dir)
    try:
        wait_ready(again)
        after = klines(again.http_url, SYMBOL, 60, 500)
        historical = [bar for bar in before if bar["volume"]]
        assert [bar for bar in after if bar in historical][: len(historical) - 5] == historical[:-5]
        assert json.loads((history / "meta.json").read_text())["seed"] == 7
    finally:
        again.stop()
    assert journal_bytes < 100_000 < history_bytes  # the journal does not hold the history


def test_the_moving_average_example_trades(tmp_path: Path) -> None:
    server = launch(tmp_path, extra_env={"QAEX_MARKET_MAKER": "1", "QAEX_MARKET_MAKER_SYMBOLS": SYMBOL})
    try:
        wait_ready(server)
        user = open_user(server)
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLE),
                f"--diff={server.diff_url}",
                f"--user={user.user_id}",
                f"--password={user.password}",
                f"--symbol={SYMBOL}",
                "--seconds=15",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "200 bars" in done.stdout
        assert "POSITION 1" in done.stdout or "POSITION -1" in done.stdout, done.stdout + done.stderr[-2000:]
        trades = user.client.get("/api/account/trades")
        assert trades.status_code in (200, 404)
    finally:
        server.stop()


def import_history(server_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qaex", "import-history", *args],
        env=server_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_history_round_trip_and_refusals(tmp_path: Path) -> None:
    server = launch(tmp_path)
    try:
        wait_ready(server)
        served = klines(server.http_url, SYMBOL, 86400, 300)
        deadline = time.monotonic() + 30
        history = server.data_dir / "history"
        while not (history / f"{SYMBOL}.60.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # A running server holds the data directory: the command is refused, with the reason ...
        busy = import_history(server.env, str(history / f"{SYMBOL}.86400.csv"))
        assert busy.returncode == 1 and "another qaex server" in busy.stderr
        # ... and the admin route imports (already served: applies at the next start), all or nothing.
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        day_text = (history / f"{SYMBOL}.86400.csv").read_text()
        url = f"{server.http_url}/api/admin/history/import"
        good = {"name": "days.csv", "text": day_text}
        answer = httpx.post(url, json={"files": [good]}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "imported": [{"symbol": SYMBOL, "duration": 86400, "bars": 250}],
            "next_start": [SYMBOL],
        }
        unsorted_days = day_text.splitlines()
        unsorted_days[1], unsorted_days[2] = unsorted_days[2], unsorted_days[1]
        bad = {"name": "unsorted.csv", "text": "\n".join(unsorted_days)}
        refused = httpx.post(url, json={"files": [good, bad]}, headers=admin)
        assert refused.status_code == 400
        assert "unsorted.csv:3: column datetime_nano: rows not sorted" in refused.json()["error"]["message"]
        assert "nothing imported" in refused.json()["error"]["message"]
        assert (history / f"{SYMBOL}.86400.csv").read_text() == day_text
        assert httpx.post(url, json={"files": [good]}).status_code in (401, 403)
    finally:
        server.stop()
    minutes = history / f"{SYMBOL}.60.csv"
    days = history / f"{SYMBOL}.86400.csv"
    original = minutes.read_text()
    # Export with the history writer (the kept file), import: the same bars.
    exported = tmp_path / "rb-minutes.csv"
    exported.write_text(original)
    done = import_history(server.env, str(exported))
    assert done.returncode == 0, done.stderr
    assert f"imported {SYMBOL}: 10000 bars of 60 s" in done.stdout
    assert minutes.read_text() == original
    # Each kind of bad file is refused with file, line and column; nothing is half-imported.
    lines = original.splitlines()
    cells = lines[5].split(",")
    bad_high = [*lines[:5], ",".join([*cells[:3], str(float(cells[2]) - 50), *cells[4:]]), *lines[6:]]
    off_grid = [*lines[:5], ",".join([*cells[:5], str(float(cells[5]) + 0.5), *cells[6:]]), *lines[6:]]
    unsorted = [lines[0], lines[2], lines[1], *lines[3:]]
    unknown = [lines[0].replace(SYMBOL, "SHFE.xx2601"), *lines[1:]]
    good_days = tmp_path / "good-days.csv"
    good_days.write_text(days.read_text().replace("\n", "\n", 1))
    before_days = days.read_text()
    for name, content, message in (
        ("high.csv", bad_high, "high.csv:6: column SHFE.rb2601.high: high"),
        ("grid.csv", off_grid, "grid.csv:6: column SHFE.rb2601.close:"),
        ("sorted.csv", unsorted, "sorted.csv:3: column datetime_nano: rows not sorted"),
        ("unknown.csv", unknown, "unknown symbol SHFE.xx2601"),
    ):
        path = tmp_path / name
        path.write_text("\n".join(content) + "\n")
        refused = import_history(server.env, str(good_days), str(path))
        assert refused.returncode == 1, refused.stdout
        assert message in refused.stderr and "nothing imported" in refused.stderr, refused.stderr
        assert days.read_text() == before_days and minutes.read_text() == original
    # A restart serves the imported (here: identical) history.
    again = launch(tmp_path, data_dir=server.data_dir)
    try:
        wait_ready(again)
        assert [b for b in klines(again.http_url, SYMBOL, 86400, 300) if b["volume"]][:-1] == [
            b for b in served if b["volume"]
        ][:-1]
    finally:
        again.stop()
