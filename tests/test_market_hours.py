"""QAEX_MARKET_HOURS: the session rule (qaex.core.calendar.sessions), what each policy publishes and
enforces (engine, quotes, ins_query, HTTP), the settlement default, the market maker and the quote
restamp at a session's open, and a real server under faketime.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import faketime_env, launch, open_user, wait_ready

from qaex.config import Config, ConfigError
from qaex.core import ins_query
from qaex.core.calendar import (
    ALWAYS_OPEN,
    CHINA_TZ,
    default_holiday_calendar,
    is_open,
    next_open,
    next_opening,
    next_session_start,
)
from qaex.core.commands import Insert, OpenAccount
from qaex.core.engine import Engine
from qaex.core.errors import RiskError
from qaex.core.instruments import InstrumentRegistry, TradingTime
from qaex.core.orders import InsertOrder
from qaex.core.quote import QuoteBook
from qaex.exchange.exchange import Exchange
from qaex.exchange.journal import Journal
from qaex.exchange.market import MarketData
from qaex.exchange.simulator import MAKER, TAKER, LiquiditySimulator

S = 1_000_000_000
MINUTE = 60 * S
CALENDAR = default_holiday_calendar()
REGISTRY = InstrumentRegistry()
CU = REGISTRY["SHFE.cu2601"].trading_time  # night 21:00-01:00
AU = REGISTRY["SHFE.au2602"].trading_time  # night 21:00-02:30
RB = REGISTRY["SHFE.rb2601"].trading_time  # night 21:00-23:00
IF = REGISTRY["CFFEX.IF2512"].trading_time  # 09:30-11:30, 13:00-15:00, no night


def china(text: str) -> int:
    """Epoch ns of a China-time ``"YYYY-MM-DD HH:MM[:SS]"``."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=CHINA_TZ).timestamp()) * S


def shown(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / S, CHINA_TZ).strftime("%Y-%m-%d %H:%M")


# -- the session rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trading_time", "moment", "open_", "opens"),
    [
        (CU, "2026-12-05 12:00", False, "2026-12-07 09:00"),  # Saturday noon: Monday's day session
        (CU, "2026-12-02 12:00", False, "2026-12-02 13:30"),  # the lunch break of commodities
        (CU, "2026-12-02 10:20", False, "2026-12-02 10:30"),  # SHFE's 10:15-10:30 break
        (CU, "2026-12-02 10:14", True, "2026-12-02 10:14"),
        (CU, "2026-12-02 15:00", False, "2026-12-02 21:00"),  # a session is [start, end)
        (CU, "2026-12-02 23:30", True, "2026-12-02 23:30"),  # night session, before midnight
        (CU, "2026-12-03 00:30", True, "2026-12-03 00:30"),  # ... and after (cu ends at 01:00)
        (CU, "2026-12-03 01:00", False, "2026-12-03 09:00"),
        (RB, "2026-12-02 23:30", False, "2026-12-03 09:00"),  # rb's night ends at 23:00
        (AU, "2026-12-03 02:00", True, "2026-12-03 02:00"),  # au's at 02:30
        (CU, "2026-12-04 21:30", True, "2026-12-04 21:30"),  # Friday night (Monday's) exists
        (CU, "2026-12-05 00:30", True, "2026-12-05 00:30"),  # ... into Saturday
        (CU, "2026-12-05 01:00", False, "2026-12-07 09:00"),
        (CU, "2026-12-06 21:30", False, "2026-12-07 09:00"),  # no session on a Sunday evening
        # The evening before a holiday has no night session: Thursday 2026-09-24 (Mid-Autumn Friday),
        # 2026-09-30 (National Day), Friday 2026-02-13 (the Spring Festival week).
        (CU, "2026-09-24 21:30", False, "2026-09-28 09:00"),
        (CU, "2026-09-30 21:30", False, "2026-10-08 09:00"),
        (CU, "2026-02-13 21:30", False, "2026-02-24 09:00"),
        (CU, "2026-10-08 21:30", True, "2026-10-08 21:30"),  # the first day after it has one again
        (CU, "2026-10-01 10:00", False, "2026-10-08 09:00"),  # a holiday weekday
        (IF, "2026-12-02 09:20", False, "2026-12-02 09:30"),  # CFFEX opens at 09:30
        (IF, "2026-12-02 09:30", True, "2026-12-02 09:30"),
        (IF, "2026-12-02 12:00", False, "2026-12-02 13:00"),
        (IF, "2026-12-02 21:30", False, "2026-12-03 09:30"),  # no night session at all
    ],
)
def test_is_open_and_next_open(trading_time: TradingTime, moment: str, open_: bool, opens: str) -> None:
    ts = china(moment)
    assert is_open(trading_time, ts, CALENDAR) is open_
    assert shown(next_open(trading_time, ts, CALENDAR)) == opens
    if open_:
        assert next_open(trading_time, ts, CALENDAR) == ts


def test_a_night_end_past_midnight_may_be_spelled_either_way() -> None:
    day = [list(span) for span in CU.day]
    late = TradingTime(day=day, night=[["21:00:00", "26:30:00"]])
    early = TradingTime(day=day, night=[["21:00:00", "02:30:00"]])
    for moment in range(china("2026-12-01 00:00"), china("2026-12-08 00:00"), 7 * MINUTE):
        assert is_open(late, moment, CALENDAR) == is_open(early, moment, CALENDAR) == is_open(AU, moment)


def test_without_a_calendar_only_weekends_close() -> None:
    assert not is_open(CU, china("2026-10-01 10:00"), CALENDAR)
    assert is_open(CU, china("2026-10-01 10:00"))  # a Thursday, weekends only
    assert not is_open(CU, china("2026-10-03 10:00"))  # a Saturday


def test_next_session_start_and_next_opening() -> None:
    assert shown(next_session_start(CU, china("2026-12-02 09:00"), CALENDAR)) == "2026-12-02 10:30"
    assert shown(next_session_start(CU, china("2026-12-02 08:00"), CALENDAR)) == "2026-12-02 09:00"
    contracts = [("SHFE.cu2601", CU), ("SHFE.rb2601", RB), ("CFFEX.IF2512", IF)]
    at, symbols = next_opening(contracts, china("2026-12-02 08:00"), CALENDAR) or (0, [])
    assert (shown(at), symbols) == ("2026-12-02 09:00", ["SHFE.cu2601", "SHFE.rb2601"])
    at, symbols = next_opening(contracts, at, CALENDAR) or (0, [])
    assert (shown(at), symbols) == ("2026-12-02 09:30", ["CFFEX.IF2512"])
    assert next_opening([("X.none", TradingTime(day=[], night=[]))], at, CALENDAR) is None
    with pytest.raises(ValueError):
        next_open(TradingTime(day=[], night=[]), at, CALENDAR)


def test_sessions_agree_with_tqsdk_on_real_trading_times() -> None:
    """Weekends only (TqSdk knows no holidays): qaex's rule and TqSdk's `_is_in_trading_time` agree at
    every third minute of a week (every session edge is a multiple of 15 minutes), for a night to
    01:00, one to 02:30, and none."""
    from tqsdk.datetime import _is_in_trading_time

    for symbol in ("SHFE.cu2601", "SHFE.au2602", "CFFEX.IF2512"):
        instrument = REGISTRY[symbol]
        quote = QuoteBook(instrument, 0, market_hours="exchange").full()
        for moment in range(china("2026-11-30 00:00"), china("2026-12-07 00:00"), 3 * MINUTE):
            text = dt.datetime.fromtimestamp(moment / S, CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S.%f")
            assert _is_in_trading_time(quote, text, math.nan) == is_open(instrument.trading_time, moment), (
                symbol,
                text,
            )


# -- always: what is published -------------------------------------------------------------------------
def test_always_publishes_hours_tqsdk_reads_as_open_at_every_minute_of_2026() -> None:
    """TqSdk's own `_is_in_trading_time` on a quote qaex renders, at each of the 525,600 minutes of 2026.

    The function depends on the minute only through its trading day (TqSdk's
    `_get_trading_timestamp`, the periods of that day): it is called on the first and last minute of
    every stretch with one trading day, and every other minute is checked against that stretch's
    periods with the function's own comparison (``start <= now < end``), which keeps this under a second.
    """
    from tqsdk.datetime import _get_trading_timestamp, _is_in_trading_time

    quote = QuoteBook(REGISTRY["CFFEX.IF2512"], 0).full()  # a contract with no night session of its own
    assert quote["trading_time"] == ALWAYS_OPEN
    first, end = china("2026-01-01 00:00"), china("2027-01-01 00:00")

    def text(moment: int) -> str:
        return dt.datetime.fromtimestamp(moment / S, CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S.%f")

    checked = 0
    stretch = first
    while stretch < end:  # stretches: [00:00, 18:00) and [18:00, 24:00) of each day
        local = dt.datetime.fromtimestamp(stretch / S, CHINA_TZ)
        stop = min(stretch + (18 if local.hour < 18 else 6) * 3600 * S, end)
        periods = [p for spans in _get_trading_timestamp(quote, text(stretch)).values() for p in spans]
        for moment in range(stretch, stop, MINUTE):
            assert any(start <= moment < finish for start, finish in periods), text(moment)
            checked += 1
        assert _is_in_trading_time(quote, text(stretch), math.nan), text(stretch)
        assert _is_in_trading_time(quote, text(stop - MINUTE), math.nan), text(stop - MINUTE)
        stretch = stop
    assert checked == 525_600


def test_ins_query_publishes_the_policys_trading_time() -> None:
    query = 'query{multi_symbol_info(instrument_id:["CFFEX.IF2512"]){... on basic{trading_time{day night}}}}'
    always = ins_query.answer(query, REGISTRY.values())["multi_symbol_info"]
    assert [row["trading_time"] for row in always] == [ALWAYS_OPEN]
    exchange = ins_query.answer(query, REGISTRY.values(), market_hours="exchange")["multi_symbol_info"]
    assert exchange[0]["trading_time"] == {"day": IF.day, "night": []}
    night_query = 'query{multi_symbol_info(class:["FUTURE"], has_night:false){... on basic{instrument_id}}}'
    assert ins_query.answer(night_query, REGISTRY.values())["multi_symbol_info"] == []
    no_night = ins_query.answer(night_query, REGISTRY.values(), market_hours="exchange")["multi_symbol_info"]
    assert [row["instrument_id"] for row in no_night] == ["CFFEX.IF2512"]


# -- configuration -------------------------------------------------------------------------------------
def test_the_policy_and_its_settlement_time() -> None:
    default = Config.load({})
    assert default.market_hours == "always"
    assert default.settlement_clock == dt.time(18, 0)
    exchange = Config.load({"QAEX_MARKET_HOURS": "exchange"})
    assert exchange.settlement_clock == dt.time(15, 30)
    explicit = Config.load({"QAEX_MARKET_HOURS": "exchange", "QAEX_SETTLEMENT_TIME": "16:05"})
    assert explicit.settlement_clock == dt.time(16, 5)
    assert Config.load({"QAEX_SETTLEMENT_TIME": ""}).settlement_clock is None
    with pytest.raises(ConfigError, match=r"QAEX_MARKET_HOURS: .*always, exchange"):
        Config.load({"QAEX_MARKET_HOURS": "sometimes"})


# -- the engine ----------------------------------------------------------------------------------------
def cu_order(order_id: str) -> InsertOrder:
    return InsertOrder(
        user_id="alice", order_id=order_id, exchange_id="SHFE", instrument_id="cu2601",
        direction="BUY", offset="OPEN", volume=1, limit_price=86000.0,
    )  # fmt: skip


def engine_with_alice(market_hours: Any) -> Engine:
    engine = Engine(market_hours=market_hours, max_orders_per_second=1)
    engine.apply(OpenAccount(ts=china("2026-12-01 09:00"), user_id="alice", password_hash="x", init_cash=1e7))
    engine.flush()
    return engine


def test_an_order_on_saturday_noon_is_refused_whole_under_exchange_only() -> None:
    saturday = china("2026-12-05 12:00")
    engine = engine_with_alice("exchange")
    with pytest.raises(RiskError) as refused:
        engine.apply(Insert(ts=saturday, order=cu_order("o1")))
    assert refused.value.code == "market_closed" and refused.value.diff_code == 425
    assert "SHFE.cu2601" in refused.value.message and "2026-12-07 09:00:00" in refused.value.message
    # Whole: nothing recorded, no notify, and it did not use up the rate limit (1 per second).
    assert engine.users["alice"].orders == {} and not engine.flush()
    order = engine.apply(Insert(ts=china("2026-12-07 09:00") + 1, order=cu_order("o1")))
    assert order.status == "ALIVE"

    always = engine_with_alice("always")
    assert always.apply(Insert(ts=saturday, order=cu_order("o1"))).status == "ALIVE"


def test_an_unknown_contract_is_still_a_recorded_rejection_under_exchange() -> None:
    engine = engine_with_alice("exchange")
    request = InsertOrder(
        user_id="alice", order_id="x", exchange_id="SHFE", instrument_id="zz9999",
        direction="BUY", offset="OPEN", volume=1, limit_price=1.0,
    )  # fmt: skip
    order = engine.apply(Insert(ts=china("2026-12-05 12:00"), order=request))
    assert order.status == "FINISHED" and "不支持的合约代码" in order.last_msg


# -- services: settlement, market maker, quote restamp -------------------------------------------------
BASE = china("2026-12-02 08:59")  # a Wednesday


def wall_clock() -> int:
    return BASE + round(trio.current_time() * S)


async def test_the_market_maker_waits_for_the_open_and_quotes_are_restamped_then(
    autojump_clock: trio.abc.Clock,
) -> None:
    engine = Engine(market_hours="exchange")
    market = MarketData(engine, clock=wall_clock)
    exchange = Exchange(engine, clock=wall_clock, market=market)
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER):  # no password hash in a thread: the mock clock would jump meanwhile
            await exchange.router.execute(
                OpenAccount(ts=0, user_id=user_id, password_hash="-", init_cash=1e8)
            )
        exchange.simulator = LiquiditySimulator(exchange, seed=3, interval=20)
        await nursery.start(exchange.simulator.run)
        await trio.sleep(30)  # 08:59:30: nothing is open
        assert engine.users[MAKER].orders == {}
        before = market.quotes["CFFEX.IF2512"].datetime_ns
        await trio.sleep(60)  # 09:00:30: the commodities opened, CFFEX not yet
        cu_quote, if_quote = market.quotes["SHFE.cu2601"], market.quotes["CFFEX.IF2512"]
        assert cu_quote.datetime_ns is not None and cu_quote.datetime_ns >= china("2026-12-02 09:00")
        assert if_quote.datetime_ns == before
        symbols = {order.symbol for order in engine.users[MAKER].orders.values()}
        assert "SHFE.cu2601" in symbols and "CFFEX.IF2512" not in symbols
        await trio.sleep(30 * 60)  # 09:30:30
        assert if_quote.datetime_ns is not None and if_quote.datetime_ns >= china("2026-12-02 09:30")
        assert "CFFEX.IF2512" in {order.symbol for order in engine.users[MAKER].orders.values()}
        nursery.cancel_scope.cancel()


def test_the_server_settles_on_trading_days_under_exchange(tmp_path: Path) -> None:
    from qaex.app import build_exchange
    from qaex.datadir import DataDir

    config = Config.load(
        {"QAEX_MARKET_HOURS": "exchange", "QAEX_DATA_DIR": str(tmp_path), "QAEX_FSYNC": "off"}
    )
    exchange = build_exchange(config, DataDir(str(tmp_path)))
    assert exchange.engine.market_hours == "exchange" and exchange.market is not None
    assert exchange.market.state.market_hours == "exchange"
    assert exchange.settle_at == dt.time(15, 30) and exchange.settlement_calendar == CALENDAR
    assert isinstance(exchange.journal, Journal)
    exchange.journal.close()


def test_a_changed_policy_applies_after_replay_and_is_checkpointed(tmp_path: Path) -> None:
    from qaex.exchange.recovery import open_journal, recover

    journal, recovered = open_journal(tmp_path, Engine, fsync=False, market_hours="exchange")
    journal.close()
    assert recovered.engine.market_hours == "exchange"
    assert recover(tmp_path, Engine, repair=False).engine.market_hours == "exchange"
    journal, recovered = open_journal(tmp_path, Engine, fsync=False, market_hours="always")
    journal.close()
    assert recover(tmp_path, Engine, repair=False).engine.market_hours == "always"


# -- a real server -------------------------------------------------------------------------------------
def test_health_reports_the_default_policy(server: Any) -> None:
    assert httpx.get(server.http_url + "/health").json()["market_hours"] == "always"


def test_a_server_out_of_hours_refuses_orders_over_http(tmp_path: Path) -> None:
    env = {"QAEX_MARKET_HOURS": "exchange", **faketime_env("2026-12-05 04:00:00")}  # Saturday 12:00 China
    running = launch(tmp_path, extra_env=env)
    try:
        wait_ready(running)
        health = httpx.get(running.http_url + "/health").json()
        assert health["market_hours"] == "exchange"
        user = open_user(running)
        body = {
            "instrument_id": "SHFE.cu2601",
            "direction": "BUY",
            "offset": "OPEN",
            "volume": 1,
            "price": 86000,
        }
        refused = user.post("/api/order/submit", body)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "market_closed" and "2026-12-07 09:00:00" in error["message"]
        assert "order" not in refused.json()
        assert user.get("/api/orders").json()["orders"] == {}
        listed = httpx.get(running.http_url + "/api/market/instruments").json()["instruments"]
        assert listed["SHFE.cu2601"]["trading_time"]["night"] == [["21:00:00", "25:00:00"]]
    finally:
        code = running.stop()
    assert code == 0, running.log()


def test_a_diff_session_hears_the_refusal_as_an_error_notify() -> None:
    from test_diff_session import logged_in, sent_notifies

    engine = engine_with_alice("exchange")
    with pytest.raises(RiskError) as refused:
        engine.apply(Insert(ts=china("2026-12-05 12:00"), order=cu_order("o1")))
    session = logged_in()
    session.refused(refused.value)  # what qaex.api.diff_server does with a refused request
    [(level, code, text)] = sent_notifies(session)[-1:]
    assert (level, code) == ("ERROR", 425) and "SHFE.cu2601" in text and "2026-12-07 09:00:00" in text
