"""What the exchange lists on a trading day, and what changes when a day is settled.

Pure: from the contracts listed now, the product templates, the trading day and the holiday calendar,
:func:`listing_update` says which contracts to list (with their first day's figures) and which expired
ones leave the listing. The exchange service turns the answer into journaled commands
(``UpsertInstrument``, ``Delist``), so a replay applies what was decided then and never depends on the
rules or the holiday data of the release that replays it.

A contract's own expiry is engine state: the engine expires it when it settles the contract's last
trading day (``Engine._settle``; the contract then shows ``expired: true`` and takes no orders). This
module only lists new months and, ``keep_expired_days`` calendar days after the last trading day, takes
the expired contract out of the listing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qaex.core.calendar import HolidayCalendar, parse_day
from qaex.core.contracts import ListedContract, instrument_for, listed_contracts
from qaex.core.instruments import Instrument
from qaex.core.products import ProductTemplate

DEFAULT_KEEP_EXPIRED_DAYS = 7
"""Calendar days an expired contract stays listed (``expired: true``) before it leaves the listing."""


@dataclass(frozen=True, slots=True)
class ProductListing:
    """The product calendar the exchange lists from (qaex.core.listing): which products, which
    holidays their last trading days skip, and how long an expired contract stays listed."""

    products: Sequence[ProductTemplate]
    calendar: HolidayCalendar | None = None
    keep_expired_days: int = DEFAULT_KEEP_EXPIRED_DAYS


@dataclass(frozen=True, slots=True)
class ListingUpdate:
    new: list[Instrument] = field(default_factory=list)  # nearest delivery first, product by product
    delist: list[str] = field(default_factory=list)  # symbols of expired contracts

    def __bool__(self) -> bool:
        return bool(self.new or self.delist)


def listing_update(
    listed: Mapping[str, Instrument],
    products: Iterable[ProductTemplate],
    trading_day: str,
    calendar: HolidayCalendar | None = None,
    *,
    keep_expired_days: int = DEFAULT_KEEP_EXPIRED_DAYS,
) -> ListingUpdate:
    """The contracts to list on ``trading_day`` (``YYYYMMDD``) that are not listed yet, and the expired
    ones to delist.

    A new contract opens at the previous settlement price of the product's furthest live month (its
    neighbour; the template's reference price when the product has none, as on a fresh start),
    snapped to the tick grid, with open interest 0 (the template's reference open interest on a fresh
    start, when no contract of the product is listed).
    """
    day = parse_day(trading_day)
    new: list[Instrument] = []
    for product in products:
        siblings = [i for i in listed.values() if i.product_key == product.key]
        live = [i for i in siblings if not i.expired]
        neighbour = max(live, key=lambda i: (i.expire_datetime, i.instrument_id), default=None)
        contracts = listed_contracts(product, day, calendar)
        fresh = not siblings
        main = _opening_main(product, contracts, day) if fresh else -1
        for index, contract in enumerate(contracts):
            if contract.symbol in listed:
                continue
            if neighbour is None:
                instrument = instrument_for(product, contract)
                if fresh:  # the main month holds the product's open interest, the others less
                    share = 1.0 if index == main else 0.3 / (1 + abs(index - main))
                    instrument.pre_open_interest = round(product.reference_open_interest * share)
                new.append(instrument)
                continue
            ticks = max(1, round(neighbour.pre_settlement / product.price_tick))
            instrument = instrument_for(product, contract, pre_settlement=ticks * product.price_tick)
            instrument.pre_settlement = instrument.from_ticks(ticks)  # the tick's decimals, not float noise
            instrument.pre_close = instrument.pre_settlement
            instrument.pre_open_interest = 0
            instrument.reset_limits()
            new.append(instrument)
    horizon = day - dt.timedelta(days=keep_expired_days)  # delisted once past it
    delist = sorted(
        symbol
        for symbol, instrument in listed.items()
        if instrument.expired
        and instrument.last_trading_day
        and parse_day(instrument.last_trading_day) < horizon
    )
    return ListingUpdate(new, delist)


def _opening_main(product: ProductTemplate, contracts: list[ListedContract], day: dt.date) -> int:
    """Which of a freshly listed product's contracts opens as its main: the nearest in the product's
    ``main_months`` whose last trading day is more than ``main_roll_days`` away (the market has rolled
    out of nearer ones), else the nearest such contract of any month, else the last listed."""
    far = [
        index
        for index, contract in enumerate(contracts)
        if (contract.last_trading_day - day).days > product.main_roll_days
    ]
    preferred = [
        i for i in far if not product.main_months or contracts[i].delivery_month in product.main_months
    ]
    return (preferred or far or [len(contracts) - 1])[0]
