"""Orders and trades as DIFF shows them, plus the few internal fields the engine needs.

Field names follow the DIFF data tree exactly (``volume_orign`` is the protocol's spelling), so that
rendering a record for a patch is a field copy. Prices are floats here; the book works in ticks.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from qaex.core.limits import CodeText, IdText, Price, SymbolText, UserId, Volume

Direction = Literal["BUY", "SELL"]
Offset = Literal["OPEN", "CLOSE", "CLOSETODAY"]
PriceType = Literal["LIMIT", "ANY", "BEST", "FIVELEVEL"]
TimeCondition = Literal["IOC", "GFS", "GFD", "GTD", "GTC", "GFA"]
VolumeCondition = Literal["ANY", "MIN", "ALL"]
Status = Literal["ALIVE", "FINISHED"]

ORDER_FIELDS = (
    "seqno", "user_id", "order_id", "exchange_id", "instrument_id", "direction", "offset", "volume_orign",
    "price_type", "limit_price", "time_condition", "volume_condition", "insert_date_time",
    "exchange_order_id", "status", "volume_left", "frozen_margin", "last_msg",
)  # fmt: skip

TRADE_FIELDS = (
    "seqno", "user_id", "trade_id", "order_id", "exchange_trade_id", "exchange_id", "instrument_id",
    "direction", "offset", "volume", "price", "trade_date_time", "commission",
)  # fmt: skip

_asdict = msgspec.structs.asdict

MSG_ACCEPTED = "报单成功"
MSG_FILLED = "全部成交"
MSG_PARTIAL = "部分成交"
MSG_CANCELLED = "已撤单"
MSG_IOC_CANCELLED = "已撤单报单已提交"


class InsertOrder(msgspec.Struct, kw_only=True, frozen=True):
    """A request to insert an order, as DIFF's insert_order carries it (already decoded).

    The field types carry the bounds the engine checks on every insert (lengths and ranges, see
    :mod:`qaex.core.limits`), so a journal record that decodes is one the engine could have applied;
    DIFF's :class:`~qaex.protocol.diff.InsertOrderMessage` adds the id alphabets."""

    user_id: UserId
    order_id: IdText
    exchange_id: CodeText
    instrument_id: SymbolText
    direction: Direction
    offset: Offset
    volume: Volume
    price_type: PriceType = "LIMIT"
    limit_price: Price = 0.0
    time_condition: TimeCondition = "GFD"
    volume_condition: VolumeCondition = "ANY"

    @property
    def symbol(self) -> str:
        return f"{self.exchange_id}.{self.instrument_id}"


# Order and Trade (and account.Position) are ``gc=False``: their fields are strings and numbers only, so
# an instance can never be part of a reference cycle, and the exchange keeps a great many of them —
# untracked instances are cheaper to create and the cycle collector never walks them.
class Order(msgspec.Struct, kw_only=True, gc=False):
    seqno: int
    user_id: str
    order_id: str
    exchange_id: str
    instrument_id: str
    direction: Direction
    offset: Offset
    volume_orign: int
    price_type: PriceType
    limit_price: float
    time_condition: TimeCondition
    volume_condition: VolumeCondition
    insert_date_time: int
    exchange_order_id: str = ""
    status: Status = "ALIVE"
    volume_left: int = 0
    frozen_margin: float = 0.0
    last_msg: str = ""
    # -- internal (not sent over DIFF) --
    frozen_commission: float = 0.0
    frozen_volume_today: int = 0  # close orders: position lots frozen, split today / yesterday
    frozen_volume_his: int = 0

    @property
    def symbol(self) -> str:
        return f"{self.exchange_id}.{self.instrument_id}"

    @property
    def is_buy(self) -> bool:
        return self.direction == "BUY"

    def to_diff(self) -> dict[str, Any]:
        """The DIFF order; a price that is not a number (market orders) travels as "-" (see DIFF.md)."""
        # A literal dict of exactly ORDER_FIELDS, in order: every order a batch touches is rendered,
        # and this is several times cheaper than zipping the names with an attrgetter's values.
        limit_price = self.limit_price
        return {
            "seqno": self.seqno,
            "user_id": self.user_id,
            "order_id": self.order_id,
            "exchange_id": self.exchange_id,
            "instrument_id": self.instrument_id,
            "direction": self.direction,
            "offset": self.offset,
            "volume_orign": self.volume_orign,
            "price_type": self.price_type,
            "limit_price": limit_price if limit_price == limit_price else "-",
            "time_condition": self.time_condition,
            "volume_condition": self.volume_condition,
            "insert_date_time": self.insert_date_time,
            "exchange_order_id": self.exchange_order_id,
            "status": self.status,
            "volume_left": self.volume_left,
            "frozen_margin": self.frozen_margin,
            "last_msg": self.last_msg,
        }


class Trade(msgspec.Struct, kw_only=True, gc=False):
    seqno: int
    user_id: str
    trade_id: str
    order_id: str
    exchange_trade_id: str
    exchange_id: str
    instrument_id: str
    direction: Direction
    offset: Offset
    volume: int
    price: float
    trade_date_time: int
    commission: float

    @property
    def symbol(self) -> str:
        return f"{self.exchange_id}.{self.instrument_id}"

    def to_diff(self) -> dict[str, Any]:
        # The struct's fields are exactly TRADE_FIELDS, in order (checked below): msgspec's C-level
        # asdict is the rendering, without a Python loop.
        return _asdict(self)


if Trade.__struct_fields__ != TRADE_FIELDS:  # Trade.to_diff renders the struct as it is
    raise AssertionError("Trade's fields must be exactly TRADE_FIELDS, in order")
