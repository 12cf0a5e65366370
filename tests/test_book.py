"""The order book's matching rules, one behaviour per test (prices are ticks, keys are seqnos)."""

from __future__ import annotations

import pytest

from qaex.core.book import Fill, OrderBook, Submission

UPPER_LIMIT = 1_100
LOWER_LIMIT = 900


@pytest.fixture
def book() -> OrderBook:
    return OrderBook("SHFE.cu2601")


def test_empty_book_has_no_best_prices_and_no_depth(book: OrderBook) -> None:
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ([], [])


def test_order_that_does_not_cross_rests(book: OrderBook) -> None:
    assert book.submit(1, "alice", True, 1000, 5) == Submission([], 5, 0, False)
    assert book.best_bid() == 1000
    assert book.volume_left(1) == 5
    assert 1 in book


def test_better_price_trades_first(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1002, 5)
    book.submit(2, "bob", False, 1001, 5)
    result = book.submit(3, "carol", True, 1002, 5)
    assert result.fills == [Fill(maker=2, taker=3, price=1001, volume=5)]
    assert book.volume_left(1) == 5


def test_earlier_order_trades_first_within_a_price(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 5)
    book.submit(2, "bob", False, 1001, 5)
    result = book.submit(3, "carol", True, 1001, 5)
    assert result.fills == [Fill(1, 3, 1001, 5)]
    assert book.volume_left(2) == 5


def test_fills_at_the_resting_order_price(book: OrderBook) -> None:
    book.submit(1, "alice", True, 1000, 5)
    result = book.submit(2, "bob", False, 990, 5)
    assert result.fills == [Fill(1, 2, 1000, 5)]


def test_partial_fill_leaves_the_rest_of_the_resting_order_in_place(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 10)
    book.submit(2, "bob", False, 1001, 10)
    result = book.submit(3, "carol", True, 1001, 4)
    assert result == Submission([Fill(1, 3, 1001, 4)], 0, 0, False)
    assert book.volume_left(1) == 6
    assert [key for key, *_ in book.resting_orders()] == [1, 2]  # still first in time
    assert book.depth(1) == ([], [(1001, 16)])


def test_incoming_order_sweeps_several_levels_and_orders(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 2)
    book.submit(2, "bob", False, 1001, 3)
    book.submit(3, "alice", False, 1003, 4)
    result = book.submit(4, "carol", True, 1003, 8)
    assert result.fills == [Fill(1, 4, 1001, 2), Fill(2, 4, 1001, 3), Fill(3, 4, 1003, 3)]
    assert book.volume_left(3) == 1
    assert book.best_ask() == 1003


def test_limit_order_rests_its_unfilled_remainder_at_its_price(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    result = book.submit(2, "bob", True, 1002, 10)
    assert result == Submission([Fill(1, 2, 1001, 3)], 7, 0, False)
    assert book.best_bid() == 1002
    assert book.best_ask() is None
    assert book.volume_left(2) == 7


def test_ioc_cancels_its_unfilled_remainder(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    book.submit(2, "alice", False, 1005, 3)
    result = book.submit(3, "bob", True, 1002, 10, ioc=True)
    assert result == Submission([Fill(1, 3, 1001, 3)], 0, 7, False)
    assert 3 not in book
    assert book.best_bid() is None


def test_ioc_that_does_not_cross_is_cancelled_whole(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    assert book.submit(2, "bob", True, 1000, 5, ioc=True) == Submission([], 0, 5, False)
    assert book.volume_left(1) == 3


def test_fok_fills_completely_across_several_levels(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    book.submit(2, "bob", False, 1002, 3)
    book.submit(3, "carol", False, 1003, 3)
    result = book.submit(4, "dave", True, 1002, 6, ioc=True, all_or_none=True)
    assert result == Submission([Fill(1, 4, 1001, 3), Fill(2, 4, 1002, 3)], 0, 0, False)
    assert book.depth(5) == ([], [(1003, 3)])


def test_fok_that_cannot_fill_completely_within_its_price_trades_nothing(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    book.submit(2, "bob", False, 1002, 3)
    book.submit(3, "carol", False, 1003, 3)  # enough volume exists, but beyond the limit price
    result = book.submit(4, "dave", True, 1002, 7, ioc=True, all_or_none=True)
    assert result == Submission([], 0, 7, False)
    assert book.depth(5) == ([], [(1001, 3), (1002, 3), (1003, 3)])


def test_fok_that_does_not_cross_is_cancelled_whole(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 3)
    assert book.submit(2, "bob", True, 1000, 1, ioc=True, all_or_none=True) == Submission([], 0, 1, False)


def test_market_order_is_an_ioc_at_the_daily_limit(book: OrderBook) -> None:
    book.submit(1, "alice", False, 1001, 2)
    book.submit(2, "bob", False, 1090, 2)
    result = book.submit(3, "carol", True, UPPER_LIMIT, 10, ioc=True)
    assert result == Submission([Fill(1, 3, 1001, 2), Fill(2, 3, 1090, 2)], 0, 6, False)
    assert book.best_ask() is None
    assert book.best_bid() is None


def test_market_sell_trades_down_to_the_lower_limit(book: OrderBook) -> None:
    book.submit(1, "alice", True, 999, 2)
    book.submit(2, "bob", True, 910, 2)
    result = book.submit(3, "carol", False, LOWER_LIMIT, 3, ioc=True)
    assert result == Submission([Fill(1, 3, 999, 2), Fill(2, 3, 910, 1)], 0, 0, False)


def test_order_that_would_trade_with_its_owners_resting_order_is_rejected_whole(book: OrderBook) -> None:
    book.submit(1, "bob", False, 1001, 2)
    book.submit(2, "alice", False, 1002, 2)
    result = book.submit(3, "alice", True, 1002, 4)
    assert result == Submission([], 0, 4, True)
    assert book.depth(5) == ([], [(1001, 2), (1002, 2)])  # nothing traded with bob either
    assert 3 not in book


def test_order_that_trades_only_with_others_is_not_rejected_for_self_trade(book: OrderBook) -> None:
    book.submit(1, "bob", False, 1001, 2)
    book.submit(2, "alice", False, 1001, 2)  # behind bob in time: never reached by 2 lots
    book.submit(3, "alice", False, 1005, 2)  # beyond the limit price
    result = book.submit(4, "alice", True, 1002, 2)
    assert result == Submission([Fill(1, 4, 1001, 2)], 0, 0, False)


def test_owners_resting_order_on_the_same_side_does_not_block_a_trade(book: OrderBook) -> None:
    book.submit(1, "alice", True, 999, 2)
    book.submit(2, "bob", False, 1001, 2)
    assert book.submit(3, "alice", True, 1001, 2).fills == [Fill(2, 3, 1001, 2)]


def test_cancel_returns_the_volume_left_and_removes_the_order(book: OrderBook) -> None:
    book.submit(1, "alice", True, 1000, 5)
    book.submit(2, "bob", False, 1000, 2)
    assert book.cancel(1) == 3
    assert 1 not in book
    assert book.volume_left(1) == 0


def test_cancelling_the_last_order_of_a_level_removes_the_level(book: OrderBook) -> None:
    book.submit(1, "alice", True, 1000, 5)
    book.submit(2, "alice", True, 999, 5)
    book.cancel(1)
    assert book.best_bid() == 999
    assert book.depth(5) == ([(999, 5)], [])


def test_cancelling_an_unknown_key_returns_zero(book: OrderBook) -> None:
    book.submit(1, "alice", True, 1000, 5)
    assert book.cancel(42) == 0
    assert book.cancel(1) == 5
    assert book.cancel(1) == 0


def test_depth_aggregates_each_price_and_lists_both_sides_best_first(book: OrderBook) -> None:
    for key, (buy, price, volume) in enumerate(
        [(True, 998, 1), (True, 1000, 2), (True, 1000, 3), (True, 999, 4), (False, 1003, 5),
         (False, 1001, 6), (False, 1002, 7), (False, 1001, 8)],
        start=1,
    ):  # fmt: skip
        book.submit(key, "alice", buy, price, volume)
    assert book.depth(2) == ([(1000, 5), (999, 4)], [(1001, 14), (1002, 7)])
    assert book.depth(10) == ([(1000, 5), (999, 4), (998, 1)], [(1001, 14), (1002, 7), (1003, 5)])
    assert book.depth(0) == ([], [])


def test_resting_orders_lists_bids_then_asks_in_priority_order(book: OrderBook) -> None:
    book.submit(1, "alice", True, 999, 1)
    book.submit(2, "bob", True, 1000, 2)
    book.submit(3, "carol", True, 1000, 3)
    book.submit(4, "dave", False, 1002, 4)
    book.submit(5, "erin", False, 1001, 5)
    assert list(book.resting_orders()) == [
        (2, "bob", True, 1000, 2),
        (3, "carol", True, 1000, 3),
        (1, "alice", True, 999, 1),
        (5, "erin", False, 1001, 5),
        (4, "dave", False, 1002, 4),
    ]


def test_submitting_a_key_that_is_resting_is_refused(book: OrderBook) -> None:
    book.submit(1, "alice", True, 1000, 5)
    with pytest.raises(ValueError, match="already resting"):
        book.submit(1, "alice", True, 1000, 5)


@pytest.mark.parametrize("volume", [0, -1])
def test_non_positive_volume_is_refused(book: OrderBook, volume: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        book.submit(1, "alice", True, 1000, volume)


def test_large_volumes_are_reported_like_small_ones(book: OrderBook) -> None:
    assert book.submit(1, "alice", True, 1000, 5000) == Submission([], 5000, 0, False)
    assert book.submit(2, "bob", True, 990, 5000, ioc=True) == Submission([], 0, 5000, False)
    assert book.submit(3, "alice", False, 1000, 5000) == Submission([], 0, 5000, True)


def test_same_sequence_gives_same_results() -> None:
    def run() -> list[object]:
        book = OrderBook("SHFE.cu2601")
        results: list[object] = []
        for key in range(1, 400):
            buy = key % 3 != 0
            price = 1000 + (key * 7919) % 11 - 5
            if key % 5 == 0:
                results.append(book.cancel(key - 3))
            else:
                results.append(book.submit(key, f"user{key % 4}", buy, price, key % 9 + 1, ioc=key % 7 == 0))
        results.append(list(book.resting_orders()))
        return results

    assert run() == run()
