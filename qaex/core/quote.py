"""The DIFF quote of one instrument, kept up to date from depth and trades, handed out as merge patches.

A :class:`QuoteBook` is a plain object (no trio, no IO). The market-data service feeds it every depth
change and every trade; the book only records them. Building the wire dict and diffing it against what
was last handed out happens in :meth:`QuoteBook.take_patch`, once per change-batch, so a quote that moves
1,000 times between two takes costs 1,000 attribute writes and one patch, and that patch (encoded once)
is shared by every subscriber.

The renderings hold real values: a price that does not exist (an empty depth level, the daily high
before the first trade) is float NaN. How NaN travels is each transport's choice, made once at its
edge: DIFF sends ``"-"`` (TqSdk ignores ``null`` under ``quotes``;
:func:`qaex.protocol.diff.market_patch`), the HTTP API ``null`` (msgspec's encoding of NaN).

One wire rule from TqSdk 3.10.4 (see docs/market-data.md) is the renderer's: ``datetime`` is a string
in exchange local time (UTC+8) with microseconds; TqSdk parses it with ``"%Y-%m-%d %H:%M:%S.%f"`` and
``get_quote`` waits until it is non-empty.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from qaex.core.calendar import (
    CST_OFFSET_NS,  # UTC+8 all year (no daylight saving): a fixed offset is exact
    MarketHours,
    published_trading_time,
)
from qaex.core.instruments import Instrument
from qaex.core.main_contracts import CONT_CLASS, CONT_EXCHANGE, cont_name

Patch = dict[str, Any]

DEPTH_LEVELS = 5

_EPOCH = datetime(1970, 1, 1)


def format_datetime(ts_ns: int) -> str:
    """Epoch nanoseconds as the exchange-local (UTC+8) string TqSdk expects, microseconds included."""
    local = _EPOCH + timedelta(microseconds=(ts_ns + CST_OFFSET_NS) // 1000)
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")


Level = tuple[float, int]
_EMPTY_LEVEL: Level = (math.nan, 0)


def _five_levels(levels: Sequence[Level]) -> list[Level]:
    padded = list(levels[:DEPTH_LEVELS])
    padded.extend([_EMPTY_LEVEL] * (DEPTH_LEVELS - len(padded)))
    return padded


class QuoteBook:
    """One instrument's DIFF quote: static contract fields, the day's figures and five depth levels.

    ``pre_settlement``, ``pre_close``, ``pre_open_interest`` and the price limits are read from the
    :class:`Instrument` each time, so the order router and the quote can never disagree about them;
    :meth:`new_trading_day` is the one place that rolls them.
    """

    def __init__(
        self, instrument: Instrument, now_ns: int | None = None, *, market_hours: MarketHours = "always"
    ) -> None:
        """``now_ns`` stamps the quote at once: TqSdk's ``get_quote`` blocks until ``datetime`` is set,
        so a book created with it can be subscribed to before the first depth or trade arrives.
        ``market_hours``: the policy, which decides the ``trading_time`` shown
        (qaex.core.calendar.sessions)."""
        self.instrument = instrument
        self.market_hours = market_hours
        self.symbol = instrument.symbol
        self.datetime_ns: int | None = now_ns
        self.last_price = math.nan
        self.open = math.nan
        self.highest = math.nan
        self.lowest = math.nan
        self.close = math.nan
        self.settlement = math.nan
        self.volume = 0
        self.amount = 0.0
        self.open_interest = instrument.pre_open_interest
        self.bids: list[Level] = _five_levels([])
        self.asks: list[Level] = _five_levels([])
        self._sent: dict[str, Any] = {}
        self._touched = True  # the first take hands out everything
        self._formatted: tuple[int | None, str] = (None, "")

    # -- derived figures -----------------------------------------------------------------------------
    @property
    def average(self) -> float:
        """Volume-weighted average price of the day: turnover / lots / multiplier (NaN before a trade)."""
        if self.volume == 0:
            return math.nan
        return self.amount / self.volume / self.instrument.volume_multiple

    @property
    def datetime(self) -> str:
        """The exchange-local time of the latest event; "" only for a book never stamped."""
        if self.datetime_ns is None:
            return ""
        if self._formatted[0] != self.datetime_ns:  # formatting costs ~1 µs; do it once per value
            self._formatted = (self.datetime_ns, format_datetime(self.datetime_ns))
        return self._formatted[1]

    # -- events ------------------------------------------------------------------------------------
    def on_depth(self, bids: Sequence[Level], asks: Sequence[Level], ts_ns: int) -> None:
        """Replace the five best levels each side, best first; missing levels become (NaN, 0)."""
        self.bids = _five_levels(bids)
        self.asks = _five_levels(asks)
        self.datetime_ns = ts_ns
        self._touched = True

    def on_trade(self, price: float, volume: int, ts_ns: int, open_interest: int) -> None:
        """Record one fill of ``volume`` lots (counted once, not per side) and the open interest after it."""
        if self.volume == 0:
            self.open = self.highest = self.lowest = price
        else:
            self.highest = max(self.highest, price)
            self.lowest = min(self.lowest, price)
        self.last_price = price
        self.volume += volume
        self.amount += price * volume * self.instrument.volume_multiple
        self.open_interest = open_interest
        self.datetime_ns = ts_ns
        self._touched = True

    def on_settle(self, settlement: float) -> None:
        """End of the trading day: publish the settlement price and the day's close (the last trade)."""
        self.settlement = settlement
        self.close = self.last_price
        self._touched = True

    def new_trading_day(self, ts_ns: int) -> None:
        """Start the next trading day: roll the ``pre_*`` fields and limits, reset the daily figures.

        This writes ``pre_settlement``, ``pre_close`` and ``pre_open_interest`` into the shared
        :class:`Instrument` and recomputes its price limits, on purpose: the router's limit checks and
        margin must move with the settlement too. Call it once per instrument per day, from the single
        writer. ``last_price`` and the depth stay (nothing traded yet does not mean no price).
        """
        instrument = self.instrument
        for candidate in (self.settlement, self.last_price):
            if not math.isnan(candidate):
                instrument.pre_settlement = candidate
                break
        for candidate in (self.close, self.last_price):
            if not math.isnan(candidate):
                instrument.pre_close = candidate
                break
        instrument.pre_open_interest = self.open_interest
        instrument.reset_limits()
        self.open = self.highest = self.lowest = self.close = self.settlement = math.nan
        self.volume = 0
        self.amount = 0.0
        self.datetime_ns = ts_ns
        self._touched = True

    # -- views -------------------------------------------------------------------------------------
    def static_fields(self) -> Patch:
        """The contract fields (no market data). TqSdk's ``get_quote`` and ``get_kline_serial`` wait for
        ``price_tick > 0`` *before* they subscribe, so send these for every listed instrument on a
        market-data connection's first rtn_data; otherwise TqSdk falls back to a GraphQL ``ins_query``."""
        instrument = self.instrument
        return {
            "instrument_id": self.symbol,
            "exchange_id": instrument.exchange_id,
            "instrument_name": instrument.instrument_name,
            "ins_class": "FUTURE",
            "product_id": instrument.product_id,
            "price_tick": instrument.price_tick,
            "price_decs": instrument.price_decs,
            "volume_multiple": instrument.volume_multiple,
            "max_limit_order_volume": instrument.max_limit_order_volume,
            "min_limit_order_volume": instrument.min_limit_order_volume,
            "max_market_order_volume": instrument.max_market_order_volume,
            "min_market_order_volume": instrument.min_market_order_volume,
            "expired": instrument.expired,
            "expire_datetime": instrument.expire_datetime,
            # The day's contract figures (they change only at settlement), which TqSdk's
            # query_symbol_info reads from the contract service rather than from live quotes.
            "pre_settlement": instrument.pre_settlement,
            "pre_close": instrument.pre_close,
            "pre_open_interest": instrument.pre_open_interest,
            "upper_limit": instrument.upper_limit,
            "lower_limit": instrument.lower_limit,
            "trading_time": published_trading_time(instrument.trading_time, self.market_hours),
        }

    def full(self) -> Patch:
        """Every DIFF quote field (NaN where a price does not exist). Does not affect what
        :meth:`take_patch` returns."""
        instrument = self.instrument
        fields = self.static_fields()
        fields.update(
            {
                "datetime": self.datetime,
                "last_price": self.last_price,
                "open": self.open,
                "highest": self.highest,
                "lowest": self.lowest,
                "close": self.close,
                "average": self.average,
                "volume": self.volume,
                "amount": self.amount,
                "open_interest": self.open_interest,
                "settlement": self.settlement,
                # Per lot at the previous settlement: what TqSdk's own simulator (TqSim) charges.
                "margin": instrument.margin_per_lot(instrument.pre_settlement, long=True),
                "commission": instrument.commission(instrument.pre_settlement, 1, "OPEN"),
            }
        )
        self._add_levels(fields)
        return fields

    def at(
        self, bids: Sequence[Level], asks: Sequence[Level], last_price: float, open_interest: int
    ) -> QuoteBook:
        """A copy of this quote with this depth, last price and open interest (the HTTP API reads
        those from the engine's book at the request); this book is left as it is."""
        view = copy.copy(self)
        view.bids = _five_levels(bids)
        view.asks = _five_levels(asks)
        view.last_price = last_price
        view.open_interest = open_interest
        return view

    def to_tick(self) -> Patch:
        """The DIFF Tick for the current state (``datetime`` in epoch ns; NaN for a price that does not
        exist)."""
        tick: Patch = {
            "datetime": self.datetime_ns or 0,
            "last_price": self.last_price,
            "average": self.average,
            "highest": self.highest,
            "lowest": self.lowest,
            "volume": self.volume,
            "amount": self.amount,
            "open_interest": self.open_interest,
        }
        self._add_levels(tick)
        return tick

    def _add_levels(self, fields: Patch) -> None:
        """``bid_price1..5``, ``bid_volume1..5``, ``ask_price1..5``, ``ask_volume1..5``: the quote's and
        the tick's depth fields, in that order per level."""
        for number, ((bid_price, bid_volume), (ask_price, ask_volume)) in enumerate(
            zip(self.bids, self.asks, strict=True), start=1
        ):
            fields[f"bid_price{number}"] = bid_price
            fields[f"bid_volume{number}"] = bid_volume
            fields[f"ask_price{number}"] = ask_price
            fields[f"ask_volume{number}"] = ask_volume

    def take_patch(self) -> Patch | None:
        """``{"quotes": {symbol: {changed fields}}}`` since the previous take, or None if nothing changed.

        The first take returns the whole quote. Fields that changed and changed back are left out.
        """
        if not self._touched:
            return None
        self._touched = False
        return _take_patch(self, self.full())


_MISSING = object()


def _take_patch(quote: QuoteBook | ContQuote, current: Patch) -> Patch | None:
    """The fields of ``current`` that differ from the quote's ``_sent`` ones, as a quotes patch;
    records ``current`` as sent."""
    sent = quote._sent
    changed = {}
    for key, value in current.items():
        before = sent.get(key, _MISSING)
        # Changed unless equal or both NaN (a price that stays unknown is no change).
        if before != value and (before == before or value == value):
            changed[key] = value
    if not changed:
        return None
    quote._sent = current
    return {"quotes": {quote.symbol: changed}}


class ContQuote:
    """The quote of a main-contract series (``KQ.m@SHFE.rb``): its current main's quote, every field,
    under the series' own name, ``ins_class`` ``CONT`` and ``underlying_symbol`` the main.

    It holds no figures of its own: :attr:`underlying` is the main's :class:`QuoteBook`, replaced when
    the main changes, and the market core asks for a patch whenever that book changed.

    A patch is built from the fields the main's book handed out last (its ``_sent``), so take it
    after the book's own patch (MarketState.take_changes does): the quote is built once per change,
    however many series mirror it.
    """

    def __init__(self, symbol: str, underlying: QuoteBook) -> None:
        self.symbol = symbol
        self.underlying = underlying
        self._sent: dict[str, Any] = self.full()  # the baseline: the first patch has changes only

    def _own_fields(self) -> Patch:
        underlying = self.underlying
        return {
            "instrument_id": self.symbol,
            "exchange_id": CONT_EXCHANGE,
            "instrument_name": cont_name(underlying.instrument.instrument_name),
            "ins_class": CONT_CLASS,
            "underlying_symbol": underlying.symbol,
        }

    def static_fields(self) -> Patch:
        """The main's contract fields (TqSdk's query_symbol_info reads them), as the series'."""
        fields = self.underlying.static_fields()
        fields.update(self._own_fields())
        return fields

    def full(self) -> Patch:
        fields = self.underlying.full()
        fields.update(self._own_fields())
        return fields

    def take_patch(self) -> Patch | None:
        """The fields changed since the previous take, as of the main's last patch, or None."""
        current = dict(self.underlying._sent)
        current.update(self._own_fields())
        return _take_patch(self, current)
