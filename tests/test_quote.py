"""QuoteBook: every DIFF quote field, trades, depth, patches that carry only what changed."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from qaex.core.instruments import InstrumentRegistry
from qaex.core.quote import QuoteBook, format_datetime
from qaex.protocol.diff import NAN_ON_WIRE, market_patch

CST = timezone(timedelta(hours=8))
T0 = int(datetime(2025, 11, 24, 9, 0, tzinfo=CST).timestamp()) * 1_000_000_000

DIFF_QUOTE_FIELDS = (
    ["instrument_id", "exchange_id", "instrument_name", "ins_class", "product_id", "datetime"]
    + ["last_price", "highest", "lowest", "open", "close", "average", "volume", "amount"]
    + ["open_interest", "pre_open_interest", "pre_close", "pre_settlement", "settlement"]
    + ["upper_limit", "lower_limit", "price_tick", "price_decs", "volume_multiple"]
    + ["max_limit_order_volume", "min_limit_order_volume", "max_market_order_volume"]
    + ["min_market_order_volume", "expired", "expire_datetime", "trading_time", "margin", "commission"]
    + [f"{side}_{kind}{n}" for side in ("ask", "bid") for kind in ("price", "volume") for n in range(1, 6)]
)


@pytest.fixture
def book() -> QuoteBook:
    return QuoteBook(InstrumentRegistry()["SHFE.cu2601"], now_ns=T0)


def test_full_quote_has_every_diff_field(book: QuoteBook) -> None:
    assert set(DIFF_QUOTE_FIELDS) <= set(book.full())


def test_static_fields_describe_the_contract(book: QuoteBook) -> None:
    quote = book.full()
    assert quote["instrument_id"] == "SHFE.cu2601"
    assert quote["exchange_id"] == "SHFE"
    assert quote["ins_class"] == "FUTURE"
    assert quote["product_id"] == "cu"
    assert quote["price_tick"] == 10.0
    assert quote["price_decs"] == 0
    assert quote["volume_multiple"] == 5
    # The default policy (QAEX_MARKET_HOURS=always) publishes round-the-clock sessions...
    assert quote["trading_time"] == {"day": [["00:00:00", "18:00:00"]], "night": [["18:00:00", "72:00:00"]]}
    # ... the contract's own under "exchange"; the instrument keeps its own either way.
    real = QuoteBook(book.instrument, now_ns=T0, market_hours="exchange").full()["trading_time"]
    assert real["night"] == [["21:00:00", "25:00:00"]] == book.instrument.trading_time.night
    assert quote["upper_limit"] == 92020.0 and quote["lower_limit"] == 79980.0


def test_margin_and_commission_are_per_lot_at_pre_settlement(book: QuoteBook) -> None:
    quote = book.full()
    assert quote["margin"] == pytest.approx(86000.0 * 5 * 0.10)
    assert quote["commission"] == pytest.approx(86000.0 * 5 * 0.00005)


def test_datetime_is_exchange_local_with_microseconds(book: QuoteBook) -> None:
    assert book.full()["datetime"] == "2025-11-24 09:00:00.000000"
    assert format_datetime(T0 + 1_234_567_000) == "2025-11-24 09:00:01.234567"


def test_a_book_created_without_a_time_has_an_empty_datetime_until_its_first_event() -> None:
    book = QuoteBook(InstrumentRegistry()["SHFE.cu2601"])
    assert book.full()["datetime"] == ""
    book.on_depth([(86000.0, 1)], [], T0)
    assert book.full()["datetime"] == "2025-11-24 09:00:00.000000"


def test_trade_updates_last_volume_amount_average_high_low_open(book: QuoteBook) -> None:
    book.on_trade(86010.0, 2, T0 + 1, open_interest=180002)
    book.on_trade(86050.0, 1, T0 + 2, open_interest=180003)
    book.on_trade(85990.0, 3, T0 + 3, open_interest=180001)
    quote = book.full()
    assert quote["last_price"] == 85990.0
    assert quote["open"] == 86010.0
    assert quote["highest"] == 86050.0
    assert quote["lowest"] == 85990.0
    assert quote["volume"] == 6
    amount = (86010.0 * 2 + 86050.0 * 1 + 85990.0 * 3) * 5
    assert quote["amount"] == pytest.approx(amount)
    assert quote["average"] == pytest.approx(amount / 6 / 5)
    assert quote["open_interest"] == 180001


def is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def test_prices_with_no_value_are_nan_and_travel_over_diff_as_the_nan_marker(book: QuoteBook) -> None:
    quote = book.full()
    wire = market_patch({"quotes": {"SHFE.cu2601": quote}})["quotes"]["SHFE.cu2601"]
    for key in ("last_price", "open", "highest", "lowest", "close", "average", "settlement", "bid_price1"):
        assert is_nan(quote[key])
        assert wire[key] == NAN_ON_WIRE
    assert quote["bid_volume1"] == 0 and wire["bid_volume1"] == 0


def test_depth_updates_five_levels_and_pads_missing_ones(book: QuoteBook) -> None:
    bids = [(86000.0 - 10 * i, i + 1) for i in range(5)]
    book.on_depth(bids, [(86010.0, 7), (86020.0, 8)], T0 + 5)
    quote = book.full()
    assert [quote[f"bid_price{n}"] for n in range(1, 6)] == [86000.0, 85990.0, 85980.0, 85970.0, 85960.0]
    assert [quote[f"bid_volume{n}"] for n in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [quote[f"ask_price{n}"] for n in range(1, 3)] == [86010.0, 86020.0]
    assert is_nan(quote["ask_price3"])
    assert [quote[f"ask_volume{n}"] for n in range(1, 4)] == [7, 8, 0]


def test_an_emptied_level_is_patched_to_the_nan_marker_not_null(book: QuoteBook) -> None:
    book.on_depth([], [(86010.0, 7)], T0)
    book.take_patch()
    book.on_depth([], [], T0 + 1)
    patch = book.take_patch()
    assert patch is not None
    changed = patch["quotes"]["SHFE.cu2601"]
    assert is_nan(changed["ask_price1"]) and changed["ask_volume1"] == 0
    wire = market_patch(patch)
    assert wire["quotes"]["SHFE.cu2601"]["ask_price1"] == NAN_ON_WIRE
    assert b"null" not in msgspec.json.encode(wire)
    assert is_nan(patch["quotes"]["SHFE.cu2601"]["ask_price1"])  # the core's patch is left as it is


def test_a_price_that_stays_nan_is_no_change(book: QuoteBook) -> None:
    book.take_patch()
    book.on_depth([], [], T0 + 1_000)  # nothing but the time moves; every price is still NaN
    patch = book.take_patch()
    assert patch == {"quotes": {"SHFE.cu2601": {"datetime": "2025-11-24 09:00:00.000001"}}}


def test_first_take_patch_is_the_whole_quote(book: QuoteBook) -> None:
    assert book.take_patch() == {"quotes": {"SHFE.cu2601": book.full()}}


def test_take_patch_returns_only_changed_fields(book: QuoteBook) -> None:
    book.take_patch()
    book.on_trade(86010.0, 1, T0 + 1_000, open_interest=180001)
    patch = book.take_patch()
    assert patch is not None
    assert set(patch["quotes"]["SHFE.cu2601"]) == {
        "datetime", "last_price", "open", "highest", "lowest", "average", "volume", "amount", "open_interest",
    }  # fmt: skip


def test_take_patch_is_none_when_nothing_changed(book: QuoteBook) -> None:
    book.take_patch()
    assert book.take_patch() is None


def test_a_change_undone_before_the_take_gives_no_patch(book: QuoteBook) -> None:
    book.on_depth([(86000.0, 1)], [], T0)
    book.take_patch()
    book.on_depth([(86000.0, 2)], [], T0)
    book.on_depth([(86000.0, 1)], [], T0)
    assert book.take_patch() is None


def test_a_thousand_changes_between_takes_give_one_patch_with_the_latest_values(book: QuoteBook) -> None:
    book.take_patch()
    for i in range(1_000):
        book.on_trade(86000.0 + 10 * (i % 7), 1, T0 + i, open_interest=180000 + i)
    patch = book.take_patch()
    assert patch is not None
    assert patch["quotes"]["SHFE.cu2601"]["volume"] == 1_000
    assert patch["quotes"]["SHFE.cu2601"]["open_interest"] == 180999
    assert book.take_patch() is None


def test_settle_publishes_settlement_and_close(book: QuoteBook) -> None:
    book.on_trade(86100.0, 1, T0, open_interest=180001)
    book.on_settle(86080.0)
    quote = book.full()
    assert quote["settlement"] == 86080.0
    assert quote["close"] == 86100.0


def test_new_trading_day_rolls_pre_fields_and_limits_and_resets_the_day(book: QuoteBook) -> None:
    book.on_trade(86100.0, 4, T0, open_interest=180004)
    book.on_settle(86080.0)
    book.take_patch()
    book.new_trading_day(T0 + 86_400 * 1_000_000_000)
    quote = book.full()
    assert [quote[f"pre_{key}"] for key in ("settlement", "close", "open_interest")] == [86080, 86100, 180004]
    assert quote["upper_limit"] == 92100.0  # floor(86080 * 1.07 / 10) * 10, on the tick grid
    assert quote["margin"] == pytest.approx(86080.0 * 5 * 0.10)
    assert quote["volume"] == 0 and quote["amount"] == 0.0
    for key in ("open", "highest", "lowest", "close", "average", "settlement"):
        assert is_nan(quote[key])
    assert quote["last_price"] == 86100.0
    assert book.instrument.pre_settlement == 86080.0  # the router's limits follow


def test_to_tick_carries_the_diff_tick_fields(book: QuoteBook) -> None:
    book.on_depth([(86000.0, 3)], [(86010.0, 4)], T0)
    book.on_trade(86010.0, 1, T0 + 7, open_interest=180001)
    tick = book.to_tick()
    totals = {"datetime", "last_price", "average", "highest", "lowest", "volume", "amount", "open_interest"}
    assert set(tick) == totals | {key for key in DIFF_QUOTE_FIELDS if key[:4] in ("bid_", "ask_")}
    assert tick["datetime"] == T0 + 7
    assert tick["last_price"] == 86010.0 and tick["volume"] == 1
    assert tick["bid_price1"] == 86000.0 and tick["ask_volume1"] == 4
    assert is_nan(tick["bid_price2"])
    wire = market_patch({"ticks": {"SHFE.cu2601": {"last_id": 0, "data": {"0": tick}}}})
    assert wire["ticks"]["SHFE.cu2601"]["data"]["0"]["bid_price2"] == NAN_ON_WIRE
    assert math.isclose(tick["average"], 86010.0)
