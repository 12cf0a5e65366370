"""Futures accounts and positions: margin, commission, freezing, fills, mark-to-market, settlement.

This is a sans-IO object in the h11 style: the engine calls plain methods in a deterministic order
and reads the DIFF fields back; nothing here awaits, logs or touches a clock, so a journal replay
rebuilds exactly the same account.

The rules follow TqSdk 3.10.4's own simulator (``tqsdk/tradeable/sim/trade_future.py``), which is
what TqSdk users compare a simulated exchange against:

* which lots a CLOSE / CLOSETODAY may take — SHFE and INE keep today's and yesterday's lots apart
  (CLOSE takes only yesterday's, CLOSETODAY only today's); every other exchange lets either offset
  take any lot, yesterday's first;
* the rejection texts (:data:`MSG_OPEN_FUNDS`, :data:`MSG_CLOSE`, :data:`MSG_CLOSE_TODAY`,
  :data:`MSG_CLOSE_HIS`);
* how a fill moves the position fields, and close profit measured against the position price.

Where qaex differs, on purpose:

* margin is ``Instrument.margin_per_lot(position_price, long)`` (ratio × price × multiplier) instead of
  the quote's fixed per-lot margin, so it is charged on the open price intraday and on the settlement
  price after settlement, and does not move with every tick;
* the account margin is the plain sum of the positions' margins (the simulator takes the larger
  side per product, "单边大边保证金");
* fills may be partial (the simulator only fills whole orders), so frozen amounts are released
  pro rata, exactly to zero on the last fill;
* an OPEN order also freezes its commission, and closing today's lots is charged the close-today
  rate on every exchange (as CTP does), not only on SHFE/INE;
* settlement re-prices positions at the settlement price (the simulator uses the last price).

Money is float CNY. ``balance``, ``static_balance`` and ``available`` are properties computed from
running totals, so the DIFF identities hold by construction and cost O(1); ``margin``,
``position_profit`` and ``float_profit`` are running totals moved by the change of one position at
a time (no loop over positions except in :meth:`Account.settle`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, overload

import msgspec

from qaex.core.errors import INSUFFICIENT_FUNDS, INSUFFICIENT_POSITION, risk
from qaex.core.instruments import Instrument
from qaex.core.orders import Order

# Rejection texts, exactly as TqSdk's simulator writes them into order.last_msg.
MSG_OPEN_FUNDS = "开仓资金不足"
MSG_CLOSE = "平仓手数不足"  # not enough lots to close (exchanges other than SHFE/INE)
MSG_CLOSE_TODAY = "平今仓手数不足"  # SHFE/INE CLOSETODAY: not enough of today's lots
MSG_CLOSE_HIS = "平昨仓手数不足"  # SHFE/INE CLOSE: not enough of yesterday's lots
# Transfers (the simulator has none; this follows the same style).
MSG_WITHDRAW_FUNDS = "出金金额超过可用资金"

ACCOUNT_FIELDS = (
    "user_id", "currency", "pre_balance", "deposit", "withdraw", "static_balance", "close_profit",
    "commission", "premium", "position_profit", "float_profit", "balance", "margin", "frozen_margin",
    "frozen_commission", "frozen_premium", "available", "risk_ratio",
)  # fmt: skip

POSITION_FIELDS = (
    "user_id", "exchange_id", "instrument_id",
    "pos_long_his", "pos_long_today", "pos_short_his", "pos_short_today",
    "volume_long_today", "volume_long_his", "volume_long",
    "volume_long_frozen_today", "volume_long_frozen_his", "volume_long_frozen",
    "volume_short_today", "volume_short_his", "volume_short",
    "volume_short_frozen_today", "volume_short_frozen_his", "volume_short_frozen",
    "open_price_long", "open_price_short", "open_cost_long", "open_cost_short",
    "position_price_long", "position_price_short", "position_cost_long", "position_cost_short",
    "last_price", "float_profit_long", "float_profit_short", "float_profit",
    "position_profit_long", "position_profit_short", "position_profit",
    "margin_long", "margin_short", "margin",
)  # fmt: skip

NAN = math.nan
# The fields a mark-to-market can change; a mark of a holder sends only these.
POSITION_MARK_FIELDS = (
    "last_price", "float_profit_long", "float_profit_short", "float_profit",
    "position_profit_long", "position_profit_short", "position_profit",
)  # fmt: skip
ACCOUNT_MARK_FIELDS = ("position_profit", "float_profit", "balance", "available", "risk_ratio")
# Rendering is on the hot path (every fill renders two accounts and two positions, every mark pass a
# view of each holder): the renderers below build their dicts with C-level msgspec.structs.asdict or
# dict literals, several times cheaper than zipping the field names with an attrgetter's values.
# Each renderer lists exactly the fields of its tuple above, in order (tests/test_engine_fastpath.py).
_asdict = msgspec.structs.asdict


# gc=False: scalar fields only, so never in a reference cycle (see qaex.core.orders.Order).
class Position(msgspec.Struct, kw_only=True, gc=False):
    """One user's position in one contract, with exactly the DIFF position fields.

    The primary state is the lot counts (today / yesterday, held / frozen per side), the two costs
    per side and ``last_price``; every other field is derived by :meth:`Account._refresh` after each
    change, so the DIFF view can never disagree with itself. Prices of a flat side are NaN, as in
    TqSdk's simulator.
    """

    user_id: str
    exchange_id: str
    instrument_id: str  # without the exchange: "cu2601"
    pos_long_his: int = 0
    pos_long_today: int = 0
    pos_short_his: int = 0
    pos_short_today: int = 0
    volume_long_today: int = 0
    volume_long_his: int = 0
    volume_long: int = 0
    volume_long_frozen_today: int = 0
    volume_long_frozen_his: int = 0
    volume_long_frozen: int = 0
    volume_short_today: int = 0
    volume_short_his: int = 0
    volume_short: int = 0
    volume_short_frozen_today: int = 0
    volume_short_frozen_his: int = 0
    volume_short_frozen: int = 0
    open_price_long: float = NAN
    open_price_short: float = NAN
    open_cost_long: float = 0.0  # Σ open price × lots × multiplier of the lots held
    open_cost_short: float = 0.0
    position_price_long: float = NAN
    position_price_short: float = NAN
    position_cost_long: float = 0.0  # like open cost, but yesterday's lots at the last settlement price
    position_cost_short: float = 0.0
    last_price: float = NAN
    float_profit_long: float = 0.0
    float_profit_short: float = 0.0
    float_profit: float = 0.0
    position_profit_long: float = 0.0
    position_profit_short: float = 0.0
    position_profit: float = 0.0
    margin_long: float = 0.0
    margin_short: float = 0.0
    margin: float = 0.0

    @property
    def symbol(self) -> str:
        return f"{self.exchange_id}.{self.instrument_id}"

    def closable(self, buy: bool) -> tuple[int, int]:
        """(yesterday's, today's) lots a close order could take now: held minus frozen, of the short
        side for a buy, of the long side for a sell."""
        if buy:
            return (
                self.volume_short_his - self.volume_short_frozen_his,
                self.volume_short_today - self.volume_short_frozen_today,
            )
        return (
            self.volume_long_his - self.volume_long_frozen_his,
            self.volume_long_today - self.volume_long_frozen_today,
        )

    def to_diff(self) -> dict[str, Any]:
        """All DIFF position fields. NaN prices of a flat side travel as "-": JSON has no NaN, a null
        would delete the field, and TqSdk reads a string in a numeric field as NaN (see DIFF.md)."""
        # The struct's fields are exactly POSITION_FIELDS, in order (checked below), so msgspec's
        # C-level asdict is the rendering: three times cheaper than zipping names with values, and
        # every fill renders two positions.
        rendered = _asdict(self)
        if self.open_price_long != self.open_price_long:
            rendered["open_price_long"] = "-"
        if self.open_price_short != self.open_price_short:
            rendered["open_price_short"] = "-"
        if self.position_price_long != self.position_price_long:
            rendered["position_price_long"] = "-"
        if self.position_price_short != self.position_price_short:
            rendered["position_price_short"] = "-"
        if self.last_price != self.last_price:
            rendered["last_price"] = "-"
        return rendered

    def mark_view(self) -> dict[str, Any]:
        """Only the fields a mark-to-market changes (last_price is never NaN after a mark)."""
        # A literal dict of POSITION_MARK_FIELDS, in order: the cheapest way to build a small dict.
        return {
            "last_price": self.last_price,
            "float_profit_long": self.float_profit_long,
            "float_profit_short": self.float_profit_short,
            "float_profit": self.float_profit,
            "position_profit_long": self.position_profit_long,
            "position_profit_short": self.position_profit_short,
            "position_profit": self.position_profit,
        }


if Position.__struct_fields__ != POSITION_FIELDS:  # Position.to_diff renders the struct as it is
    raise AssertionError("Position's fields must be exactly POSITION_FIELDS, in order")


class _Figure:
    """A derived account field, read like an attribute: item `index` of ``Account._derived()``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    @overload
    def __get__(self, account: None, owner: type[Account]) -> _Figure: ...
    @overload
    def __get__(self, account: Account, owner: type[Account] | None = None) -> float: ...
    def __get__(self, account: Account | None, owner: type[Account] | None = None) -> float | _Figure:
        return self if account is None else account._derived()[self.index]


class Account:
    """A futures account in CNY: the DIFF account fields plus the positions, by symbol.

    Call order the engine follows for one order: :meth:`freeze` once when the order arrives (it
    raises :class:`~qaex.core.errors.RiskError` and changes nothing if the order may not go on),
    then :meth:`fill` for each fill *before* decrementing ``order.volume_left``, and
    :meth:`release` if the order ends with lots unfilled. :meth:`mark` re-prices a position;
    :meth:`settle` ends the trading day once no order is open.
    """

    __slots__ = (
        "_frozen_orders",
        "_money_orders",
        "_open_positions",
        "close_profit",
        "commission",
        "currency",
        "deposit",
        "float_profit",
        "frozen_commission",
        "frozen_margin",
        "frozen_premium",
        "margin",
        "position_profit",
        "positions",
        "pre_balance",
        "premium",
        "user_id",
        "withdraw",
    )

    def __init__(self, user_id: str, init_cash: float = 0.0) -> None:
        self.user_id = user_id
        self.currency = "CNY"
        # The starting cash is yesterday's balance rather than a deposit, so a fresh account shows
        # deposit == 0 and static_balance == init_cash, as TqSdk's simulator does with init_balance.
        self.pre_balance = float(init_cash)
        self.deposit = 0.0
        self.withdraw = 0.0
        self.close_profit = 0.0
        self.commission = 0.0
        self.premium = 0.0  # options only; always 0 for futures
        self.position_profit = 0.0
        self.float_profit = 0.0
        self.margin = 0.0
        self.frozen_margin = 0.0
        self.frozen_commission = 0.0
        self.frozen_premium = 0.0  # options only; always 0 for futures
        self.positions: dict[str, Position] = {}
        # order_ids of orders that still hold something frozen (lots or money), and of those that
        # hold money (OPEN orders). When the last of the latter goes, the frozen money totals are set
        # to exactly 0.0, so float rounding can never leave a residue behind.
        self._frozen_orders: set[str] = set()
        self._money_orders: set[str] = set()
        # How many positions hold lots; at zero the position-driven totals snap to 0.0 likewise.
        self._open_positions = 0

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickle (the default state of a class with ``__slots__``: ``(None, slot values)``), also
        an account from a checkpoint written before ``_money_orders``: every order it had frozen
        counts as holding money until it ends, so its money totals snap to 0.0 no later than before."""
        slots = state[1]
        for name, value in slots.items():
            setattr(self, name, value)
        if "_money_orders" not in slots:
            self._money_orders = set(self._frozen_orders)

    # -- derived DIFF fields (O(1)) -----------------------------------------------------------------
    def _derived(self) -> tuple[float, float, float, float]:
        """(static_balance, balance, available, risk_ratio): the one home of these formulas.

        The properties and both renderers read them from here, so every place shows the same floats;
        risk_ratio is 0 when balance <= 0 (the ratio means nothing then, and JSON has no inf).
        """
        static_balance = self.pre_balance + self.deposit - self.withdraw
        balance = static_balance + self.close_profit - self.commission + self.premium + self.position_profit
        margin = self.margin
        available = balance - margin - self.frozen_margin - self.frozen_commission - self.frozen_premium
        return static_balance, balance, available, margin / balance if balance > 0 else 0.0

    static_balance = _Figure(0)
    balance = _Figure(1)
    available = _Figure(2)
    risk_ratio = _Figure(3)

    def to_diff(self) -> dict[str, Any]:
        """All DIFF account fields (``accounts.CNY``)."""
        # A literal dict of ACCOUNT_FIELDS, in order: three times cheaper than zipping the names with
        # the values, and every fill renders two accounts.
        static_balance, balance, available, risk_ratio = self._derived()
        return {
            "user_id": self.user_id,
            "currency": self.currency,
            "pre_balance": self.pre_balance,
            "deposit": self.deposit,
            "withdraw": self.withdraw,
            "static_balance": static_balance,
            "close_profit": self.close_profit,
            "commission": self.commission,
            "premium": self.premium,
            "position_profit": self.position_profit,
            "float_profit": self.float_profit,
            "balance": balance,
            "margin": self.margin,
            "frozen_margin": self.frozen_margin,
            "frozen_commission": self.frozen_commission,
            "frozen_premium": self.frozen_premium,
            "available": available,
            "risk_ratio": risk_ratio,
        }

    def mark_view(self) -> dict[str, Any]:
        """Only the account fields a mark-to-market changes."""
        _, balance, available, risk_ratio = self._derived()
        return {
            "position_profit": self.position_profit,
            "float_profit": self.float_profit,
            "balance": balance,
            "available": available,
            "risk_ratio": risk_ratio,
        }

    def position(self, instrument: Instrument) -> Position:
        """The position in `instrument`, created flat on first use."""
        position = self.positions.get(instrument.symbol)
        if position is None:
            position = Position(
                user_id=self.user_id,
                exchange_id=instrument.exchange_id,
                instrument_id=instrument.instrument_id,
            )
            self.positions[instrument.symbol] = position
        return position

    # -- orders -------------------------------------------------------------------------------------
    def freeze(self, order: Order, instrument: Instrument, price: float) -> None:
        """Pre-trade check for a new order and freeze what it may use.

        OPEN freezes margin at `price` (the limit price, or the upper limit for a market order, so
        a buy can never need more than was frozen) plus the open commission. CLOSE/CLOSETODAY
        freezes position lots, so that two close orders cannot both count on the same lots.
        On rejection a RiskError with the simulator's text is raised and nothing has changed.
        """
        volume = order.volume_orign
        if volume <= 0 or order.volume_left != volume:
            raise ValueError(
                f"freeze needs a new order, got volume_orign={volume} volume_left={order.volume_left}"
            )
        if order.order_id in self._frozen_orders:
            raise ValueError(f"order {order.order_id} is already frozen")
        if order.offset == "OPEN":
            margin = instrument.margin_per_lot(price, order.is_buy) * volume
            commission = instrument.commission(price, volume, "OPEN")
            # Written as "not >=" so that a NaN price is refused rather than accepted.
            if not self.available >= margin + commission:
                raise risk(INSUFFICIENT_FUNDS, MSG_OPEN_FUNDS)
            order.frozen_margin = margin
            order.frozen_commission = commission
            self.frozen_margin += margin
            self.frozen_commission += commission
            self._money_orders.add(order.order_id)
        else:
            position = self.positions.get(instrument.symbol)
            his, today = _close_split(order, instrument, position)
            assert position is not None  # _close_split refuses any close without a position
            _freeze_lots(position, long=not order.is_buy, his=his, today=today)  # a buy closes the short side
            order.frozen_volume_his = his
            order.frozen_volume_today = today
        self._frozen_orders.add(order.order_id)

    def fill(self, order: Order, instrument: Instrument, price: float, volume: int) -> float:
        """Apply a fill of `volume` lots at `price` and return the commission charged.

        Must be called before the engine lowers ``order.volume_left``: the pre-fill remainder is
        what the frozen amounts are shared over, and a fill of the whole remainder releases all
        that is left frozen, so nothing drifts.
        """
        remaining = order.volume_left
        if not 0 < volume <= remaining:
            raise ValueError(f"fill of {volume} lots on order {order.order_id} with {remaining} left")
        position = self.positions.get(instrument.symbol)
        if position is None:
            position = self.position(instrument)
        last = volume == remaining
        if order.offset == "OPEN":
            commission = instrument.commission(price, volume, "OPEN")
            self._release_money(order, volume / remaining)  # exactly 1.0 on the last fill
            if position.last_price != position.last_price:
                # First price this position sees: the fill price (the simulator does the same), so
                # the new lots start with zero profit instead of NaN.
                position.last_price = price
            cost = price * volume * instrument.volume_multiple
            if order.direction == "BUY":
                position.volume_long_today += volume
                position.open_cost_long += cost
                position.position_cost_long += cost
            else:
                position.volume_short_today += volume
                position.open_cost_short += cost
                position.position_cost_short += cost
            self._update(position, instrument)
        else:
            # A mixed order (only outside SHFE/INE) closes yesterday's lots first, as it froze them.
            his = min(volume, order.frozen_volume_his)
            today = volume - his
            if today > order.frozen_volume_today:
                raise ValueError(f"order {order.order_id} fills more lots than it froze")
            order.frozen_volume_his -= his
            order.frozen_volume_today -= today
            # Closing today's lots pays the close-today rate wherever the exchange has one (CTP does
            # this on DCE/CZCE/CFFEX too, which is what makes CFFEX's 10× close-today fee bite).
            commission = 0.0
            if his:
                commission += instrument.commission(price, his, "CLOSE")
            if today:
                commission += instrument.commission(price, today, "CLOSETODAY")
            self._close(position, instrument, long=not order.is_buy, price=price, his=his, today=today)
        if last:
            self._unfreeze(order)
        self.commission += commission
        return commission

    def release(self, order: Order) -> None:
        """Give back what an order still has frozen (cancelled, IOC remainder, rejected after freeze).

        Safe to call more than once: the order's frozen fields are zeroed the first time.
        """
        if order.offset == "OPEN":
            self._release_money(order, 1.0)
        else:
            position = self.positions.get(order.symbol)
            if position is not None:
                his, today = order.frozen_volume_his, order.frozen_volume_today
                _freeze_lots(position, long=not order.is_buy, his=-his, today=-today)
            order.frozen_volume_his = 0
            order.frozen_volume_today = 0
        self._unfreeze(order)

    # -- prices and cash ----------------------------------------------------------------------------
    def mark(self, instrument: Instrument, last_price: float) -> bool:
        """Mark the position in `instrument` to `last_price`; True if any field changed.

        Accounts without a position in the instrument are untouched (no position is created), and a
        NaN price is ignored, as the simulator skips quotes without a last price.
        """
        symbol = instrument.symbol
        return self.mark_all({symbol: last_price}, {symbol: instrument}, None)

    def mark_all(
        self,
        prices: Mapping[str, float],
        instruments: Mapping[str, Instrument],
        marked: dict[tuple[str, str], Position] | None,
    ) -> bool:
        """Mark each position that has a price in `prices` to it, as :meth:`mark` does one; True if
        any field changed. Each position that changed goes into `marked` under (user_id, symbol).

        This is the engine's lazy marking (before every risk check, for every account a batch
        touched), so the whole pass is one call with the arithmetic in line.
        """
        changed = False
        float_total = self.float_profit
        position_total = self.position_profit
        for symbol, position in self.positions.items():
            price = prices.get(symbol)
            # Nothing to do at the same price, and a NaN price (price != price) marks nothing.
            if price is None or position.last_price == price or price != price:
                continue
            position.last_price = price
            # Only the profits depend on the price (lots, costs and margin do not): recompute just
            # those, with exactly the formulas of `_refresh`.
            multiple = instruments[symbol].volume_multiple
            long = position.volume_long
            if long:
                value = price * long * multiple
                position.float_profit_long = float_long = value - position.open_cost_long
                position.position_profit_long = position_long = value - position.position_cost_long
            else:
                float_long, position_long = position.float_profit_long, position.position_profit_long
            short = position.volume_short
            if short:
                value = price * short * multiple
                position.float_profit_short = float_short = position.open_cost_short - value
                position.position_profit_short = position_short = position.position_cost_short - value
            else:
                float_short, position_short = position.float_profit_short, position.position_profit_short
            float_profit = float_long + float_short
            position_profit = position_long + position_short
            if self._open_positions:
                # The same additions, in the same order, as updating the attributes each time.
                float_total += float_profit - position.float_profit
                position_total += position_profit - position.position_profit
            position.float_profit = float_profit
            position.position_profit = position_profit
            changed = True
            if marked is not None:
                marked[self.user_id, symbol] = position
        if changed:
            self.float_profit = float_total
            self.position_profit = position_total
        return changed

    # The amount of a transfer is checked by the engine (`bad_amount`: finite, > 0, at most
    # limits.MAX_AMOUNT) before the account sees it.
    def deposit_cash(self, amount: float) -> None:
        """Add `amount` to the account; it counts in today's ``deposit``."""
        self.deposit += amount

    def withdraw_cash(self, amount: float) -> None:
        """Take `amount` out; refused if it exceeds what is available, so available stays >= 0."""
        if amount > self.available:
            raise risk(INSUFFICIENT_FUNDS, MSG_WITHDRAW_FUNDS)
        self.withdraw += amount

    def settle(self, settlement_prices: Mapping[str, float], instruments: Mapping[str, Instrument]) -> None:
        """End the trading day.

        Every position is marked to its settlement price (its last price when none is given), so
        the day's position profit is in the balance, which becomes tomorrow's ``pre_balance``.
        Then today's lots become yesterday's, the position price and cost are reset to the
        settlement price (so tomorrow's position profit and close profit start from it), margins
        are recomputed at that price, and the day's figures (deposit, withdraw, close profit,
        commission, premium, position profit) restart at 0. The totals are recomputed from the
        positions here, which also clears any float rounding accumulated during the day.
        """
        if self._frozen_orders or self.frozen_margin or self.frozen_commission:
            raise AssertionError("settle with open orders: cancel them first")
        for symbol, position in self.positions.items():
            price = settlement_prices.get(symbol, position.last_price)
            if not math.isnan(price):
                position.last_price = price
                self._update(position, instruments[symbol])
        self.pre_balance = self.balance
        self.deposit = self.withdraw = 0.0
        self.close_profit = self.commission = self.premium = 0.0
        for symbol, position in self.positions.items():
            assert position.volume_long_frozen == 0 and position.volume_short_frozen == 0
            instrument = instruments[symbol]
            multiple = instrument.volume_multiple
            position.volume_long_his += position.volume_long_today
            position.volume_long_today = 0
            position.volume_short_his += position.volume_short_today
            position.volume_short_today = 0
            # Same expression as the value in _refresh, so position profit comes out exactly 0.
            price = position.last_price
            long, short = position.volume_long, position.volume_short
            position.position_cost_long = price * long * multiple if long else 0.0
            position.position_cost_short = price * short * multiple if short else 0.0
            _refresh(position, instrument)
        positions = self.positions.values()
        self.margin = math.fsum(p.margin for p in positions)
        self.position_profit = math.fsum(p.position_profit for p in positions)
        self.float_profit = math.fsum(p.float_profit for p in positions)

    def close_out(self, symbol: str, instrument: Instrument) -> tuple[int, int]:
        """Close the position in an expired contract in cash, after :meth:`settle` priced it at the final
        settlement price: the lots go, their margin is released, the balance does not move (the
        position was just re-priced at that price, so closing it there makes no profit). Returns the
        (long, short) lots closed."""
        position = self.positions.get(symbol)
        if position is None:
            return 0, 0
        long, short = position.volume_long, position.volume_short
        position.volume_long_his = position.volume_long_today = 0
        position.volume_short_his = position.volume_short_today = 0
        position.open_cost_long = position.open_cost_short = 0.0
        position.position_cost_long = position.position_cost_short = 0.0
        self._update(position, instrument)
        return long, short

    def drop_position(self, symbol: str) -> bool:
        """Forget a flat position (its contract left the listing); true if there was one."""
        position = self.positions.get(symbol)
        if position is None or position.volume_long or position.volume_short:
            return False
        del self.positions[symbol]
        return True

    # -- internals ----------------------------------------------------------------------------------
    def _release_money(self, order: Order, share: float) -> None:
        """Release `share` (0..1] of an OPEN order's frozen margin and commission; 1.0 releases all."""
        if share >= 1.0:
            margin, commission = order.frozen_margin, order.frozen_commission
            order.frozen_margin = order.frozen_commission = 0.0
        else:
            margin, commission = order.frozen_margin * share, order.frozen_commission * share
            order.frozen_margin -= margin
            order.frozen_commission -= commission
        self.frozen_margin -= margin
        self.frozen_commission -= commission

    def _unfreeze(self, order: Order) -> None:
        """`order` holds nothing frozen any more. Once no OPEN order holds money, the frozen money
        totals are exactly 0.0, whatever float rounding left (close orders freeze lots, not money)."""
        self._frozen_orders.discard(order.order_id)
        money_orders = self._money_orders
        money_orders.discard(order.order_id)
        if not money_orders:
            self.frozen_margin = 0.0
            self.frozen_commission = 0.0

    def _close(
        self, position: Position, instrument: Instrument, *, long: bool, price: float, his: int, today: int
    ) -> None:
        """Remove `his` + `today` lots from one side and realize their profit against the position price."""
        volume = his + today
        multiple = instrument.volume_multiple
        if long:
            held = position.volume_long
            # close profit of a long: (fill price − position price) × lots × multiplier
            self.close_profit += (price - position.position_cost_long / (held * multiple)) * volume * multiple
            keep = (held - volume) / held
            position.open_cost_long = position.open_cost_long * keep if keep else 0.0
            position.position_cost_long = position.position_cost_long * keep if keep else 0.0
            position.volume_long_his -= his
            position.volume_long_today -= today
            position.volume_long_frozen_his -= his
            position.volume_long_frozen_today -= today
        else:
            held = position.volume_short
            # close profit of a short: (position price − fill price) × lots × multiplier
            self.close_profit += (
                (position.position_cost_short / (held * multiple) - price) * volume * multiple
            )
            keep = (held - volume) / held
            position.open_cost_short = position.open_cost_short * keep if keep else 0.0
            position.position_cost_short = position.position_cost_short * keep if keep else 0.0
            position.volume_short_his -= his
            position.volume_short_today -= today
            position.volume_short_frozen_his -= his
            position.volume_short_frozen_today -= today
        self._update(position, instrument)

    def _update(self, position: Position, instrument: Instrument) -> None:
        """Re-derive a position and move the account totals by its change."""
        was_open = position.volume_long > 0 or position.volume_short > 0
        margin = position.margin
        position_profit = position.position_profit
        float_profit = position.float_profit
        _refresh(position, instrument)
        is_open = position.volume_long > 0 or position.volume_short > 0
        if is_open != was_open:
            self._open_positions += 1 if is_open else -1
        if self._open_positions == 0:
            # No lots anywhere: the totals are exactly zero, whatever rounding said.
            self.margin = self.position_profit = self.float_profit = 0.0
        else:
            self.margin += position.margin - margin
            self.position_profit += position.position_profit - position_profit
            self.float_profit += position.float_profit - float_profit


def _close_split(order: Order, instrument: Instrument, position: Position | None) -> tuple[int, int]:
    """How many (yesterday's, today's) lots a close order takes, or raise the simulator's rejection.

    SHFE/INE: CLOSE may only take yesterday's lots, CLOSETODAY only today's. Elsewhere both offsets
    take any lot not already frozen, yesterday's first.
    """
    volume = order.volume_orign
    his_free, today_free = (0, 0) if position is None else position.closable(order.is_buy)
    if instrument.separates_today:
        if order.offset == "CLOSETODAY":
            if today_free < volume:
                raise risk(INSUFFICIENT_POSITION, MSG_CLOSE_TODAY)
            return 0, volume
        if his_free < volume:
            raise risk(INSUFFICIENT_POSITION, MSG_CLOSE_HIS)
        return volume, 0
    if his_free + today_free < volume:
        raise risk(INSUFFICIENT_POSITION, MSG_CLOSE)
    his = min(volume, his_free)
    return his, volume - his


def _freeze_lots(position: Position, *, long: bool, his: int, today: int) -> None:
    """Freeze (or, with negative counts, unfreeze) lots of one side for a close order."""
    if long:
        position.volume_long_frozen_his += his
        position.volume_long_frozen_today += today
        position.volume_long_frozen = position.volume_long_frozen_his + position.volume_long_frozen_today
    else:
        position.volume_short_frozen_his += his
        position.volume_short_frozen_today += today
        position.volume_short_frozen = position.volume_short_frozen_his + position.volume_short_frozen_today


def _refresh(position: Position, instrument: Instrument) -> None:
    """Derive every computed field of a position from its lots, costs and last price.

    Profits are computed as value at the last price minus cost, which is exactly
    (last − open/position price) × lots × multiplier without dividing, and margin as
    ``margin_per_lot(position price) × lots``.
    """
    multiple = instrument.volume_multiple
    last = position.last_price
    position.pos_long_his = position.volume_long_his
    position.pos_long_today = position.volume_long_today
    position.pos_short_his = position.volume_short_his
    position.pos_short_today = position.volume_short_today
    long = position.volume_long = position.volume_long_his + position.volume_long_today
    short = position.volume_short = position.volume_short_his + position.volume_short_today
    position.volume_long_frozen = position.volume_long_frozen_his + position.volume_long_frozen_today
    position.volume_short_frozen = position.volume_short_frozen_his + position.volume_short_frozen_today
    if long:
        value = last * long * multiple
        position.open_price_long = position.open_cost_long / (long * multiple)
        position.position_price_long = price = position.position_cost_long / (long * multiple)
        position.float_profit_long = value - position.open_cost_long
        position.position_profit_long = value - position.position_cost_long
        position.margin_long = instrument.margin_per_lot(price, True) * long
    else:
        position.open_price_long = position.position_price_long = NAN
        position.open_cost_long = position.position_cost_long = 0.0
        position.float_profit_long = position.position_profit_long = position.margin_long = 0.0
    if short:
        value = last * short * multiple
        position.open_price_short = position.open_cost_short / (short * multiple)
        position.position_price_short = price = position.position_cost_short / (short * multiple)
        position.float_profit_short = position.open_cost_short - value
        position.position_profit_short = position.position_cost_short - value
        position.margin_short = instrument.margin_per_lot(price, False) * short
    else:
        position.open_price_short = position.position_price_short = NAN
        position.open_cost_short = position.position_cost_short = 0.0
        position.float_profit_short = position.position_profit_short = position.margin_short = 0.0
    position.float_profit = position.float_profit_long + position.float_profit_short
    position.position_profit = position.position_profit_long + position.position_profit_short
    position.margin = position.margin_long + position.margin_short
