"""Main contracts (issue #15): the rule, the engine's state, the KQ.m@ quotes, ins_query, refusals."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import trio
from conftest import Server, open_user
from test_engine import make_engine, order, ts
from test_market_diff import connect, venue

from qaex.client import DiffClient
from qaex.core import ins_query
from qaex.core.commands import Insert, SetSuspended, Settle, UpsertInstrument
from qaex.core.engine import Engine
from qaex.core.errors import RiskError
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.core.journal_format import decode_checkpoint, encode_checkpoint
from qaex.core.main_contracts import choose_main, cont_name, cont_symbol, product_of
from qaex.core.market import MarketState
from qaex.core.orders import InsertOrder

DAY = 86_400.0
LATER = 1_900_000_000.0  # 2030: the contracts outlive every settlement the tests run (they expire by date)
RB = "SHFE.rb"
KQ_RB = "KQ.m@SHFE.rb"


def rb(month: str, *, expire: float, oi: int = 0, **fields: Any) -> Instrument:
    """An rb contract delivering at epoch second ``expire``."""
    return Instrument(
        exchange_id="SHFE", instrument_id=f"rb{month}", product_id="rb", instrument_name=f"螺纹钢{month}",
        price_tick=1.0, volume_multiple=10, margin_ratio_long=0.07, margin_ratio_short=0.07,
        pre_settlement=3100.0, pre_open_interest=oi, expire_datetime=expire, **fields,
    )  # fmt: skip


JAN, MAY, OCT = rb("2601", expire=LATER + 1 * DAY), rb("2605", expire=LATER + 5 * DAY), rb("2610", expire=LATER + 10 * DAY)


# -- the rule ----------------------------------------------------------------------------------------------
def test_the_most_open_interest_wins() -> None:
    interest = {"SHFE.rb2601": 10, "SHFE.rb2605": 30, "SHFE.rb2610": 20}
    assert choose_main(None, [JAN, MAY, OCT], interest) == "SHFE.rb2605"
    assert choose_main(None, [OCT, JAN, MAY], interest) == "SHFE.rb2605"  # whatever the order
    assert choose_main(None, [], interest) is None
    assert choose_main(None, [JAN], {}) == "SHFE.rb2601"  # missing figures count 0


def test_ties_keep_the_current_main_else_take_the_nearer_delivery() -> None:
    tie = {"SHFE.rb2601": 5, "SHFE.rb2605": 5, "SHFE.rb2610": 5}
    assert choose_main(None, [OCT, MAY, JAN], tie) == "SHFE.rb2601"
    assert choose_main("SHFE.rb2605", [JAN, MAY, OCT], tie) == "SHFE.rb2605"
    same_month = rb("2601x", expire=LATER + 1 * DAY)  # the same delivery: the smaller id
    assert choose_main(None, [same_month, JAN], {}) == "SHFE.rb2601"


def test_the_main_never_rolls_back_to_an_earlier_delivery() -> None:
    interest = {"SHFE.rb2601": 100, "SHFE.rb2605": 1, "SHFE.rb2610": 2}
    assert choose_main("SHFE.rb2605", [JAN, MAY, OCT], interest) == "SHFE.rb2610"
    assert choose_main("SHFE.rb2610", [JAN, MAY, OCT], interest) == "SHFE.rb2610"


def test_expired_and_suspended_contracts_are_skipped() -> None:
    interest = {"SHFE.rb2601": 100, "SHFE.rb2605": 50, "SHFE.rb2610": 1}
    expired_jan = rb("2601", expire=LATER + 1 * DAY, expired=True)
    suspended_may = rb("2605", expire=LATER + 5 * DAY, suspended=True)
    assert choose_main(None, [expired_jan, suspended_may, OCT], interest) == "SHFE.rb2610"
    # The current main expired and nothing later is live: it stays (a quote cannot be taken back).
    assert choose_main("SHFE.rb2601", [expired_jan], interest) == "SHFE.rb2601"
    assert choose_main(None, [expired_jan], interest) is None


def test_names_and_symbols() -> None:
    assert cont_symbol(RB) == KQ_RB and product_of(KQ_RB) == RB and product_of("SHFE.rb2601") is None
    assert cont_name("螺纹钢2601") == "螺纹钢主连" and cont_name("PTA601") == "PTA主连"


# -- the engine ------------------------------------------------------------------------------------------
def rb_engine() -> Engine:
    """rb2601 (OI 100) and rb2605 (OI 50) listed; alice and bob can trade."""
    registry = InstrumentRegistry([rb("2601", expire=LATER + 1 * DAY, oi=100), rb("2605", expire=LATER + 5 * DAY, oi=50)])
    return make_engine("alice", "bob", instruments=registry)


def trade(engine: Engine, symbol: str, volume: int, key: str) -> None:
    order(engine, "alice", f"s{key}", "SELL", volume, 3100.0, symbol=symbol)
    order(engine, "bob", f"b{key}", "BUY", volume, 3100.0, symbol=symbol)


def test_the_main_is_chosen_at_listing_from_pre_open_interest() -> None:
    engine = rb_engine()
    assert engine.main_contracts == {RB: "SHFE.rb2601"}
    assert not engine.flush().main_contracts  # the starting state is no change
    # A product gets its main when its first live contract is listed; a later listing with more open
    # interest takes over (a product listed one contract at a time ends on its biggest month).
    spec = {"exchange_id": "SHFE", "instrument_id": "hc2601", "product_id": "hc", "instrument_name": "热卷2601",
            "price_tick": 1.0, "volume_multiple": 10, "margin_ratio_long": 0.1, "margin_ratio_short": 0.1,
            "pre_settlement": 3300.0, "pre_open_interest": 7}  # fmt: skip
    engine.apply(UpsertInstrument(ts=ts(), spec=spec | {"suspended": True}))
    assert "SHFE.hc" not in engine.main_contracts  # not live
    engine.apply(UpsertInstrument(ts=ts(), spec={"exchange_id": "SHFE", "instrument_id": "hc2601",
                                                 "suspended": False}))  # fmt: skip
    assert engine.main_contracts["SHFE.hc"] == "SHFE.hc2601"
    engine.apply(UpsertInstrument(ts=ts(), spec=spec | {"instrument_id": "hc2605", "pre_open_interest": 99}))
    assert engine.main_contracts["SHFE.hc"] == "SHFE.hc2605"  # 99 > 7
    assert engine.flush().main_contracts == {"SHFE.hc": "SHFE.hc2605"}  # the batch has the latest


def test_settlement_moves_the_main_to_the_most_open_interest_and_never_back() -> None:
    engine = rb_engine()
    trade(engine, "SHFE.rb2605", 60, "1")  # rb2605: 50 + 60 = 110 > 100
    assert engine.main_contracts[RB] == "SHFE.rb2601"  # not before the settlement
    engine.flush()
    engine.apply(Settle(ts=ts(), prices={}))
    assert engine.main_contracts[RB] == "SHFE.rb2605"
    batch = engine.flush()
    assert batch.main_contracts == {RB: "SHFE.rb2605"} and batch
    trade(engine, "SHFE.rb2601", 500, "2")  # far more interest in the earlier month: no roll back
    engine.apply(Settle(ts=ts(), prices={}))
    assert engine.main_contracts[RB] == "SHFE.rb2605" and not engine.flush().main_contracts
    engine.apply(SetSuspended(ts=ts(), symbol="SHFE.rb2605", suspended=True))
    engine.apply(Settle(ts=ts(), prices={}))
    assert engine.main_contracts[RB] == "SHFE.rb2605"  # nothing live at or after it: it stays


def test_main_contracts_survive_checkpoints_and_replays() -> None:
    engine = rb_engine()
    commands: list[Any] = []

    def run(command: Any) -> None:
        commands.append(command)
        engine.apply(command)

    run(
        Insert(
            ts=ts(),
            order=InsertOrder(
                user_id="alice",
                order_id="s",
                exchange_id="SHFE",
                instrument_id="rb2605",
                direction="SELL",
                offset="OPEN",
                volume=60,
                limit_price=3100.0,
            ),
        )
    )
    run(
        Insert(
            ts=ts(),
            order=InsertOrder(
                user_id="bob",
                order_id="b",
                exchange_id="SHFE",
                instrument_id="rb2605",
                direction="BUY",
                offset="OPEN",
                volume=60,
                limit_price=3100.0,
            ),
        )
    )
    run(Settle(ts=ts(), prices={}))  # fmt: skip
    assert engine.main_contracts[RB] == "SHFE.rb2605"
    restored = decode_checkpoint(encode_checkpoint(engine, engine.seq, 0)).engine
    assert restored.main_contracts == engine.main_contracts
    assert restored.state_digest() == engine.state_digest()
    replayed = rb_engine()
    for command in commands:
        replayed.apply(command)
    assert replayed.main_contracts == engine.main_contracts
    assert replayed.state_digest() == engine.state_digest()
    replayed.main_contracts[RB] = "SHFE.rb2601"
    assert replayed.state_digest() != engine.state_digest()  # the digest covers the choice


def test_a_checkpoint_written_before_main_contracts_still_loads() -> None:
    engine = rb_engine()
    state = engine.__getstate__()
    del state["main_contracts"]
    old = Engine.__new__(Engine)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.main_contracts == {RB: "SHFE.rb2601"}  # chosen from the last settlement's figures
    assert old.state_digest() == engine.state_digest()


def test_an_order_on_a_kq_symbol_is_refused_naming_the_main() -> None:
    engine = rb_engine()
    for exchange_id, instrument_id in (("KQ", "m@SHFE.rb"), ("KQ.m@SHFE", "rb")):  # DIFF's split, HTTP's
        request = InsertOrder(user_id="alice", order_id="k", exchange_id=exchange_id, instrument_id=instrument_id,
                              direction="BUY", offset="OPEN", volume=1, limit_price=3100.0)  # fmt: skip
        with pytest.raises(RiskError) as refused:
            engine.apply(Insert(ts=ts(), order=request))
        assert refused.value.code == "not_tradable" and refused.value.diff_code
        assert "KQ.m@SHFE.rb" in refused.value.message and "SHFE.rb2601" in refused.value.message
    assert engine.users["alice"].orders == {}  # refused as a whole: nothing recorded, nothing journaled
    with pytest.raises(RiskError, match=r"不能交易$"):
        engine.apply(Insert(ts=ts(), order=InsertOrder(user_id="alice", order_id="k", exchange_id="KQ",
                     instrument_id="i@SHFE.rb", direction="BUY", offset="OPEN", volume=1, limit_price=1.0)))  # fmt: skip


# -- the market core -------------------------------------------------------------------------------------
def test_the_kq_quote_mirrors_its_main_and_follows_a_new_main() -> None:
    engine = rb_engine()
    state = MarketState(engine.instruments)
    for symbol in engine.instruments:
        state.list_instrument(symbol, 1)
    state.set_main(RB, "SHFE.rb2601", 1)
    static = state.static_patch()["quotes"][KQ_RB]
    assert static["ins_class"] == "CONT" and static["underlying_symbol"] == "SHFE.rb2601"
    assert static["exchange_id"] == "KQ" and static["instrument_id"] == KQ_RB and static["price_tick"] == 1.0
    full = state.full_quote(KQ_RB)["quotes"][KQ_RB]
    underlying = state.full_quote("SHFE.rb2601")["quotes"]["SHFE.rb2601"]
    mine = {"instrument_id", "exchange_id", "instrument_name", "ins_class", "underlying_symbol"}
    assert set(full) == set(underlying) | {"underlying_symbol"}
    assert {k: v for k, v in full.items() if k not in mine} == {
        k: v for k, v in underlying.items() if k not in mine
    }
    trade(engine, "SHFE.rb2601", 3, "1")
    state.apply(engine.flush(), 2)
    changes = dict(state.take_changes().quotes)
    assert (
        changes[KQ_RB]["quotes"][KQ_RB]["volume"] == 3
        and changes[KQ_RB]["quotes"][KQ_RB]["last_price"] == 3100
    )
    trade(engine, "SHFE.rb2605", 60, "2")
    state.apply(engine.flush(), 3)
    state.take_changes()
    engine.apply(Settle(ts=ts(), prices={}))
    state.apply(engine.flush(), 4)
    changes = state.take_changes()
    assert (
        changes.static is not None and changes.static["quotes"][KQ_RB]["underlying_symbol"] == "SHFE.rb2605"
    )
    patch = dict(changes.quotes)[KQ_RB]["quotes"][KQ_RB]
    assert patch["underlying_symbol"] == "SHFE.rb2605" and patch["open_interest"] == 110


# -- ins_query: the exact queries TqSdk 3.10.4 sends -------------------------------------------------------
# api.query_cont_quotes(exchange_id="SHFE", product_id="rb") (the filter is TqSdk's, on the answer).
CONT_QUOTES = (
    "query {\n  multi_symbol_info(class: [CONT]) {\n    __typename\n    ... on basic {\n      instrument_id\n"
    "    }\n    ... on derivative {\n      underlying {\n        edges {\n          node {\n"
    "            __typename\n            ... on basic {\n              instrument_id\n              exchange_id\n"
    "            }\n            ... on future {\n              product_id\n            }\n          }\n"
    "        }\n      }\n    }\n  }\n}"
)


# get_quote/query_symbol_info("KQ.m@SHFE.rb") before the static fields came (_query_for_quote).
SYMBOL_INFO_KQ = (
    'query {\n  multi_symbol_info(instrument_id: ["KQ.m@SHFE.rb"]) {\n    __typename\n    ...basic\n'
    "    ...stock\n    ...fund\n    ...bond\n    ...tradeable\n    ...index\n    ...securities\n"
    "    ...future\n    ...option\n    ...combine\n    ...derivative\n  }\n}\n"
    "fragment basic on basic {\n  instrument_id\n  exchange_id\n  instrument_name\n  english_name\n"
    "  class\n  price_tick\n  price_decs\n  trading_day\n  trading_time {\n    day\n    night\n  }\n}\n"
    "fragment stock on stock {\n  stock_dividend_ratio\n  cash_dividend_ratio\n}\n"
    "fragment fund on fund {\n  cash_dividend_ratio\n}\nfragment bond on bond {\n  maturity_datetime\n"
    "}\nfragment tradeable on tradeable {\n  pre_close\n  volume_multiple\n  quote_multiple\n"
    "  upper_limit\n  lower_limit\n}\nfragment index on index {\n  index_multiple\n}\n"
    "fragment securities on securities {\n  currency\n  face_value\n  first_trading_datetime\n"
    "  buy_volume_unit\n  sell_volume_unit\n  status\n  public_float_share_quantity\n}\n"
    "fragment future on future {\n  pre_open_interest\n  expired\n  product_id\n  product_short_name\n"
    "  delivery_year\n  delivery_month\n  expire_datetime\n  settlement_price\n"
    "  max_market_order_volume\n  max_limit_order_volume\n  min_market_order_volume\n"
    "  min_limit_order_volume\n  open_limit\n  open_max_market_order_volume\n"
    "  open_max_limit_order_volume\n  open_min_market_order_volume\n  open_min_limit_order_volume\n"
    "  margin\n  commission\n  mmsa\n  categories {\n    id\n    name\n  }\n  position_limit\n}\n"
    "fragment option on option {\n  pre_open_interest\n  expired\n  product_short_name\n"
    "  expire_datetime\n  last_exercise_datetime\n  settlement_price\n  max_market_order_volume\n"
    "  max_limit_order_volume\n  min_market_order_volume\n  min_limit_order_volume\n"
    "  open_max_market_order_volume\n  open_max_limit_order_volume\n  open_min_market_order_volume\n"
    "  open_min_limit_order_volume\n  strike_price\n  call_or_put\n  exercise_type\n  position_limit\n"
    "}\nfragment combine on combine {\n  expired\n  product_id\n  expire_datetime\n"
    "  max_market_order_volume\n  max_limit_order_volume\n  min_market_order_volume\n"
    "  min_limit_order_volume\n  open_max_market_order_volume\n  open_max_limit_order_volume\n"
    "  open_min_market_order_volume\n  open_min_limit_order_volume\n  leg1 {\n    __typename\n"
    "    ... on basic {\n      instrument_id\n    }\n  }\n  leg2 {\n    __typename\n"
    "    ... on basic {\n      instrument_id\n    }\n  }\n}\nfragment derivative on derivative {\n"
    "  underlying {\n    count\n    edges {\n      underlying_multiple\n      node {\n"
    "        __typename\n        ...basic\n        ...stock\n        ...fund\n        ...bond\n"
    "        ...tradeable\n        ...index\n        ...securities\n        ...future\n      }\n    }\n"
    "  }\n}"
)


def answer(query: str, engine: Engine, market_hours: Any = "always") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ins_query.answer(
        query, engine.instruments.values(), None, engine.main_contracts, market_hours=market_hours
    )["multi_symbol_info"]
    return found


def test_query_cont_quotes_finds_the_main_of_each_product() -> None:
    engine = Engine()
    found = answer(CONT_QUOTES, engine)
    assert [entry["instrument_id"] for entry in found] == sorted(f"KQ.m@{p}" for p in engine.main_contracts)
    (rb_entry,) = [entry for entry in found if entry["instrument_id"] == KQ_RB]
    (edge,) = rb_entry["underlying"]["edges"]
    node = edge["node"]
    assert (node["instrument_id"], node["exchange_id"], node["product_id"]) == ("SHFE.rb2601", "SHFE", "rb")
    # TqSdk's filter, as query_cont_quotes runs it on this answer:
    mains = [e["node"]["instrument_id"] for q in found for e in q["underlying"]["edges"]
             if e["node"]["exchange_id"] == "SHFE" and e["node"]["product_id"] == "rb"]  # fmt: skip
    assert mains == ["SHFE.rb2601"]
    futures = answer(CONT_QUOTES.replace("CONT", "FUTURE"), engine)
    assert all(entry["class"] == "FUTURE" for entry in futures) and len(futures) == len(engine.instruments)
    day_only = CONT_QUOTES.replace("class: [CONT]", "class: [CONT], has_night: false")
    assert answer(day_only, engine) == []  # QAEX_MARKET_HOURS=always: every contract trades at night
    assert [entry["instrument_id"] for entry in answer(day_only, engine, "exchange")] == ["KQ.m@CFFEX.IF"]


def test_query_symbol_info_of_a_kq_symbol_as_tqsdk_reads_it() -> None:
    from tqsdk.utils_symbols import _symbols_to_quotes  # type: ignore[import-untyped]

    engine = Engine()
    found = answer(SYMBOL_INFO_KQ, engine)
    assert [entry["instrument_id"] for entry in found] == [KQ_RB]
    assert found[0]["class"] == "CONT" and found[0]["__typename"] == "cont"
    quotes = _symbols_to_quotes({"result": {"multi_symbol_info": found}})
    quote = quotes[KQ_RB]
    assert quote["ins_class"] == "CONT" and quote["underlying_symbol"] == "SHFE.rb2601"
    assert quote["exchange_id"] == "KQ" and quote["price_tick"] == 1.0 and quote["volume_multiple"] == 10
    assert quotes["SHFE.rb2601"]["ins_class"] == "FUTURE"


# -- over DIFF -------------------------------------------------------------------------------------------
KQ_CU = "KQ.m@SHFE.cu"


async def test_subscribe_kq_gets_the_main_quote_and_its_trades(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        static = client.tree["quotes"][KQ_CU]
        assert static["ins_class"] == "CONT" and static["underlying_symbol"] == "SHFE.cu2601"
        assert static["price_tick"] == 10.0
        await client.send(aid="subscribe_quote", ins_list=f"SHFE.cu2601,{KQ_CU}")
        await client.until(lambda tree: "datetime" in tree["quotes"][KQ_CU])
        await market.trade(86050.0, 3)
        await client.until(lambda tree: tree["quotes"][KQ_CU].get("volume") == 3)
        kq, cu = client.tree["quotes"][KQ_CU], client.tree["quotes"]["SHFE.cu2601"]
        assert kq["last_price"] == 86050.0 and kq["instrument_id"] == KQ_CU
        for key in (
            "last_price",
            "volume",
            "open_interest",
            "datetime",
            "ask_price1",
            "bid_price1",
            "upper_limit",
        ):
            assert kq[key] == cu[key], key


async def test_orders_on_kq_are_refused_over_diff_and_http(server: Server) -> None:
    alice = open_user(server)
    answer_ = alice.post("/api/order/submit", json={"instrument_id": KQ_RB, "direction": "BUY", "offset": "OPEN",
                                                   "volume": 1, "price": 3100.0})  # fmt: skip
    assert answer_.status_code == 422, answer_.text
    error = answer_.json()["error"]
    assert error["code"] == "not_tradable" and "SHFE.rb2601" in error["message"]
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(alice.user_id, alice.password)
        seen = len(client.notifies)
        await client.insert_order("k1", KQ_RB, "BUY", "OPEN", 1, 3100.0)
        note = await client.wait_for(
            lambda c: next((n for n in c.notifies[seen:] if n.get("level") == "ERROR"), None)
        )
        assert "SHFE.rb2601" in note["content"] and KQ_RB in note["content"]
    assert alice.get("/api/orders").json()["orders"] == {}
