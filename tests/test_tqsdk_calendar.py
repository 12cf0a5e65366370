"""TqSdk 3.10.4, unchanged, on a Saturday: server and client both run under libfaketime with the wall
clock at 12:00 China time on Saturday 5 December 2026, on the contracts a user gets (the product
listing, not the pinned test contracts).

* ``QAEX_MARKET_HOURS=always`` (the default): the contracts publish hours TqSdk reads as open, so
  TargetPosTask on the main contract of rb (from ``KQ.m@SHFE.rb``) reaches +2 and comes back to 0
  against the market maker.
* ``exchange``: an order is refused with the market-closed message, which TqSdk shows as an ERROR
  notify, and its order ends FINISHED with that message (not ALIVE for ever).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import faketime_env, launch, open_user, wait_ready
from test_tqsdk import DRIVER, parse

SATURDAY_NOON_CHINA = "2026-12-05 04:00:00"  # UTC
TIMEOUT = 120


def run_saturday(tmp_path: Path, mode: str) -> dict[str, Any]:
    clock = faketime_env(SATURDAY_NOON_CHINA)
    server = launch(
        tmp_path,
        extra_env={
            **clock,
            "QAEX_INSTRUMENTS": "",  # the product listing a user gets
            "QAEX_MARKET_HOURS": mode,
            "QAEX_MARKET_MAKER": "1",
            "QAEX_MARKET_MAKER_SYMBOLS": "",
            "QAEX_SEED": "1",
        },
    )
    try:
        wait_ready(server, timeout=60)
        user = open_user(server)
        command = [sys.executable, str(DRIVER), "saturday", f"--mode={mode}", f"--http={server.http_url}"]
        command += [f"--diff={server.diff_url}", f"--user-a={user.user_id}", f"--password-a={user.password}"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, env={**server.env, **clock}
        )
        return parse(done.stdout, done.stderr)
    finally:
        server.stop()


@pytest.mark.slow
def test_target_pos_task_trades_the_main_contract_on_a_saturday_in_always_mode(tmp_path: Path) -> None:
    result = run_saturday(tmp_path, "always")
    assert result["local_time"].startswith("2026-12-05T04:")  # the client's clock too
    assert result["main"].startswith("SHFE.rb27")  # a contract listed on that date
    assert result["quote"]["expired"] is False
    assert result["reached"] == 2 and result["back"] == 0


@pytest.mark.slow
def test_an_order_on_a_saturday_is_refused_as_market_closed_in_exchange_mode(tmp_path: Path) -> None:
    result = run_saturday(tmp_path, "exchange")
    errors = [note for note in result["notifies"] if note["level"] == "ERROR"]
    assert errors and errors[0]["code"] == 425, result["notifies"]
    assert result["main"] in errors[0]["content"] and "2026-12-07" in errors[0]["content"], errors
    order = result["order"]  # TqSdk's own order: finished, with the reason, never in the book
    assert order["status"] == "FINISHED" and order["exchange_order_id"] == "" and order["volume_left"] == 1
    assert order["last_msg"] == errors[0]["content"]
