"""The original design's DIFF integration example, against a running qaex server.

Two users trade with each other: bob's limit order rests, alice's order crosses it, and both watch
their own trade tree (order, trade, position, account) arrive over DIFF.

    pip install -e . && hypercorn qaex.app:app --worker-class trio     # in one terminal
    python examples/diff_integration_example.py                          # in another

Options: --http http://127.0.0.1:8000 --diff ws://127.0.0.1:8001/ws/diff --symbol SHFE.rb2705 (any
contract GET /api/market/instruments lists; they trade at its previous settlement price)
"""

from __future__ import annotations

import argparse
import json
import secrets
import urllib.request
from typing import Any

import trio

from qaex.client import DiffClient

SYMBOL = "SHFE.rb2705"  # trades until 2027-05-17


def http_post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def pre_settlement(base: str, symbol: str) -> float:
    with urllib.request.urlopen(base + "/api/market/instruments", timeout=10) as response:
        price: float = json.loads(response.read())["instruments"][symbol]["pre_settlement"]
        return price


def open_account(base: str, name: str) -> tuple[str, str]:
    user_id, password = f"{name}-{secrets.token_hex(3)}", secrets.token_hex(8)
    http_post(base, "/api/account/open", {"user_id": user_id, "password": password, "init_cash": 1_000_000})
    return user_id, password


async def main(http: str, diff: str, symbol: str) -> None:
    price = pre_settlement(http, symbol)
    alice, bob = open_account(http, "alice"), open_account(http, "bob")
    async with DiffClient.connect(diff) as a, DiffClient.connect(diff) as b:
        assert await a.login(*alice), "alice could not log in"
        assert await b.login(*bob), "bob could not log in"
        print("logged in:", alice[0], bob[0])

        await b.insert_order("sell-1", symbol, "SELL", "OPEN", 2, price)
        await b.wait_for(lambda c: c.order("sell-1").get("status") == "ALIVE")
        print("bob's order rests:", b.order("sell-1")["exchange_order_id"])

        await a.insert_order("buy-1", symbol, "BUY", "OPEN", 2, price)
        await a.wait_for(lambda c: c.order("buy-1").get("status") == "FINISHED" and c.trade().get("trades"))
        await b.wait_for(lambda c: c.order("sell-1").get("status") == "FINISHED")
        for name, client in (("alice", a), ("bob", b)):
            (trade,) = client.trade()["trades"].values()
            position = client.position(symbol)
            account = client.account()
            print(
                f"{name}: traded {trade['direction']} {trade['volume']} @ {trade['price']} "
                f"(commission {trade['commission']:.2f}); long {position['volume_long']} short "
                f"{position['volume_short']}; balance {account['balance']:.2f}, "
                f"margin {account['margin']:.2f}, available {account['available']:.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http", default="http://127.0.0.1:8000")
    parser.add_argument("--diff", default="ws://127.0.0.1:8001/ws/diff")
    parser.add_argument("--symbol", default=SYMBOL)
    args = parser.parse_args()
    trio.run(main, args.http, args.diff, args.symbol)
