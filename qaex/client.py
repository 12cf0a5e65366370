"""A minimal DIFF client on trio-websocket: what a DIFF client must do, in one small class.

It keeps a peek outstanding (sends ``peek_message`` after every ``rtn_data``, as TqSdk does), applies
each rtn_data's patches to its own copy of the data tree (RFC 7386), and records notifies in order.
Used by the tests, the benchmarks and the client guide (docs/clients/python.md)::

    async with DiffClient.connect("ws://127.0.0.1:8001/ws/diff") as client:
        assert await client.login("alice", "secret")
        await client.insert_order("o1", "SHFE.cu2601", "BUY", "OPEN", 1, 86000.0)
        order = await client.wait_for(lambda c: c.order("o1").get("status") == "FINISHED")
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, open_websocket_url

from qaex.core.patch import merge_patch

T = TypeVar("T")


class DiffClient:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.tree: dict[str, Any] = {}
        self.notifies: list[dict[str, Any]] = []
        self.brokers: list[str] = []
        self.user_id: str | None = None
        self.rtn_data_count = 0
        self.closed: CloseReason | None = None  # set when the server closed the connection
        self._changed = trio.Event()

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, *, max_message_size: int = 1 << 24) -> AsyncIterator[DiffClient]:
        async with open_websocket_url(url, max_message_size=max_message_size) as ws:
            client = cls(ws)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read)
                await client.send({"aid": "peek_message"})
                yield client
                nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        try:
            await self._read_messages()
        except ConnectionClosed as exc:
            self.closed = exc.reason
            self._changed.set()

    async def _read_messages(self) -> None:
        while True:
            message = json.loads(await self.ws.get_message())
            aid = message.get("aid")
            if aid == "rtn_data":
                for patch in message["data"]:
                    notify = patch.get("notify")
                    if isinstance(notify, dict):
                        self.notifies.extend(notify.values())
                    merge_patch(self.tree, patch)
                self.rtn_data_count += 1
                if self.ws.closed is None:
                    await self.send({"aid": "peek_message"})
            elif aid == "rtn_brokers":
                self.brokers = list(message.get("brokers", []))
            self._changed.set()
            self._changed = trio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def wait_for(self, predicate: Callable[[DiffClient], T], within: float = 10.0) -> T:
        """Wait until `predicate(self)` is truthy (checked after each message) and return its value."""
        with trio.fail_after(within):
            while True:
                value = predicate(self)
                if value:
                    return value
                if self.closed is not None:
                    raise ConnectionClosed(self.closed)
                await self._changed.wait()

    # -- trade helpers ----------------------------------------------------------------------------
    async def login(self, user_id: str, password: str, within: float = 10.0) -> bool:
        """req_login; True on notify 401, False on a login error notify."""
        seen = len(self.notifies)
        await self.send({"aid": "req_login", "bid": "qaex", "user_name": user_id, "password": password})

        def result(client: DiffClient) -> str | None:
            for note in client.notifies[seen:]:
                if note.get("code") == 401:
                    return "ok"
                if note.get("level") == "ERROR":
                    return "failed"
            return None

        ok = await self.wait_for(result, within) == "ok"
        if ok:
            self.user_id = user_id
            await self.wait_for(lambda c: "accounts" in c.trade() and "CNY" in c.trade()["accounts"], within)
        return ok

    def trade(self) -> dict[str, Any]:
        if self.user_id is None:
            return {}
        tree: dict[str, Any] = self.tree.get("trade", {}).get(self.user_id, {})
        return tree

    def order(self, order_id: str) -> dict[str, Any]:
        order: dict[str, Any] = self.trade().get("orders", {}).get(order_id, {})
        return order

    def account(self) -> dict[str, Any]:
        account: dict[str, Any] = self.trade().get("accounts", {}).get("CNY", {})
        return account

    def position(self, symbol: str) -> dict[str, Any]:
        position: dict[str, Any] = self.trade().get("positions", {}).get(symbol, {})
        return position

    async def insert_order(
        self,
        order_id: str,
        symbol: str,
        direction: str,
        offset: str,
        volume: int,
        limit_price: float | None = None,
        *,
        time_condition: str = "GFD",
        volume_condition: str = "ANY",
    ) -> None:
        exchange_id, instrument_id = symbol.split(".", 1)
        message: dict[str, Any] = {
            "aid": "insert_order",
            "user_id": self.user_id,
            "order_id": order_id,
            "exchange_id": exchange_id,
            "instrument_id": instrument_id,
            "direction": direction,
            "offset": offset,
            "volume": volume,
            "volume_condition": volume_condition,
        }
        if limit_price is None or math.isnan(limit_price):
            message.update(price_type="ANY", time_condition="IOC")
        else:
            message.update(price_type="LIMIT", limit_price=limit_price, time_condition=time_condition)
        await self.send(message)

    async def cancel_order(self, order_id: str) -> None:
        await self.send({"aid": "cancel_order", "user_id": self.user_id, "order_id": order_id})
