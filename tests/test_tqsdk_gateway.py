"""The real TqSdk client through a DIFF gateway (``qaex gateway``) in front of a core with a broker
and a real nats-server: TqSdk's market data (``_md_url``: quotes, K-lines and ticks, a 200-bar
serial with history) and its two accounts' trading (``td_url``) both go through the gateway, none
to the core's DIFF server, and the market and trading checks of tests/test_tqsdk.py must hold
unchanged (they are imported and run here against this deployment).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import NatsServer, free_port, launch, open_user, wait_ready
from test_broker_gateway import start_gateway
from test_tqsdk import (
    BUILTIN,
    MAIN_TIMEOUT,
    QUIET_SPEC,
    Runs,
    driver_command,
    parse,
    test_a_market_order_trades_against_the_liquidity_simulator,
    test_a_resting_limit_order_is_alive_online_then_crossed_by_the_other_account,
    test_cancel_order_of_a_resting_order,
    test_closetoday_then_close_after_the_settlement_on_shfe,
    test_fak_fills_what_it_can_and_fok_fills_nothing,
    test_get_quote_has_live_prices_and_the_contract_fields,
    test_kline_and_tick_serials_have_data_and_update_when_trades_happen,
    test_req_transfer_deposits_into_the_account,
    test_target_pos_task_reaches_its_target,
    test_the_final_state_is_what_the_http_api_reports_now,
    test_tqsdk_accounts_and_positions_equal_what_the_http_api_reports,
)

pytest.importorskip("tqsdk")

__all__ = [  # collected here too, with this module's fixtures: the same checks through a gateway
    "test_a_market_order_trades_against_the_liquidity_simulator",
    "test_a_resting_limit_order_is_alive_online_then_crossed_by_the_other_account",
    "test_cancel_order_of_a_resting_order",
    "test_closetoday_then_close_after_the_settlement_on_shfe",
    "test_fak_fills_what_it_can_and_fok_fills_nothing",
    "test_get_quote_has_live_prices_and_the_contract_fields",
    "test_kline_and_tick_serials_have_data_and_update_when_trades_happen",
    "test_req_transfer_deposits_into_the_account",
    "test_target_pos_task_reaches_its_target",
    "test_the_final_state_is_what_the_http_api_reports_now",
    "test_tqsdk_accounts_and_positions_equal_what_the_http_api_reports",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    workdir = tmp_path_factory.mktemp("qaex-tqsdk-gateway")
    broker = NatsServer(free_port(), workdir)
    broker.start()
    server = launch(
        workdir,
        extra_env={
            "QAEX_MARKET_MAKER": "1",
            "QAEX_SEED": "1",
            "QAEX_MARKET_MAKER_SYMBOLS": ",".join(BUILTIN),
            "QAEX_BROKER": broker.url,
            "QAEX_EXCHANGE_ID": "tq",
        },
    )
    gateway = None
    try:
        wait_ready(server)
        gateway = start_gateway(workdir, server, broker)
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        created = httpx.post(f"{server.http_url}/api/admin/instruments", json=QUIET_SPEC, headers=admin)
        assert created.status_code == 200, created.text
        a, b = open_user(server, prefix="tqa"), open_user(server, prefix="tqb")
        command = [
            *driver_command("main", server, a, b),
            f"--td={gateway.diff_url}",
            f"--md={gateway.diff_url}",
            f"--long-bars={LONG_BARS}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=MAIN_TIMEOUT)
        yield Runs(server, a, b, parse(done.stdout, done.stderr), None, a)  # type: ignore[arg-type]
    except BaseException:
        print(f"\n--- qaex core log ---\n{server.log()[-20000:]}", file=sys.stderr)
        if gateway is not None:
            print(f"\n--- gateway log ---\n{gateway.log()[-20000:]}", file=sys.stderr)
        raise
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()
        broker.stop()


LONG_BARS = 200


def test_a_200_bar_kline_serial_through_the_gateway_is_the_cores(main: dict[str, Any]) -> None:
    long = main["long_serial"]
    assert long["rows"] == LONG_BARS
    assert long["ids"] == list(range(long["ids"][0], long["ids"][0] + LONG_BARS))  # no hole
    # every closed bar as the core's HTTP API serves it (one may have left its window meanwhile)
    assert long["matched"] >= long["closed"] - 1, long


@pytest.fixture(scope="module")
def main(runs: Runs) -> dict[str, Any]:
    return runs.main


@pytest.fixture(scope="module")
def trading(main: dict[str, Any]) -> dict[str, Any]:
    steps: dict[str, Any] = main["trading"]
    return steps
