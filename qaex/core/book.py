"""The price-time-priority limit order book of one instrument: plain data in, plain data out.

The book is sans-IO in the h11 sense: :meth:`OrderBook.submit` and :meth:`OrderBook.cancel` are
synchronous calls that return what happened (fills, volume rested, volume cancelled); nothing here
knows about trio, accounts, journals or DIFF. The engine owns one book per instrument and turns the
results into orders, trades and patches.

Prices are integer ticks (:meth:`qaex.core.instruments.Instrument.to_ticks`), so matching never
compares floats. Order keys are integers the caller chooses (the engine's seqno) and must be unique
among resting orders.

Why the data structures look the way they do (this module is the exchange's hot path):

* A price level keeps two insertion-ordered dicts, ``key -> volume left`` and ``key -> owner``.
  Dict order *is* time priority, cancelling any order is O(1), and a resting order costs two dict
  entries instead of an object whose ``__init__`` would be a Python call per order.
* Each side keeps a sorted list of its active prices, stored so that the best price is always the
  *last* element: bids as ``price``, asks as ``-price``. Reading the best price and removing the
  best level are O(1) (``list[-1]``, ``list.pop()``); adding or removing another level is a C-level
  ``bisect`` plus a short memmove.
* Results are NamedTuples built with ``tuple.__new__`` directly, which skips the generated Python
  ``__new__`` and makes a fill about twice as cheap to create.

Determinism: every iteration is over lists or insertion-ordered dicts keyed by the caller's
integers, never over sets or hash-ordered containers, so the same sequence of calls always yields
the same results, fills in the same order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Fill", "OrderBook", "Submission"]


class Fill(NamedTuple):
    """One trade between a resting (maker) order and the incoming (taker) order."""

    maker: int
    """Key of the resting order."""
    taker: int
    """Key of the incoming order."""
    price: int
    """Ticks; always the maker's price (the resting order set it, the taker accepted it)."""
    volume: int


class Submission(NamedTuple):
    """What :meth:`OrderBook.submit` did with one incoming order.

    ``sum(fill.volume for fill in fills) + rested + cancelled`` always equals the submitted volume.
    Results are values: treat them, and their ``fills`` list, as read-only. Results without fills
    share one empty list and, for common volumes, are shared objects altogether (see
    ``_COMMON_VOLUMES``).
    """

    fills: list[Fill]
    rested: int
    """Volume left resting in the book (0 for IOC/FOK orders and for orders filled completely)."""
    cancelled: int
    """Volume cancelled at once: an IOC remainder, a FOK that could not fill completely, or the
    whole volume of an order rejected for self-trade."""
    self_trade: bool
    """True when the order was rejected whole because it would have traded with a resting order of
    the same owner; then ``fills == []`` and ``cancelled`` is the whole volume."""


# ``tuple.__new__(Fill, (...))`` builds the NamedTuple without the Python-level generated __new__,
# which makes creating a result about twice as cheap.
_new_tuple = tuple.__new__

_NO_FILLS: list[Fill] = []  # shared by every result without fills; never mutated

# Most submissions trade nothing, and then the result depends on the volume alone. Building a
# NamedTuple costs several times a list lookup, so results for volumes below this bound (above any
# contract's max order volume) are built once at import and shared.
_COMMON_VOLUMES = 1024
_RESTED = [_new_tuple(Submission, (_NO_FILLS, volume, 0, False)) for volume in range(_COMMON_VOLUMES)]
_CANCELLED = [_new_tuple(Submission, (_NO_FILLS, 0, volume, False)) for volume in range(_COMMON_VOLUMES)]
_SELF_TRADE = [_new_tuple(Submission, (_NO_FILLS, 0, volume, True)) for volume in range(_COMMON_VOLUMES)]


def _rested(volume: int) -> Submission:
    if volume < _COMMON_VOLUMES:
        return _RESTED[volume]
    return _new_tuple(Submission, (_NO_FILLS, volume, 0, False))


def _cancelled(volume: int) -> Submission:
    if volume < _COMMON_VOLUMES:
        return _CANCELLED[volume]
    return _new_tuple(Submission, (_NO_FILLS, 0, volume, False))


def _self_trade(volume: int) -> Submission:
    if volume < _COMMON_VOLUMES:
        return _SELF_TRADE[volume]
    return _new_tuple(Submission, (_NO_FILLS, 0, volume, True))


class _Level:
    """All resting orders at one price on one side, in time priority.

    ``volumes`` and ``owners`` hold the same keys in the same order; ``total`` is the sum of
    ``volumes`` so that depth and fill-or-kill checks need not add up orders.
    """

    __slots__ = ("buy", "owners", "price", "signed", "total", "volumes")

    def __init__(self, buy: bool, price: int) -> None:
        self.buy = buy
        self.price = price
        self.signed = price if buy else -price
        self.volumes: dict[int, int] = {}
        self.owners: dict[int, str] = {}
        self.total = 0


class OrderBook:
    """Price-time-priority matching for one instrument.

    Order kinds reach the book as two flags, which is how DIFF's ``time_condition`` and
    ``volume_condition`` map onto matching:

    * ``ioc=False`` — LIMIT + GFD: trade what crosses, rest the remainder.
    * ``ioc=True`` — LIMIT + IOC (FAK): trade what crosses, cancel the remainder.
    * ``ioc=True, all_or_none=True`` — IOC + ALL (FOK): trade the whole volume at prices within the
      limit, or nothing.
    * Market orders (ANY + IOC) are ``ioc=True`` at the daily limit price, so the book has no
      separate market path.

    Self-trade prevention: an incoming order that would trade with a resting order of the same
    owner — anywhere within the volume it would take, in priority order — is rejected whole before
    any fill (see :meth:`submit`).
    """

    __slots__ = ("_ask_levels", "_ask_prices", "_bid_levels", "_bid_prices", "_level_of", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        # Sorted ascending; the best price is the last element (asks are stored negated).
        self._bid_prices: list[int] = []
        self._ask_prices: list[int] = []
        # Signed price -> level, for the same signed prices as the lists above.
        self._bid_levels: dict[int, _Level] = {}
        self._ask_levels: dict[int, _Level] = {}
        # Key of every resting order -> its level: membership test and O(1) cancel.
        self._level_of: dict[int, _Level] = {}

    # -- orders -----------------------------------------------------------------------------------
    def submit(
        self,
        key: int,
        owner: str,
        buy: bool,
        price: int,
        volume: int,
        ioc: bool = False,
        all_or_none: bool = False,
    ) -> Submission:
        """Match an incoming order against the book, then rest or cancel what is left.

        ``all_or_none`` only means something with ``ioc=True`` (FOK); a resting all-or-none order
        is not a thing this exchange offers, so with ``ioc=False`` it is ignored. The fill-or-kill
        decision and the self-trade check are both made *before* any fill, so a rejected order
        leaves the book exactly as it was.

        Raises ``ValueError`` for a non-positive volume or a key that is already resting: either
        is a bug in the caller, and silently accepting it would corrupt the book.
        """
        if volume <= 0:
            raise ValueError(f"volume must be positive, got {volume}")
        level_of = self._level_of
        if key in level_of:
            raise ValueError(f"order key {key} is already resting in {self.symbol}")
        # Resting prices are stored signed so that, on either side, "better" means "greater".
        if buy:
            signed, levels, prices = price, self._bid_levels, self._bid_prices
            opposite_levels, opposite_prices = self._ask_levels, self._ask_prices
        else:
            signed, levels, prices = -price, self._ask_levels, self._ask_prices
            opposite_levels, opposite_prices = self._bid_levels, self._bid_prices
        # An opposite level at signed price s crosses this order when -s <= signed.
        bound = -signed
        if opposite_prices and opposite_prices[-1] >= bound:
            rejection = self._check(
                owner, volume, opposite_prices, opposite_levels, bound, ioc and all_or_none
            )
            if rejection is not None:
                return rejection
            fills, volume = self._trade(key, volume, opposite_prices, opposite_levels, bound)
            if not volume:
                return _new_tuple(Submission, (fills, 0, 0, False))
            if ioc:
                return _new_tuple(Submission, (fills, 0, volume, False))
        elif ioc:
            return _cancelled(volume)
        else:
            fills = _NO_FILLS

        level = levels.get(signed)
        if level is None:
            level = levels[signed] = _Level(buy, price)
            if not prices or signed > prices[-1]:
                prices.append(signed)  # a new best price: the common case near the touch
            else:
                insort(prices, signed)
        level.volumes[key] = volume
        level.owners[key] = owner
        level.total += volume
        level_of[key] = level
        if fills:
            return _new_tuple(Submission, (fills, volume, 0, False))
        # _rested() inlined: this is the most frequent return of the exchange.
        return _RESTED[volume] if volume < _COMMON_VOLUMES else _rested(volume)

    def cancel(self, key: int) -> int:
        """Remove a resting order; return the volume removed, 0 if the key was not resting.

        Cancelling an unknown or already finished key is not an error here: the engine decides
        what to tell the client, the book only reports that nothing was resting.
        """
        level = self._level_of.pop(key, None)
        if level is None:
            return 0
        volume = level.volumes.pop(key)
        del level.owners[key]
        if level.volumes:
            level.total -= volume
            return volume
        signed = level.signed
        if level.buy:
            prices, levels = self._bid_prices, self._bid_levels
        else:
            prices, levels = self._ask_prices, self._ask_levels
        if prices[-1] == signed:
            prices.pop()
        else:
            del prices[bisect_left(prices, signed)]
        del levels[signed]
        return volume

    # -- queries ----------------------------------------------------------------------------------
    def volume_left(self, key: int) -> int:
        """Resting volume of the order with this key, 0 if it is not resting."""
        level = self._level_of.get(key)
        return 0 if level is None else level.volumes[key]

    def __contains__(self, key: object) -> bool:
        return key in self._level_of

    def __len__(self) -> int:
        """Number of resting orders."""
        return len(self._level_of)

    def best_bid(self) -> int | None:
        """Highest resting buy price in ticks, or None if there are no bids."""
        prices = self._bid_prices
        return prices[-1] if prices else None

    def best_ask(self) -> int | None:
        """Lowest resting sell price in ticks, or None if there are no asks."""
        prices = self._ask_prices
        return -prices[-1] if prices else None

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``levels`` price levels of each side as ``(price_ticks, total_volume)``.

        Bids come highest first and asks lowest first, i.e. both best first, which is the order
        DIFF quotes (``bid_price1..5``, ``ask_price1..5``) list them in.
        """
        if levels <= 0:
            return [], []
        bid_levels, ask_levels = self._bid_levels, self._ask_levels
        bids = [(bid_levels[s].price, bid_levels[s].total) for s in reversed(self._bid_prices[-levels:])]
        asks = [(ask_levels[s].price, ask_levels[s].total) for s in reversed(self._ask_prices[-levels:])]
        return bids, asks

    def resting_orders(self) -> Iterator[tuple[int, str, bool, int, int]]:
        """Every resting order as ``(key, owner, buy, price, volume_left)``.

        Bids first, then asks; each side best price first and, within a price, oldest first — so
        re-submitting them in this order (e.g. from a checkpoint) rebuilds the same book with the
        same priorities.
        """
        for prices, side_levels in (
            (self._bid_prices, self._bid_levels),
            (self._ask_prices, self._ask_levels),
        ):
            for signed in reversed(prices):
                level = side_levels[signed]
                owners = level.owners
                for key, volume in level.volumes.items():
                    yield key, owners[key], level.buy, level.price, volume

    def __repr__(self) -> str:
        return f"<OrderBook {self.symbol} bid={self.best_bid()} ask={self.best_ask()} orders={len(self)}>"

    # -- internals --------------------------------------------------------------------------------
    @staticmethod
    def _check(
        owner: str, volume: int, prices: list[int], levels: dict[int, _Level], bound: int, fill_or_kill: bool
    ) -> Submission | None:
        """The rejection for an order about to cross, or None if it may trade.

        Read-only walk over the makers the order would trade with, in priority order, up to its
        volume: a maker of the same owner rejects it for self-trade; for fill-or-kill, running out
        of crossing volume kills it. Looking only as far as the order would reach means an owner's
        own deeper orders do not block a trade that would never touch them.
        """
        wanted = volume
        index = len(prices) - 1
        while index >= 0 and prices[index] >= bound:
            level = levels[prices[index]]
            if level.total >= wanted:
                # The walk ends inside this level: only makers up to `wanted` matter.
                volumes = level.volumes
                for maker, maker_owner in level.owners.items():
                    if maker_owner == owner:
                        return _self_trade(volume)
                    wanted -= volumes[maker]
                    if wanted <= 0:
                        break
                return None
            if owner in level.owners.values():
                return _self_trade(volume)
            wanted -= level.total
            index -= 1
        return _cancelled(volume) if fill_or_kill else None

    def _trade(
        self, taker: int, volume: int, prices: list[int], levels: dict[int, _Level], bound: int
    ) -> tuple[list[Fill], int]:
        """Fill `volume` against the opposite side down to `bound`: the fills, best first, and the
        volume left over.

        Levels the order takes whole are dropped without touching their dicts. In the level where
        the order ends, the completely filled makers are a prefix of the level's dicts; they are
        deleted after the loop, because a dict must not change size while it is iterated.
        """
        fills: list[Fill] = []
        append = fills.append
        level_of = self._level_of
        while prices and prices[-1] >= bound:
            signed = prices[-1]
            level = levels[signed]
            volumes = level.volumes
            level_price = level.price
            if level.total <= volume:
                for maker, maker_volume in volumes.items():
                    append(_new_tuple(Fill, (maker, taker, level_price, maker_volume)))
                    del level_of[maker]
                volume -= level.total
                prices.pop()
                del levels[signed]
                if volume:
                    continue
                break
            # The order ends inside this level.
            level.total -= volume
            first = len(fills)
            partial = 0
            for maker, maker_volume in volumes.items():
                if maker_volume > volume:
                    volumes[maker] = maker_volume - volume  # same key: allowed while iterating
                    append(_new_tuple(Fill, (maker, taker, level_price, volume)))
                    partial = 1
                    break
                append(_new_tuple(Fill, (maker, taker, level_price, maker_volume)))
                volume -= maker_volume
                if not volume:
                    break
            owners = level.owners
            for position in range(first, len(fills) - partial):
                maker = fills[position][0]
                del volumes[maker], owners[maker], level_of[maker]
            return fills, 0
        return fills, volume
