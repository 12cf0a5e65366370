"""The MarketData service driven directly: engine batches in, shared patches out to in-process sessions.

Sessions are the sans-IO DiffSession + SessionLink driven the way the WebSocket handler drives them
(feed frames, take rtn_data frames), so these tests need no network and run in milliseconds.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from qaex.core.commands import Insert, OpenAccount, Settle, UpsertInstrument
from qaex.core.engine import Engine
from qaex.core.kline import NS_PER_DAY
from qaex.core.orders import InsertOrder
from qaex.core.patch import merge_patch
from qaex.core.quote import QuoteBook
from qaex.exchange.market import PUSH_STEP, MarketData
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.session import DiffSession

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8, a Monday
CU, AU = "SHFE.cu2601", "SHFE.au2602"
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Market:
    """An engine, its MarketData, and a way to trade that feeds the service like the gateway does."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.engine = Engine()
        self.service = MarketData(self.engine, clock=self.clock)
        self._orders = itertools.count(1)
        for user in ("alice", "bob"):
            self.engine.apply(OpenAccount(ts=T0, user_id=user, password_hash="x", init_cash=1e9))
        self.engine.flush()

    def order(self, user: str, direction: str, price: float, volume: int = 1, symbol: str = CU) -> None:
        exchange_id, instrument_id = symbol.split(".")
        request = InsertOrder(
            user_id=user, order_id=f"o{next(self._orders)}", exchange_id=exchange_id,
            instrument_id=instrument_id, direction=direction,  # type: ignore[arg-type]
            offset="OPEN", volume=volume, limit_price=price,
        )  # fmt: skip
        self.clock.now += S // 1000
        self.engine.apply(Insert(ts=self.clock.now, order=request))
        self.service.apply(self.engine.flush())

    def trade(self, price: float, volume: int = 1, symbol: str = CU) -> None:
        self.order("alice", "SELL", price, volume, symbol)
        self.order("bob", "BUY", price, volume, symbol)

    def publish(self) -> None:
        self.service.publish()


class Client:
    """A DIFF client model applying every rtn_data to its own tree, as TqSdk does."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.link = SessionLink(DiffSession(next(_ids)))
        self.tree: dict[str, Any] = {}
        market.service.add_session(self.link)

    def send(self, **message: Any) -> None:
        self.link.session.receive(json.dumps(message))
        self.market.service.subscription_changed(self.link)

    def subscribe(self, ins_list: str) -> None:
        self.send(aid="subscribe_quote", ins_list=ins_list)

    def set_chart(
        self, chart_id: str = "c1", ins_list: str = CU, duration: int = MINUTE, **fields: Any
    ) -> None:
        self.send(aid="set_chart", chart_id=chart_id, ins_list=ins_list, duration=duration, **fields)

    def take(self) -> list[dict[str, Any]]:
        """Peek and return the rtn_data's patches ([] when nothing was pending)."""
        session = self.link.session
        session.receive(b'{"aid":"peek_message"}')
        if session.resync_needed:
            session.reset(self.market.service.full_view(self.link))
        frame = session.data_to_send()
        if frame is None:
            return []
        data: list[dict[str, Any]] = json.loads(frame)["data"]
        for patch in data:
            merge_patch(self.tree, patch)
        return data

    def quote(self, symbol: str = CU) -> dict[str, Any]:
        quote: dict[str, Any] = self.tree["quotes"][symbol]
        return quote

    def notifies(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [body for patch in data for body in patch.get("notify", {}).values()]


DIFF_QUOTE_FIELDS = (
    "instrument_id exchange_id instrument_name ins_class product_id datetime last_price highest lowest "
    "open close average volume amount open_interest pre_open_interest pre_close pre_settlement settlement "
    "upper_limit lower_limit price_tick price_decs volume_multiple max_limit_order_volume "
    "min_limit_order_volume max_market_order_volume min_market_order_volume expired expire_datetime "
    "trading_time margin commission"
).split() + [
    f"{side}_{kind}{n}" for side in ("bid", "ask") for kind in ("price", "volume") for n in range(1, 6)
]


@pytest.fixture
def market() -> Market:
    return Market()


# -- connecting and subscribing --------------------------------------------------------------------------
def test_a_new_session_gets_every_instruments_static_fields_first(market: Market) -> None:
    client = Client(market)
    client.take()
    series = {f"KQ.m@{product}" for product in market.engine.main_contracts}  # and each product's main series
    assert set(client.tree["quotes"]) == set(market.engine.instruments) | series
    assert all(quote["price_tick"] > 0 for quote in client.tree["quotes"].values())
    assert client.tree["mdhis_more_data"] is False


def test_the_static_patch_is_built_once_for_all_sessions(market: Market) -> None:
    clients = [Client(market) for _ in range(3)]
    patch = market.service.static_patch()
    assert market.service.static_patch() is patch
    for client in clients:
        client.take()
        assert client.tree["quotes"][AU]["price_tick"] == 0.02


def test_subscribing_sends_the_full_quote_with_every_diff_field(market: Market) -> None:
    client = Client(market)
    client.take()
    client.subscribe(CU)
    client.take()
    assert client.tree["ins_list"] == CU
    quote = client.quote()
    assert set(DIFF_QUOTE_FIELDS) <= set(quote)
    assert quote["datetime"].startswith("2025-11-24 09:00:00.")
    assert quote["last_price"] == "-"  # NaN travels as "-" (TqSdk ignores null under quotes)


def test_a_trade_moves_last_price_volume_and_the_five_levels(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.take()
    for step in range(6):
        market.order("alice", "SELL", 86100.0 + 10 * step, 2)
        market.order("bob", "BUY", 85900.0 - 10 * step, 3)
    market.trade(86000.0, 4)
    market.publish()
    client.take()
    quote = client.quote()
    assert quote["last_price"] == 86000.0
    assert quote["volume"] == 4
    assert quote["open_interest"] == 180_004
    assert [quote[f"ask_price{n}"] for n in range(1, 6)] == [86100.0, 86110.0, 86120.0, 86130.0, 86140.0]
    assert [quote[f"bid_volume{n}"] for n in range(1, 6)] == [3] * 5
    assert quote["highest"] == quote["lowest"] == quote["open"] == 86000.0


def test_only_changed_fields_follow_the_first_quote(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.take()
    market.order("alice", "SELL", 86100.0)
    market.publish()
    (patch,) = [p for p in client.take() if "quotes" in p]
    assert set(patch["quotes"][CU]) == {"ask_price1", "ask_volume1", "datetime"}


def test_a_batch_folded_in_late_shows_its_own_depth_not_the_engines_newer_books(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.take()

    def sell(number: int, price: float, volume: int) -> Insert:
        request = InsertOrder(
            user_id="alice", order_id=f"late{number}", exchange_id="SHFE", instrument_id="cu2601",
            direction="SELL", offset="OPEN", volume=volume, limit_price=price,
        )  # fmt: skip
        return Insert(ts=market.clock.now + number, order=request)

    market.engine.apply(sell(1, 86100.0, 2))
    batch = market.engine.flush()
    market.engine.apply(sell(2, 86050.0, 5))  # the engine is a batch ahead of the service
    market.service.apply(batch)
    market.publish()
    client.take()
    assert (client.quote()["ask_price1"], client.quote()["ask_volume1"]) == (86100.0, 2)
    market.service.apply(market.engine.flush())
    market.publish()
    client.take()
    assert (client.quote()["ask_price1"], client.quote()["ask_volume1"]) == (86050.0, 5)


def test_unsubscribing_stops_the_flow(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.take()
    client.subscribe("")
    client.take()
    market.trade(86000.0)
    market.publish()
    assert client.take() == []


def test_unknown_symbols_are_refused_with_a_notify(market: Market) -> None:
    client = Client(market)
    client.subscribe(f"{CU},SHFE.nope")
    data = client.take()
    (note,) = client.notifies(data)
    assert note["level"] == "ERROR" and note["code"] == 409 and "SHFE.nope" in note["content"]
    assert "last_price" in client.quote()


def test_a_quote_changing_a_thousand_times_between_peeks_costs_one_patch(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.take()
    for step in range(1000):
        market.order("alice", "SELL", 87000.0 + 10 * (step % 50))
    built = market.service.quote_patches_built
    market.publish()
    assert market.service.quote_patches_built == built + 1
    client.take()
    assert client.quote()["ask_volume1"] == 20


def test_settlement_starts_a_new_trading_day_on_the_quote(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    market.trade(86500.0, 2)
    market.engine.apply(Settle(ts=market.clock.now, prices={CU: 86400.0}, trading_day=""))
    market.service.apply(market.engine.flush())
    market.publish()
    client.take()
    quote = client.quote()
    assert quote["pre_settlement"] == 86400.0
    assert quote["pre_close"] == 86500.0
    assert quote["volume"] == 0 and quote["highest"] == "-"
    assert quote["last_price"] == 86500.0
    assert quote["upper_limit"] == market.engine.instruments[CU].upper_limit


# -- charts ----------------------------------------------------------------------------------------------
def test_set_chart_answers_ready_with_the_bars_in_the_same_rtn_data(market: Market) -> None:
    for minute in range(5):
        market.clock.now = T0 + minute * MINUTE
        market.trade(86000.0 + 10 * minute)
    market.publish()
    client = Client(market)
    client.set_chart(view_width=3)
    data = client.take()
    chart = client.tree["charts"]["c1"]
    assert chart["ready"] is True and (chart["left_id"], chart["right_id"]) == (2, 4)
    assert chart["state"]["ins_list"] == CU
    bars = client.tree["klines"][CU][str(MINUTE)]
    assert bars["last_id"] == 4 and set(bars["data"]) == {"2", "3", "4"}
    assert any("charts" in patch and "klines" in patch for patch in data)


def test_new_bars_keep_coming_and_the_window_follows(market: Market) -> None:
    market.trade(86000.0)
    client = Client(market)
    client.set_chart(view_width=2)
    client.take()
    market.clock.now = T0 + 3 * MINUTE
    market.service.advance_time(market.clock.now)
    market.publish()
    client.take()
    chart = client.tree["charts"]["c1"]
    assert (chart["left_id"], chart["right_id"]) == (2, 3)
    assert client.tree["klines"][CU][str(MINUTE)]["last_id"] == 3
    assert client.tree["klines"][CU][str(MINUTE)]["data"]["3"]["volume"] == 0


def test_a_chart_of_a_new_duration_is_filled_from_history(market: Market) -> None:
    for minute in range(10):
        market.clock.now = T0 + minute * MINUTE
        market.trade(86000.0 + 10 * minute, 2)
    client = Client(market)
    client.set_chart(duration=5 * MINUTE, view_width=10)
    client.take()
    bars = client.tree["klines"][CU][str(5 * MINUTE)]["data"]
    assert [bars[i]["volume"] for i in ("0", "1")] == [10, 10]
    assert (bars["0"]["open"], bars["0"]["high"], bars["0"]["close"]) == (86000.0, 86040.0, 86040.0)


def test_a_tick_chart_gets_the_ticks(market: Market) -> None:
    market.trade(86000.0)
    market.trade(86010.0)
    client = Client(market)
    client.set_chart(duration=0, view_width=10)
    client.take()
    ticks = client.tree["ticks"][CU]
    assert ticks["last_id"] == 1 and ticks["data"]["1"]["last_price"] == 86010.0
    market.trade(86020.0)
    market.publish()
    client.take()
    assert client.tree["ticks"][CU]["data"]["2"]["volume"] == 3


def test_deleting_a_chart_stops_its_feed_and_drops_an_unused_series(market: Market) -> None:
    market.trade(86000.0)
    client = Client(market)
    client.set_chart(duration=5 * MINUTE)
    client.take()
    assert (CU, 5 * MINUTE) in market.service.klines
    client.set_chart(ins_list="")
    client.take()
    assert client.tree["charts"] == {}
    assert (CU, 5 * MINUTE) not in market.service.klines
    market.trade(86010.0)
    market.publish()
    assert client.take() == []


def test_a_bad_set_chart_is_refused_with_a_notify(market: Market) -> None:
    client = Client(market)
    client.set_chart(ins_list="SHFE.nope")
    client.set_chart(chart_id="c2", duration=2 * NS_PER_DAY + S)
    notes = client.notifies(client.take())
    assert [note["code"] for note in notes] == [409, 490]
    assert client.link.session.charts == {}


def test_a_closed_session_is_forgotten(market: Market) -> None:
    client = Client(market)
    client.subscribe(CU)
    client.set_chart(duration=3 * S)
    assert client.take()  # what was queued before
    market.service.remove_session(client.link)
    assert (CU, 3 * S) not in market.service.klines
    market.trade(86000.0)
    market.publish()
    assert client.take() == []


# -- resync and scale ------------------------------------------------------------------------------------
def test_a_resync_rebuilds_quotes_and_charts(market: Market) -> None:
    market.trade(86000.0)
    client = Client(market)
    client.subscribe(CU)
    client.set_chart(view_width=5)
    client.take()
    session = client.link.session
    # A client that never peeks. (One patch alone is held by reference, not copied; the bound
    # counts what the session copies, so it takes a second patch to cross it.)
    session.push({"filler": {str(i): i for i in range(session.pending_limit + 1)}})
    session.push({"filler2": 1})
    assert session.resync_needed
    model = dict(client.tree)
    client.take()
    assert client.tree["quotes"][CU] == json.loads(json.dumps(model["quotes"][CU]))
    assert client.tree["charts"]["c1"]["ready"] is True


def test_a_thousand_sessions_get_correct_quotes_with_one_patch_build_per_change(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = 0
    full = QuoteBook.full

    def counting_full(book: QuoteBook) -> dict[str, Any]:
        nonlocal builds
        builds += 1
        return full(book)

    monkeypatch.setattr(QuoteBook, "full", counting_full)
    clients = [Client(market) for _ in range(1000)]
    for number, client in enumerate(clients):
        client.subscribe(CU if number % 2 else AU)
        client.take()
    builds = 0
    publishes = 0
    for change in range(10_000):
        market.order("alice", "SELL", 87000.0 + 10 * (change % 100))  # a depth change of cu each
        if change % 100 == 99:
            market.publish()
            publishes += 1
            for client in clients[change // 100 % 10 :: 10]:  # a tenth of the clients peek each time
                client.take()
    assert builds == publishes  # one patch per change-batch, however many subscribers
    expected = market.service.full_quote(CU)["quotes"][CU]  # as DIFF sends it: NaN as "-"
    for number, client in enumerate(clients):
        client.take()
        if number % 2:
            assert client.quote(CU) == expected
        else:
            assert client.quote(AU)["ask_volume1"] == 0
    assert not math.isnan(market.service.quotes[CU].asks[0][0])


async def test_a_publish_wakes_writers_in_steps_so_other_tasks_run_between() -> None:
    market = Market()
    clients = [Client(market) for _ in range(80)]
    for client in clients:
        client.subscribe(CU)
        client.take()
        client.link.session.receive(b'{"aid":"peek_message"}')  # a peek outstanding, as TqSdk keeps one
    market.trade(86000.0)
    order: list[str] = []

    async def writer(client: Client) -> None:
        await client.link.wait()
        order.append("writer")

    async def other() -> None:  # e.g. the trading path, ready to run once the publish starts
        await trio.lowlevel.checkpoint()
        order.append("other")

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(writer, client)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(other)
        await market.service.publish_in_steps()
    assert order.count("writer") == len(clients)  # everybody woken
    assert order.index("other") < 40  # not behind the whole burst of 80 writers
    for client in clients:
        assert client.take() == [] or client.quote()  # the quote patch was delivered


async def test_a_publish_to_many_sessions_pushes_in_steps_and_follows_subscriptions_meanwhile() -> None:
    """More subscribers than PUSH_STEP: the pushes pause (other tasks run), and a session that leaves
    or unsubscribes meanwhile gets nothing more, one that subscribes gets the whole quote, and every
    other one the publish's patches in the same order."""
    market = Market()
    clients = [Client(market) for _ in range(2 * PUSH_STEP + 100)]
    for client in clients:
        client.subscribe(f"{CU},{AU}")
        client.take()
        client.link.session.receive(b'{"aid":"peek_message"}')  # wants_data() now says "pushed to"
    market.trade(86000.0)
    market.trade(950.0, symbol=AU)
    gone: list[Client] = []
    late = Client(market)

    async def meanwhile() -> None:  # e.g. DIFF readers handling a close and two subscribe_quote
        # Its first step comes in the publish's first pause (trio runs a batch in either order: after
        # 1,024 or 2,048 of cu's 2,148 pushes): without pauses, every session would have cu by now.
        waiting = [c for c in clients if not c.link.session.wants_data()]  # not pushed to yet
        assert len(waiting) >= 100
        gone.extend(waiting[:2])
        market.service.remove_session(gone[0].link)
        gone[1].subscribe(AU)  # cu no more
        late.subscribe(CU)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meanwhile)
        await market.service.publish_in_steps()
        nursery.cancel_scope.cancel()
    assert len(gone) == 2
    orders = set()
    for client in clients:
        if client in gone:
            continue
        data = client.take()
        assert client.quote(CU)["last_price"] == 86000.0 and client.quote(AU)["last_price"] == 950.0
        orders.add(tuple(symbol for patch in data for symbol in patch.get("quotes", {})))
    assert len(orders) == 1  # the publish's order, the same for every session
    assert not gone[0].link.session.wants_data()  # nothing after it left
    for patch in gone[1].take():
        assert "last_price" not in patch.get("quotes", {}).get(CU, {})  # no cu after unsubscribing
    assert gone[1].quote(AU)["last_price"] == 950.0
    late.take()
    assert late.quote(CU)["last_price"] == 86000.0  # the whole quote, at its subscription


def test_every_session_gets_the_new_contract_figures_after_a_settlement(market: Market) -> None:
    """Also sessions not subscribed to the quote: TqSdk's query_symbol_info reads these fields."""
    watcher, bystander = Client(market), Client(market)
    watcher.subscribe(CU)
    watcher.take()
    bystander.take()
    before = dict(bystander.tree["quotes"][CU])
    market.trade(86500.0, 2)
    market.engine.apply(Settle(ts=market.clock.now, prices={CU: 86400.0}, trading_day=""))
    market.service.apply(market.engine.flush())
    market.publish()
    watcher.take()
    bystander.take()
    instrument = market.engine.instruments[CU]
    for client in (watcher, bystander):
        quote = client.tree["quotes"][CU]
        assert quote["pre_settlement"] == 86400.0 != before["pre_settlement"]
        assert (
            quote["upper_limit"] == instrument.upper_limit and quote["lower_limit"] == instrument.lower_limit
        )
        assert quote["pre_close"] == 86500.0
    assert "last_price" not in bystander.tree["quotes"][CU]  # contract figures only, no market data
    assert bystander.take() == []  # and only once


def test_a_contract_listed_while_sessions_are_connected_reaches_them(market: Market) -> None:
    client = Client(market)
    client.take()
    spec = dict(msgspec.to_builtins(market.engine.instruments[CU]))
    spec.update(instrument_id="cu2699", instrument_name="沪铜2699")
    market.engine.apply(UpsertInstrument(ts=market.clock.now + 1, spec=spec))
    market.service.apply(market.engine.flush())
    market.publish()
    client.take()
    listed = client.tree["quotes"]["SHFE.cu2699"]
    assert listed["price_tick"] == 10.0 and listed["instrument_name"] == "沪铜2699"
    assert listed["upper_limit"] > listed["pre_settlement"] > listed["lower_limit"]


async def test_batches_are_folded_in_as_they_come_while_the_publish_waits(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Each batch is applied when it arrives, in a step of its own, not all at once before the publish."""
    market = Market()
    service = market.service = MarketData(market.engine, clock=market.clock, publish_interval=10.0)
    client = Client(market)
    client.subscribe(CU)
    client.take()
    orders = itertools.count(1)

    async def trade(price: float) -> None:
        for user, direction in (("alice", "SELL"), ("bob", "BUY")):
            request = InsertOrder(
                user_id=user, order_id=f"f{next(orders)}", exchange_id="SHFE", instrument_id="cu2601",
                direction=direction, offset="OPEN", volume=1, limit_price=price,  # type: ignore[arg-type]
            )  # fmt: skip
            market.clock.now += S // 1000
            market.engine.apply(Insert(ts=market.clock.now, order=request))
            await service.batches.send(market.engine.flush())

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await trade(86010.0)  # the first publish is due at once
        await trio.testing.wait_all_tasks_blocked()
        assert client.take() and client.quote()["last_price"] == 86010.0
        await trade(86020.0)
        await trio.testing.wait_all_tasks_blocked()
        assert service.quotes[CU].last_price == 86020.0  # folded in already...
        assert client.take() == []  # ... but not published before the interval is up
        mock_clock.jump(10.0)
        await trio.testing.wait_all_tasks_blocked()
        assert client.take() and client.quote()["last_price"] == 86020.0
        nursery.cancel_scope.cancel()
