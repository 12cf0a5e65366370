"""Invariants of the order book over random sequences of submits and cancels.

Each sequence is replayed on the real book and on a deliberately naive reference model (a flat list
of resting orders, sorted afresh for every match). The two must agree on every result and on the
resting orders after every step; on top of that the book must never be crossed and volume must be
conserved, both per fill and per order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qaex.core.book import Fill, OrderBook, Submission

OWNERS = ("alice", "bob", "carol")


@dataclass
class Resting:
    key: int
    owner: str
    buy: bool
    price: int
    volume: int


@dataclass
class ReferenceBook:
    """Price-time priority the slow, obvious way."""

    orders: list[Resting] = field(default_factory=list)  # in arrival order

    def submit(
        self, key: int, owner: str, buy: bool, price: int, volume: int, ioc: bool, all_or_none: bool
    ) -> Submission:
        crossing = [
            order
            for order in self.orders
            if order.buy != buy and (order.price <= price if buy else order.price >= price)
        ]
        # Stable sort: arrival order breaks ties within a price.
        crossing.sort(key=lambda order: order.price if buy else -order.price)
        reach, wanted = [], volume
        for order in crossing:
            if wanted <= 0:
                break
            reach.append(order)
            wanted -= order.volume
        if any(order.owner == owner for order in reach):
            return Submission([], 0, volume, True)
        if ioc and all_or_none and wanted > 0:
            return Submission([], 0, volume, False)
        fills, left = [], volume
        for order in reach:
            traded = min(left, order.volume)
            fills.append(Fill(order.key, key, order.price, traded))
            order.volume -= traded
            left -= traded
        self.orders = [order for order in self.orders if order.volume]
        if not left or ioc:
            return Submission(fills, 0, left, False)
        self.orders.append(Resting(key, owner, buy, price, left))
        return Submission(fills, left, 0, False)

    def cancel(self, key: int) -> int:
        for index, order in enumerate(self.orders):
            if order.key == key:
                del self.orders[index]
                return order.volume
        return 0

    def resting(self) -> list[tuple[int, str, bool, int, int]]:
        bids = sorted((o for o in self.orders if o.buy), key=lambda o: -o.price)
        asks = sorted((o for o in self.orders if not o.buy), key=lambda o: o.price)
        return [(o.key, o.owner, o.buy, o.price, o.volume) for o in bids + asks]


class Submit(NamedTuple):
    owner: str
    buy: bool
    price: int
    volume: int
    ioc: bool
    all_or_none: bool


class Cancel(NamedTuple):
    key: int


submits = st.builds(
    Submit,
    st.sampled_from(OWNERS),
    st.booleans(),
    st.integers(95, 105),  # a narrow range so that orders often cross
    st.integers(1, 12),
    st.booleans(),
    st.booleans(),
)
cancels = st.builds(Cancel, st.integers(0, 60))
operations = st.lists(st.one_of(submits, submits, submits, cancels), max_size=60)

fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(operations)
def test_book_agrees_with_the_reference_model(ops: list[Submit | Cancel]) -> None:
    book, reference = OrderBook("TEST"), ReferenceBook()
    for key, op in enumerate(ops):
        if isinstance(op, Cancel):
            assert book.cancel(op.key) == reference.cancel(op.key)
        else:
            assert book.submit(key, *op) == reference.submit(key, *op)
        assert list(book.resting_orders()) == reference.resting()


@fast
@given(operations)
def test_book_is_never_crossed(ops: list[Submit | Cancel]) -> None:
    book = OrderBook("TEST")
    for key, op in enumerate(ops):
        if isinstance(op, Cancel):
            book.cancel(op.key)
        else:
            book.submit(key, *op)
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_bid is not None and best_ask is not None:
            assert best_bid < best_ask


@fast
@given(operations)
def test_volume_is_conserved(ops: list[Submit | Cancel]) -> None:
    book = OrderBook("TEST")
    submitted: dict[int, int] = {}
    filled: dict[int, int] = {}
    cancelled: dict[int, int] = {}
    for key, op in enumerate(ops):
        if isinstance(op, Cancel):
            cancelled[op.key] = cancelled.get(op.key, 0) + book.cancel(op.key)
            continue
        before = {k: v for k, _o, _b, _p, v in book.resting_orders()}
        result = book.submit(key, *op)
        submitted[key] = op.volume
        taken = sum(fill.volume for fill in result.fills)
        # What the taker got is what it asked for, less what rested or was cancelled ...
        assert taken + result.rested + result.cancelled == op.volume
        assert book.volume_left(key) == result.rested
        cancelled[key] = result.cancelled
        # ... and exactly what the makers gave up.
        for fill in result.fills:
            assert fill.taker == key
            assert fill.volume > 0
            filled[fill.maker] = filled.get(fill.maker, 0) + fill.volume
            filled[key] = filled.get(key, 0) + fill.volume
        makers = {fill.maker for fill in result.fills}
        assert sum(before[maker] - book.volume_left(maker) for maker in makers) == taken
    # Every order's volume = filled + resting + cancelled.
    for key, volume in submitted.items():
        assert filled.get(key, 0) + book.volume_left(key) + cancelled.get(key, 0) == volume
