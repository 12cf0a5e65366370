"""The original design's notification stream, sans-IO: per-user patches in, plain events out.

The original design (ORIGINAL-DESIGN.zh.md §2.2-§2.4) has the TradeGateway send three notifications
beside its DIFF patches: ``Trade`` on every fill, ``OrderStatus`` (FILLED, PARTIAL_FILLED) and
``AccountUpdate`` on every account change. qaex derives them from the very patches the
SnapshotManager fans out to DIFF sessions, so there is no second path through the engine:

* :class:`UserEvents` keeps the few fields of a user's orders and account a patch does not repeat
  (a patch carries only what changed) and turns each patch into events, in the order the exchange
  produced them: for each order, its ``accepted`` status, then its trades, then its new status; then
  one ``account_update``. Account changes that only a mark-to-market made are *coalesced*: the
  caller emits at most one per interval (:meth:`UserFeed.due_mark`).
* :class:`EventLog` holds a user's last events with consecutive ids, for SSE's ``Last-Event-ID``
  resume and as the queue every connection of the user reads with its own cursor.
* :class:`UserFeed` is both, for one user.

Event ids are ``<epoch>-<seq>``: the epoch is new for every feed (a restart, or a feed dropped after
its users left), so an id from an older feed is recognised as such and answered with a gap event,
never silently with someone else's numbering. Timestamps are nanoseconds since the epoch, as in the
original design. Nothing here does IO or knows trio (tests/test_structure.py).
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Any, Literal

import msgspec

Patch = dict[str, Any]
Event = dict[str, Any]

ORDER_FIELDS = ("instrument_id", "exchange_id", "volume_orign", "volume_left", "status", "exchange_order_id")
ACCOUNT_FIELDS = ("balance", "available", "margin", "position_profit", "risk_ratio")

OrderStatus = Literal["ACCEPTED", "PARTIAL_FILLED", "FILLED", "CANCELLED", "REJECTED"]
Cause = Literal["trade", "order", "transfer", "settlement", "mark", "login"]

_encode = msgspec.json.Encoder().encode


def order_status(order: dict[str, Any]) -> OrderStatus:
    """The original design's status of a DIFF order (ALIVE/FINISHED with volumes)."""
    left, total = order.get("volume_left", 0), order.get("volume_orign", 0)
    if order.get("status") == "ALIVE":
        return "PARTIAL_FILLED" if left < total else "ACCEPTED"
    if left == 0:
        return "FILLED"
    # qaex's refusals finish an order the exchange never numbered (as the HTTP API's 422 does).
    return "CANCELLED" if order.get("exchange_order_id") else "REJECTED"


def _finite(value: Any) -> Any:
    """A number, or None for DIFF's "-" (no such price): the events are plain JSON, like the HTTP API."""
    return value if isinstance(value, int | float) and value == value else None


class UserEvents:
    """What one user's patches mean as events: the user's orders and account as last seen."""

    __slots__ = ("account", "orders", "trades", "user_id")

    def __init__(self, user_id: str, tree: Patch | None = None) -> None:
        """`tree`: the user's trade tree (``trade/{user_id}``) as it stands before the next patch."""
        self.user_id = user_id
        self.orders: dict[str, dict[str, Any]] = {}
        self.account: dict[str, Any] = {}
        # Trade ids seen: a trade is an event once, even if a patch the tree already held comes again.
        self.trades: set[str] = set()
        if tree:
            self.trades.update(tree.get("trades") or ())
            for order_id, order in (tree.get("orders") or {}).items():
                if type(order) is dict:
                    self.orders[order_id] = {name: order.get(name) for name in ORDER_FIELDS}
            account = (tree.get("accounts") or {}).get("CNY")
            if type(account) is dict:
                self.account = {name: account.get(name) for name in ACCOUNT_FIELDS}

    def events(self, patch: Patch, now_ns: int) -> tuple[list[Event], Cause | None]:
        """The events of one patch (a DIFF merge patch rooted at ``trade/{user_id}``), and what
        changed the account, if anything did: the caller emits :meth:`account_update` at once for a
        cause other than ``"mark"``, and coalesces marks."""
        user = patch.get("trade", {}).get(self.user_id)
        if type(user) is not dict:
            return [], None
        events: list[Event] = []
        new_trades: dict[str, list[dict[str, Any]]] = {}
        trades = user.get("trades")
        if type(trades) is dict:
            for trade_id, trade in trades.items():
                if trade is None:  # removed at settlement
                    self.trades.discard(trade_id)
                elif type(trade) is dict and "order_id" in trade and trade_id not in self.trades:
                    self.trades.add(trade_id)  # a trade is sent once, whole
                    new_trades.setdefault(trade["order_id"], []).append(trade)
        traded = bool(new_trades)
        orders = user.get("orders")
        if type(orders) is dict:
            for order_id, change in orders.items():
                self._order(order_id, change, new_trades.pop(order_id, ()), now_ns, events)
        for rest in new_trades.values():  # the order is not in the patch (never happens today)
            events.extend(self._trade(trade) for trade in rest)
        account = user.get("accounts", {}).get("CNY") if type(user.get("accounts")) is dict else None
        cause: Cause | None = None
        if "trading_day" in user:
            cause = "settlement"
        elif traded:
            cause = "trade"
        elif user.get("transfers"):
            cause = "transfer"
        if type(account) is dict:
            changed = False
            for name in ACCOUNT_FIELDS:
                if name in account and self.account.get(name) != account[name]:
                    self.account[name] = account[name]
                    changed = True
            if changed and cause is None:
                cause = "order" if orders else "mark"
        return events, cause

    def _order(self, order_id: str, change: Any, trades: Any, now_ns: int, events: list[Event]) -> None:
        if change is None:  # removed at settlement: nothing happened to it
            self.orders.pop(order_id, None)
            return
        if type(change) is not dict:
            return
        known = self.orders.get(order_id)
        if known is None:
            known = self.orders[order_id] = {name: change.get(name) for name in ORDER_FIELDS}
            if known["exchange_order_id"]:  # accepted, maybe filled in the same batch
                accepted = dict(known, status="ALIVE", volume_left=known["volume_orign"])
                events.append(self._status(order_id, accepted, change.get("insert_date_time") or now_ns))
            before: OrderStatus | None = None
        else:
            before = order_status(known)
            for name in ORDER_FIELDS:
                if name in change:
                    known[name] = change[name]
        timestamp = now_ns
        for trade in trades:
            events.append(self._trade(trade))
            timestamp = trade.get("trade_date_time") or timestamp
        status = order_status(known)
        if (status != before and not (status == "ACCEPTED" and before is None)) or trades:
            event = self._status(order_id, known, timestamp)
            if status in ("REJECTED", "CANCELLED") and change.get("last_msg"):
                event["reason"] = change["last_msg"]
            events.append(event)

    def _status(self, order_id: str, order: dict[str, Any], timestamp: int) -> Event:
        total, left = order.get("volume_orign") or 0, order.get("volume_left") or 0
        status = order_status(order)
        return {
            "type": "order_status",
            "order_id": order_id,
            "user_id": self.user_id,
            "instrument_id": f"{order['exchange_id']}.{order['instrument_id']}",
            "status": status,
            "filled_volume": total - left if status != "REJECTED" else 0,
            "remaining_volume": left if status in ("ACCEPTED", "PARTIAL_FILLED") else 0,
            "timestamp": timestamp,
        }

    def _trade(self, trade: dict[str, Any]) -> Event:
        return {
            "type": "trade",
            "trade_id": trade.get("trade_id"),
            "user_id": self.user_id,
            "order_id": trade.get("order_id"),
            "instrument_id": f"{trade.get('exchange_id')}.{trade.get('instrument_id')}",
            "direction": trade.get("direction"),
            "offset": trade.get("offset"),
            "price": _finite(trade.get("price")),
            "volume": trade.get("volume"),
            "commission": _finite(trade.get("commission")),
            "timestamp": trade.get("trade_date_time"),
        }

    def account_update(self, now_ns: int, cause: Cause) -> Event:
        event: Event = {"type": "account_update", "user_id": self.user_id}
        for name in ACCOUNT_FIELDS:
            event[name] = _finite(self.account.get(name))
        event["timestamp"] = now_ns
        event["cause"] = cause
        return event


class Gap(msgspec.Struct, frozen=True):
    """A resume point the log no longer holds (or never held): the client must reload its state."""

    oldest: str  # the id of the oldest event still held ("" when there is none)


class EventLog:
    """The last `capacity` events of one user, encoded, with consecutive sequence numbers from 1."""

    __slots__ = ("_events", "epoch", "first_seq", "last_seq")

    def __init__(self, capacity: int, epoch: str | None = None) -> None:
        self.epoch = epoch or secrets.token_hex(4)
        self._events: deque[bytes] = deque(maxlen=max(1, capacity))
        self.first_seq = 1  # the seq of _events[0]
        self.last_seq = 0  # 0: nothing yet

    def append(self, event: Event) -> int:
        if len(self._events) == self._events.maxlen:
            self.first_seq += 1
        self._events.append(_encode(event))
        self.last_seq += 1
        return self.last_seq

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def seq_after(self, last_event_id: str | None) -> int | Gap:
        """The seq to read from for a client that last saw `last_event_id` (None: only new events)."""
        if last_event_id is None:
            return self.last_seq + 1
        epoch, _, seq_text = last_event_id.strip().partition("-")
        oldest = self.event_id(self.first_seq) if self.last_seq >= self.first_seq else ""
        if epoch != self.epoch or not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) < 19):
            return Gap(oldest)
        seq = int(seq_text)
        if seq > self.last_seq or seq + 1 < self.first_seq:
            return Gap(oldest)
        return seq + 1

    def read(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` events from `seq` on (which must still be held: see :meth:`holds`)."""
        start = seq - self.first_seq
        end = min(len(self._events), start + limit)
        return [(self.first_seq + i, self._events[i]) for i in range(max(0, start), end)]

    def holds(self, seq: int) -> bool:
        return seq >= self.first_seq


class UserFeed:
    """One user's events: the patch interpreter, the log, and the pending coalesced mark."""

    __slots__ = ("_last_mark", "_mark_pending", "events", "log", "mark_interval")

    def __init__(
        self, user_id: str, tree: Patch | None, *, capacity: int, mark_interval: float, now: float
    ) -> None:
        self.events = UserEvents(user_id, tree)
        self.log = EventLog(capacity)
        self.mark_interval = mark_interval
        self._mark_pending = False
        self._last_mark = now - mark_interval

    def push(self, patch: Patch, now: float, now_ns: int) -> int:
        """Log the events of `patch`; returns how many (a mark inside the interval is kept for later)."""
        events, cause = self.events.events(patch, now_ns)
        for event in events:
            self.log.append(event)
        if cause is None:
            return len(events)
        if cause == "mark" and now - self._last_mark < self.mark_interval:
            self._mark_pending = True
            return len(events)
        self._mark_pending = False
        self._last_mark = now
        self.log.append(self.events.account_update(now_ns, cause))
        return len(events) + 1

    def due_mark(self) -> float | None:
        """When the pending mark's account_update is due (None: there is none)."""
        return self._last_mark + self.mark_interval if self._mark_pending else None

    def flush_mark(self, now: float, now_ns: int) -> bool:
        """Log the pending mark's account_update if it is due; True when it did."""
        due = self.due_mark()
        if due is None or now < due:
            return False
        self._mark_pending = False
        self._last_mark = now
        self.log.append(self.events.account_update(now_ns, "mark"))
        return True


def sse_event(event_id: str | None, data: bytes) -> bytes:
    """One Server-Sent Event (data is one line of JSON: msgspec never emits a newline)."""
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"data: " + data + b"\n\n"


def gap_event(gap: Gap, asked: str | None) -> Event:
    return {
        "type": "gap",
        "message": "the events after the given Last-Event-ID are no longer held: reload the state "
        "(GET /api/account, /api/orders, /api/trades) and go on from here",
        "last_event_id": asked,
        "oldest_event_id": gap.oldest or None,
    }


def ready_event(user_id: str, now_ns: int) -> Event:
    return {"type": "ready", "user_id": user_id, "timestamp": now_ns}


def encode(event: Event) -> bytes:
    return _encode(event)
