"""Frames sent behind a slow request (a login's password check) are answered after it, in order.

The DIFF server answers a slow request beside the connection's reader, which goes on reading; the
frames that arrive meanwhile must still be taken in order: an insert_order sent in the same write as
the req_login before it is an order of the logged-in user, not a refusal for "not logged in".
"""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import open_websocket_url

from qaex.api.diff_server import DIFF_PATH, DiffServer
from qaex.core.engine import Engine
from qaex.core.patch import merge_patch
from qaex.exchange.exchange import Exchange

PASSWORD = "pipelined-pw-123"


async def test_an_order_sent_right_behind_the_login_is_taken_after_it(nursery: trio.Nursery) -> None:
    exchange = Exchange(Engine())
    await nursery.start(exchange.run)
    await exchange.open_account("piper", PASSWORD, 1e9)
    listening = await nursery.start(DiffServer(exchange).serve, "127.0.0.1", 0)
    order = {
        "aid": "insert_order", "user_id": "piper", "order_id": "p1", "exchange_id": "SHFE",
        "instrument_id": "cu2601", "direction": "BUY", "offset": "OPEN", "volume": 1,
        "price_type": "LIMIT", "limit_price": 80_000.0,
    }  # fmt: skip
    messages = [
        {"aid": "req_login", "bid": "qaex", "user_name": "piper", "password": PASSWORD},
        order,
        {"aid": "peek_message"},
    ]
    tree: dict[str, Any] = {}
    async with open_websocket_url(f"ws://127.0.0.1:{listening.port}{DIFF_PATH}") as ws:
        for message in messages:  # back to back: the server reads them while the password is checked
            await ws.send_message(json.dumps(message))
        with trio.fail_after(20):
            while not tree.get("trade", {}).get("piper", {}).get("orders", {}).get("p1", {}).get("status"):
                frame = json.loads(await ws.get_message())
                if frame["aid"] == "rtn_data":
                    for patch in frame["data"]:
                        merge_patch(tree, patch)
                    await ws.send_message('{"aid":"peek_message"}')
    notifies = tree.get("notify", {}).values()
    assert not [n for n in notifies if n.get("level") == "ERROR"], notifies
    placed = tree["trade"]["piper"]["orders"]["p1"]
    assert placed["status"] == "ALIVE" and placed["exchange_order_id"]
