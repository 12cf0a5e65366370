"""The real TqSdk client (``TqApi``, 3.10.4) trades against a real qaex server, unchanged.

One server per module (liquidity simulator on, seeded) and two driver runs of tests/tqsdk_driver.py
in subprocesses (TqApi runs its own asyncio loop): ``main`` does every market-data and trading
scenario with one TqApi holding two accounts; ``bad_login`` runs meanwhile, because TqApi only gives
up on a refused login after its fixed 60 s wait. No network but 127.0.0.1 (the driver refuses any
other connection). Skipped when tqsdk is not installed (``pip install -e .[interop]``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server, User, launch, open_user, wait_ready

from qaex.core.instruments import InstrumentRegistry

DRIVER = Path(__file__).with_name("tqsdk_driver.py")
QUIET = "SHFE.zn2601"
BUILTIN = list(InstrumentRegistry())
"""A contract the test creates after the start, so the liquidity simulator leaves it alone."""
QUIET_SPEC: dict[str, Any] = {
    "exchange_id": "SHFE",
    "instrument_id": "zn2601",
    "product_id": "zn",
    "instrument_name": "沪锌2601",
    "price_tick": 5,
    "volume_multiple": 5,
    "margin_ratio_long": 0.1,
    "margin_ratio_short": 0.1,
    "open_commission_rate": 0.0001,
    "close_commission_rate": 0.0001,
    "close_today_commission_rate": 0.0002,
    "pre_settlement": 22000,
    # Real SHFE hours: under QAEX_MARKET_HOURS=always (the default) the server publishes hours TqSdk
    # reads as open at every minute, so TargetPosTask trades whatever the wall clock says.
    "trading_time": {
        "day": [["09:00:00", "10:15:00"], ["10:30:00", "11:30:00"], ["13:30:00", "15:00:00"]],
        "night": [["21:00:00", "25:00:00"]],
    },
}
MAIN_TIMEOUT = 90
BAD_LOGIN_TIMEOUT = 100


@dataclass
class Runs:
    server: Server
    a: User
    b: User
    main: dict[str, Any]
    bad_login: subprocess.Popen[str]
    bad_login_user: User


def driver_command(
    scenario: str, server: Server, a: User, b: User | None = None, password: str = ""
) -> list[str]:
    command = [
        sys.executable,
        str(DRIVER),
        scenario,
        f"--http={server.http_url}",
        f"--diff={server.diff_url}",
    ]
    command += [
        f"--admin={server.admin_token}",
        f"--user-a={a.user_id}",
        f"--password-a={password or a.password}",
    ]
    if b is not None:
        command += [f"--user-b={b.user_id}", f"--password-b={b.password}", f"--quiet={QUIET}"]
    return command


def parse(stdout: str, stderr: str = "") -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (
        f"driver printed no result\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    assert "failed" not in result, f"{result['failed']}\n{result.get('traceback', '')}"
    assert result["refused_connections"] == []  # TqSdk tried to reach no host but 127.0.0.1
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    server = launch(
        tmp_path_factory.mktemp("qaex-tqsdk"),
        # The built-in contracts get the market maker; QUIET, listed below, is left to the two accounts.
        extra_env={
            "QAEX_MARKET_MAKER": "1",
            "QAEX_SEED": "1",
            "QAEX_MARKET_MAKER_SYMBOLS": ",".join(BUILTIN),
        },
    )
    bad_login: subprocess.Popen[str] | None = None
    try:
        wait_ready(server)
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        created = httpx.post(f"{server.http_url}/api/admin/instruments", json=QUIET_SPEC, headers=admin)
        assert created.status_code == 200, created.text
        a, b, stranger = open_user(server, prefix="tqa"), open_user(server, prefix="tqb"), open_user(server)
        bad_login = subprocess.Popen(
            driver_command("bad_login", server, stranger, password="not-" + stranger.password),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        done = subprocess.run(
            driver_command("main", server, a, b), capture_output=True, text=True, timeout=MAIN_TIMEOUT
        )
        yield Runs(server, a, b, parse(done.stdout, done.stderr), bad_login, stranger)
    except BaseException:
        print(f"\n--- qaex server log ---\n{server.log()[-20000:]}", file=sys.stderr)
        raise
    finally:
        if bad_login is not None and bad_login.poll() is None:
            bad_login.kill()
            bad_login.communicate()
        server.stop()


@pytest.fixture(scope="module")
def main(runs: Runs) -> dict[str, Any]:
    return runs.main


@pytest.fixture(scope="module")
def trading(main: dict[str, Any]) -> dict[str, Any]:
    steps: dict[str, Any] = main["trading"]
    return steps


# -- market data ----------------------------------------------------------------------------------
def test_query_quotes_lists_the_exchanges_contracts(main: dict[str, Any]) -> None:
    found = main["query_quotes"]
    assert found["shfe_futures"] == [s for s in BUILTIN if s.startswith("SHFE.")] + [QUIET]
    # "au 品种的全部未下市合约、指数、主连" (TqSdk's docstring): the main-contract series too
    assert found["cu_not_expired"] == ["SHFE.cu2601", "KQ.m@SHFE.cu"]
    assert found["options"] == []  # answered (empty), not timed out
    # One main contract per product: the built-in contracts are one per product, and QUIET is zn's.
    assert sorted(found["continuous"]) == sorted([*BUILTIN, QUIET])
    assert found["rb_main"] == ["SHFE.rb2601"]


def test_a_main_contract_series_names_its_main(main: dict[str, Any]) -> None:
    cont = main["cont"]
    assert cont["underlying_symbol"] == "SHFE.rb2601" and cont["ins_class"] == "CONT"
    assert cont["price_tick"] == 1.0
    assert (cont["info_ins_class"], cont["info_underlying_symbol"]) == ("CONT", "SHFE.rb2601")


def test_query_symbol_info_has_the_contract_fields(main: dict[str, Any]) -> None:
    registry = InstrumentRegistry()
    assert len(main["symbol_info"]) == 2
    for row in main["symbol_info"]:
        spec = registry[row["instrument_id"]]
        assert row["ins_class"] == "FUTURE" and row["instrument_name"] == spec.instrument_name
        assert row["exchange_id"] == spec.exchange_id and row["product_id"] == spec.product_id
        assert row["price_tick"] == spec.price_tick and row["volume_multiple"] == spec.volume_multiple
        assert row["max_limit_order_volume"] == spec.max_limit_order_volume and row["expired"] is False
        assert row["upper_limit"] > row["pre_settlement"] > row["lower_limit"] > 0
        assert row["trading_time_day"]


def test_get_quote_has_live_prices_and_the_contract_fields(main: dict[str, Any]) -> None:
    quote = main["quote"]
    assert quote["instrument_id"] == "SHFE.cu2601" and quote["exchange_id"] == "SHFE"
    assert quote["price_tick"] == 10.0 and quote["volume_multiple"] == 5 and quote["price_decs"] == 0
    assert quote["datetime"] and quote["instrument_name"] and quote["product_id"] == "cu"
    lower, upper = quote["lower_limit"], quote["upper_limit"]
    assert lower < quote["bid_price1"] < quote["ask_price1"] < upper
    assert lower <= quote["last_price"] <= upper
    assert quote["ask_volume1"] > 0 and quote["bid_volume1"] > 0
    assert quote["trading_time"]["day"] and quote["expired"] is False
    spec = main["http_quote"]  # fetched by the driver right after get_quote (a later settlement moves limits)
    for key in (
        "price_tick",
        "volume_multiple",
        "upper_limit",
        "lower_limit",
        "pre_settlement",
        "instrument_name",
    ):
        assert quote[key] == spec[key], key


def test_kline_and_tick_serials_have_data_and_update_when_trades_happen(main: dict[str, Any]) -> None:
    series = main["series"]
    before, after = series["before"], series["after"]
    assert (series["minute_rows"], series["day_rows"], series["tick_rows"]) == (30, 5, 30)
    for kind in ("minute", "day", "tick"):
        assert before[kind]["datetime"] > 0 and not math.isnan(before[kind]["id"]), kind
    assert after["tick"]["id"] >= before["tick"]["id"] + 2  # at least our two market orders
    assert after["tick"]["volume"] > before["tick"]["volume"]
    assert after["day"]["volume"] >= before["day"]["volume"] + 2
    assert (
        after["minute"]["id"] > before["minute"]["id"]
        or after["minute"]["volume"] >= before["minute"]["volume"] + 2
    )
    assert after["quote_volume"] >= before["quote_volume"] + 2
    assert after["minute"]["datetime"] % 60_000_000_000 == 0
    assert after["day"]["low"] <= after["tick"]["last_price"] <= after["day"]["high"]
    assert (
        after["tick"]["last_price"] in series["traded_prices"]
        or after["tick"]["id"] > before["tick"]["id"] + 2
    )


def test_a_market_order_trades_against_the_liquidity_simulator(main: dict[str, Any]) -> None:
    for order in main["market_orders"].values():
        assert (
            order["price_type"] == "ANY" and order["time_condition"] == "IOC" and order["limit_price"] is None
        )
        assert order["status"] == "FINISHED" and order["volume_left"] == 0 and order["last_msg"] == "全部成交"
        (trade,) = order["trade_records"].values()
        assert trade["volume"] == 1 and trade["commission"] == pytest.approx(1.5)  # m2601: 1.5 per lot
    assert main["m_position"] == {
        "pos_long_today": 0,
        "pos_long_his": 0,
        "pos_short_today": 0,
        "pos_short_his": 0,
    }


# -- trading between two TqSdk accounts -----------------------------------------------------------
def test_a_resting_limit_order_is_alive_online_then_crossed_by_the_other_account(
    trading: dict[str, Any],
) -> None:
    resting = trading["resting"]
    assert resting["status"] == "ALIVE" and resting["is_online"] and resting["exchange_order_id"]
    assert (
        resting["price_type"] == "LIMIT"
        and resting["time_condition"] == "GFD"
        and resting["volume_left"] == 2
    )
    for order in trading["crossed"].values():
        assert order["status"] == "FINISHED" and order["volume_left"] == 0 and order["is_dead"]
        (trade,) = order["trade_records"].values()
        assert trade["volume"] == 2 and trade["price"] == 22000.0
        assert trade["commission"] == pytest.approx(22000 * 5 * 0.0001 * 2)


@pytest.mark.parametrize("when", ["snapshot_1", "snapshot_2"])
def test_tqsdk_accounts_and_positions_equal_what_the_http_api_reports(
    trading: dict[str, Any], when: str
) -> None:
    snapshot = trading[when]
    for who in ("a", "b"):
        tq, http = snapshot["tq"][who], snapshot["http"][who]
        for part in ("account", "position"):
            for key, value in tq[part].items():
                expected = http[part][key]
                if value is None or expected is None:
                    assert value is expected is None, (who, part, key, value, expected)
                else:
                    assert value == pytest.approx(expected, abs=1e-6), (who, part, key, value, expected)
    a = snapshot["tq"]["a"]
    if when == "snapshot_1":
        assert (
            a["position"]["pos_long_today"] == 2 and snapshot["tq"]["b"]["position"]["pos_short_today"] == 2
        )
        assert a["account"]["margin"] == pytest.approx(22000 * 5 * 0.1 * 2)
        assert a["account"]["available"] == pytest.approx(a["account"]["balance"] - a["account"]["margin"])


def test_the_final_state_is_what_the_http_api_reports_now(runs: Runs, trading: dict[str, Any]) -> None:
    for who, user in (("a", runs.a), ("b", runs.b)):
        account = user.get("/api/account").json()
        tq = trading["snapshot_2"]["tq"][who]
        for key in ("balance", "available", "margin", "commission", "deposit", "close_profit"):
            assert tq["account"][key] == pytest.approx(account[key], abs=1e-6), (who, key)
        position = user.get("/api/positions").json()["positions"][QUIET]
        for key in ("pos_long_today", "pos_long_his", "pos_short_today", "pos_short_his"):
            assert tq["position"][key] == position[key], (who, key)


def test_fak_fills_what_it_can_and_fok_fills_nothing(trading: dict[str, Any]) -> None:
    fak, fok = trading["fak"], trading["fok"]
    assert fak["time_condition"] == "IOC" and fak["volume_condition"] == "ANY"
    assert fak["status"] == "FINISHED" and fak["volume_orign"] == 3 and fak["volume_left"] == 2
    assert sum(t["volume"] for t in fak["trade_records"].values()) == 1
    assert fok["time_condition"] == "IOC" and fok["volume_condition"] == "ALL"
    assert fok["status"] == "FINISHED" and fok["volume_left"] == fok["volume_orign"] == 5
    assert fok["trade_records"] == {}


def test_cancel_order_of_a_resting_order(trading: dict[str, Any]) -> None:
    cancelled = trading["cancelled"]
    assert (
        cancelled["status"] == "FINISHED"
        and cancelled["volume_left"] == 1
        and cancelled["last_msg"] == "已撤单"
    )
    assert cancelled["exchange_order_id"] and not cancelled["is_error"]


def test_closetoday_then_close_after_the_settlement_on_shfe(trading: dict[str, Any]) -> None:
    for order in trading["closetoday"].values():
        assert order["offset"] == "CLOSETODAY" and order["status"] == "FINISHED" and order["volume_left"] == 0
        (trade,) = order["trade_records"].values()
        assert trade["commission"] == pytest.approx(22000 * 5 * 0.0002)  # the close-today rate
    refused = trading["close_refused"]  # CLOSE takes yesterday's lots only on SHFE
    assert (
        refused["is_error"] and refused["last_msg"] == "平昨仓手数不足" and refused["exchange_order_id"] == ""
    )
    assert trading["before_settle"]["a"] == {
        "pos_long_today": 2,
        "pos_long_his": 0,
        "pos_short_today": 0,
        "pos_short_his": 0,
    }
    assert trading["before_settle"]["b"]["pos_short_today"] == 2
    after = trading["after_settle"]
    assert (after["pos_long_today"], after["pos_long_his"], after["volume_long_his"]) == (0, 2, 2)
    assert after["position_price_long"] == 22015.0
    assert trading["trading_day"] == trading["settle"]["trading_day"]
    close = trading["close"]
    assert close["offset"] == "CLOSE" and close["status"] == "FINISHED" and close["volume_left"] == 0
    (trade,) = close["trade_records"].values()
    assert trade["commission"] == pytest.approx(22015 * 5 * 0.0001 * 2)  # the close rate
    assert trading["after_close"] == {
        "pos_long_today": 0,
        "pos_long_his": 0,
        "pos_short_today": 0,
        "pos_short_his": 0,
    }


def test_target_pos_task_reaches_its_target(trading: dict[str, Any]) -> None:
    assert trading["target_pos"] == {"pos_long": 2, "offer_left": 1}
    assert trading["snapshot_2"]["tq"]["a"]["position"]["pos_long_today"] == 2


def test_req_transfer_deposits_into_the_account(trading: dict[str, Any]) -> None:
    transfer = trading["transfer"]
    assert transfer["deposit"] == 1000.0
    assert any(t["amount"] == 1000.0 and t["error_id"] == 0 for t in transfer["transfers"])


# -- login failure --------------------------------------------------------------------------------
@pytest.mark.slow  # ~56 s: TqApi() only gives up after its own fixed 60 s wait for the trade snapshot
def test_a_wrong_password_is_reported_by_tqapi(runs: Runs) -> None:
    stdout, stderr = runs.bad_login.communicate(timeout=BAD_LOGIN_TIMEOUT)
    result = parse(stdout, stderr)
    # TqSdk has no login-failure path: it prints the server's ERROR notify, then TqApi() gives up
    # waiting for the trade snapshot and raises TqTimeoutError (after its fixed 60 s).
    assert any("登录失败" in line and "ERROR" in line for line in result["notices"]), result["notices"]
    assert result["error"]["type"] == "TqTimeoutError", result["error"]
