"""Stateful property test of the whole engine, journal and recovery included (issue #13).

A hypothesis state machine drives one :class:`~qaex.core.engine.Engine` the way the router does:
every command carries a strictly increasing timestamp, a command refused with a ``QaexError`` is not
journaled, and the commands of each batch are journaled with ``journal_format.encode_batch`` when
the batch is flushed. The rules insert orders (limit and market, GFD and IOC, ANY and ALL, on and
off the tick grid, inside and outside the daily limits, with hostile prices and volumes), cancel
orders (open and finished, own and someone else's, unknown), open accounts and move cash (good and
bad amounts), change passwords, mark to market, suspend instruments, settle the day (sometimes at
refused prices), look at the engine as a session login or the admin digest endpoint do (both mark
accounts to market outside any command), checkpoint, and restart: the journal is scanned and
replayed into a fresh engine (or into the newest checkpoint) with a flush at every batch end, as
`qaex.exchange.recovery.recover` does, the rebuilt state digest must equal the live one, and the
machine goes on with the rebuilt engine, seeded the way `Exchange.seed_from_engine` seeds it. Every
applied command must also read back from its journal record as the same command (a record the
decoder refuses would stop recovery), so the hostile values include ids and symbols that the
journal's types do not allow.

After every step, from the engine's state alone (nothing that marks to market):

* no book is crossed, and exactly the ALIVE orders rest in the books, with their volume left;
* every order's ``volume_orign == volume_left + Σ its trades' volume``;
* trades come in pairs (one BUY, one SELL, two users, same price and volume), at prices on the tick
  grid, within the daily limits and the limits of both orders; bought == sold per instrument;
* positions equal trades: lots per user and instrument (today's / yesterday's for SHFE) follow from
  the fills since the start, rolled over at each settlement; frozen lots are those of the open close
  orders; open interest moves by exactly the lots held;
* the account identities (static balance, balance, available, risk ratio), the account totals as
  sums of the positions, frozen money as the sum over open orders, today's commission, deposits and
  withdrawals as the sums of today's trades and transfers, and the balance against an independent
  cash model (cash − commissions + value of the net lots at the positions' last price);
* no NaN or infinity in an account, an order's frozen money or a held position.

Any exception from ``Engine.apply`` other than a ``QaexError``, or from encoding the journal, is a bug.
What the property tests of the account (tests/test_account_properties.py) and of the book
(tests/test_book_properties.py) check in isolation is not repeated here in depth.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from qaex.core.commands import (
    AnyCommand,
    Cancel,
    ChangePassword,
    Deposit,
    Insert,
    MarkToMarket,
    OpenAccount,
    SetSuspended,
    Settle,
    Withdraw,
)
from qaex.core.engine import Engine
from qaex.core.errors import QaexError
from qaex.core.instruments import Instrument, InstrumentRegistry, default_instruments
from qaex.core.journal_format import (
    HEADER,
    SEGMENT_MAGIC,
    decode_checkpoint,
    decode_command,
    encode_batch,
    encode_checkpoint,
    encode_record,
    scan_segment,
)
from qaex.core.orders import InsertOrder

# SHFE (today's and yesterday's lots kept apart) with a tick of 10, and two exchanges that do not
# separate them, with ticks below 1 (0.5 and 0.2; CFFEX also charges 10x for closing today's lots).
SYMBOLS = ("SHFE.cu2601", "DCE.i2601", "CFFEX.IF2512")
USERS = {"alice": 30_000_000.0, "bob": 30_000_000.0, "carol": 1_000_000.0}  # carol runs out of money
LATE_USER = "dave"  # opened by a rule, maybe never
GHOST = "ghost"  # never has an account
T0 = 1_764_120_000_000_000_000  # 2025-11-26 09:20 China time
STEP_NS = 50_000_000  # between two commands; `end_batch` may jump further
RATE_LIMIT = 5  # orders per user per second

HOSTILE_PRICES = (0.0, -10.0, 5e-324, 1e12, 1e308, -1e308, math.inf, -math.inf, math.nan)
HOSTILE_VOLUMES = (0, -1, 501, 10**6, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63) - 1)
HOSTILE_AMOUNTS = (0.0, -1.0, 5e-324, 1e13, 1e15, 1e300, math.inf, -math.inf, math.nan)
HOSTILE_SETTLEMENT_PRICES = (1e9, 1e12, 1e308)  # positive, as the admin API lets through (gt=0)

users = st.sampled_from([*USERS, LATE_USER, GHOST])
symbols = st.sampled_from(SYMBOLS)
# (kind, ticks from pre_settlement or from a limit, raw price): mostly near the middle, so orders cross.
prices = st.one_of(
    st.tuples(st.just("grid"), st.integers(-6, 6), st.just(0.0)),
    st.tuples(st.just("grid"), st.integers(-6, 6), st.just(0.0)),
    st.tuples(st.just("grid"), st.integers(-6, 6), st.just(0.0)),
    st.tuples(st.just("off"), st.integers(-3, 3), st.just(0.0)),
    st.tuples(st.just("beyond"), st.integers(1, 3), st.just(0.0)),
    st.tuples(st.just("raw"), st.just(0), st.sampled_from(HOSTILE_PRICES)),
)
volumes = st.one_of(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.sampled_from(HOSTILE_VOLUMES))
amounts = st.one_of(st.floats(0.01, 5_000_000.0), st.sampled_from(HOSTILE_AMOUNTS))
# A new order id, an id the user already used, or hostile ids (empty, long, characters ids may not have).
order_ids = st.sampled_from(["new", "new", "new", "new", "dup", "", "x" * 65, "x" * 129, "no spaces/?"])


def make_registry() -> InstrumentRegistry:
    return InstrumentRegistry([i for i in default_instruments() if i.symbol in SYMBOLS])


def make_engine() -> Engine:
    return Engine(make_registry(), max_orders_per_second=RATE_LIMIT)


BASE_OPEN_INTEREST = {symbol: instrument.pre_open_interest for symbol, instrument in make_registry().items()}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def price_of(instrument: Instrument, kind: str, ticks: int, raw: float, buy: bool) -> float:
    tick = instrument.price_tick
    if kind == "raw":
        return raw
    if kind == "beyond":  # outside the daily limits, on the side this order would rather not be
        edge = instrument.upper_limit_ticks + ticks if buy else instrument.lower_limit_ticks - ticks
        return instrument.from_ticks(edge)
    middle = round(instrument.pre_settlement / tick)
    price = instrument.from_ticks(middle + ticks)
    return price + tick * 0.37 if kind == "off" else price


class Lots:
    """What a user's trades in one instrument say the position must hold."""

    __slots__ = ("fill_value", "long", "long_today", "short", "short_today")

    def __init__(self) -> None:
        self.long = self.short = 0
        self.long_today = self.short_today = 0  # only kept apart on SHFE
        self.fill_value = 0.0  # Σ −(signed lots) × price × multiplier: cash paid for the lots, ever


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = make_engine()
        self.now = T0
        self.pending: list[AnyCommand] = []  # applied since the last flush: the batch to journal
        self.segment = bytearray(SEGMENT_MAGIC)  # the journal (one segment)
        self.journaled = 0  # seq of its last record
        self.last_ts = 0
        self.checkpoint: bytes | None = None
        self.next_order = 0
        # The independent model, from trades and transfers only.
        self.lots: dict[tuple[str, str], Lots] = defaultdict(Lots)
        self.cash: dict[str, float] = {}  # init + deposits − withdrawals, ever
        self.commissions: dict[str, float] = defaultdict(float)  # ever
        self.deposits_today: dict[str, float] = defaultdict(float)
        self.withdrawals_today: dict[str, float] = defaultdict(float)
        self.seen_trades: set[tuple[str, str]] = set()  # trades of the trading day already counted

    # -- the router's part --------------------------------------------------------------------------
    def ts(self) -> int:
        self.now += STEP_NS
        return self.now

    def apply(self, command: AnyCommand) -> Any:
        """Apply as the router does; a refused command (QaexError) is returned, not journaled."""
        try:
            result = self.engine.apply(command)
        except QaexError as exc:
            return exc
        self.pending.append(command)
        # It will be journaled: it must encode, and read back as the same command, or recovery could
        # not replay it (checked here rather than at the batch end, which an example may never reach).
        encoded = encode_record(self.journaled + len(self.pending), command)
        body = encoded[HEADER.size :]
        try:
            decoded = decode_command(body)
        except msgspec.ValidationError as exc:
            raise AssertionError(f"an applied command does not decode ({exc}): {command!r}") from exc
        assert encode_record(self.journaled + len(self.pending), decoded) == encoded
        self.count_new_trades()
        if isinstance(command, Settle):
            assert isinstance(result, dict)
            self.roll_day(result)
        return result

    def flush(self) -> None:
        """End a batch: flush the engine, then journal what was applied (the router's order)."""
        self.engine.flush()
        if not self.pending:
            return
        data = encode_batch(self.journaled + 1, self.pending)
        self.segment += data
        self.journaled += len(self.pending)
        self.last_ts = self.pending[-1].ts
        self.pending = []

    def replay(self, engine: Engine, after_seq: int) -> Engine:
        """Replay the journal records after `after_seq` into `engine`, as recovery does."""
        scan = scan_segment(bytes(self.segment), 1)
        assert scan.damage is None and scan.incomplete == 0
        assert len(scan.records) == self.journaled
        for record in scan.complete_records:
            if record.seq <= after_seq:
                continue
            engine.apply(record.command())  # a QaexError here means the replay diverged
            if record.batch_end:
                engine.flush()
        engine.flush()
        assert engine.seq == self.journaled
        return engine

    # -- the model ----------------------------------------------------------------------------------
    def count_new_trades(self) -> None:
        for user_id, record in self.engine.users.items():
            for trade_id, trade in record.trades.items():
                if (user_id, trade_id) in self.seen_trades:
                    continue
                self.seen_trades.add((user_id, trade_id))
                instrument = self.engine.instruments[trade.symbol]
                lots = self.lots[user_id, trade.symbol]
                volume = trade.volume
                buy = trade.direction == "BUY"
                lots.fill_value -= (volume if buy else -volume) * trade.price * instrument.volume_multiple
                self.commissions[user_id] += trade.commission
                if trade.offset == "OPEN":
                    if buy:
                        lots.long += volume
                        lots.long_today += volume
                    else:
                        lots.short += volume
                        lots.short_today += volume
                elif buy:  # closes a short
                    lots.short -= volume
                    if trade.offset == "CLOSETODAY" and instrument.separates_today:
                        lots.short_today -= volume
                else:
                    lots.long -= volume
                    if trade.offset == "CLOSETODAY" and instrument.separates_today:
                        lots.long_today -= volume

    def roll_day(self, prices: dict[str, float]) -> None:
        """A settlement cleared the day's trades and made today's lots yesterday's; the lots in a
        contract that expired with it were closed out in cash at its settlement price."""
        self.seen_trades.clear()
        for (_, symbol), lots in self.lots.items():
            lots.long_today = lots.short_today = 0
            instrument = self.engine.instruments[symbol]
            if instrument.expired and (lots.long or lots.short):
                lots.fill_value += (lots.long - lots.short) * prices[symbol] * instrument.volume_multiple
                lots.long = lots.short = 0
        self.deposits_today.clear()
        self.withdrawals_today.clear()

    # -- rules --------------------------------------------------------------------------------------
    @initialize()
    def open_accounts_and_trade(self) -> None:
        """Accounts, a first trade in every instrument (so positions exist from the start), and an
        order resting on each side (so market orders find something)."""
        for user_id, cash in USERS.items():
            self.open_account(user_id, cash)
        self.flush()
        for symbol in SYMBOLS:
            self.insert_ordinary("bob", symbol, "SELL", "OPEN", 2, 0, "GFD")
            self.insert_ordinary("alice", symbol, "BUY", "OPEN", 2, 0, "GFD")
            self.insert_ordinary("carol", symbol, "BUY", "OPEN", 1, -2, "GFD")
            self.insert_ordinary("carol", symbol, "SELL", "OPEN", 1, 2, "GFD")
            self.now += 1_000_000_000  # keep within the rate limit
        self.flush()
        assert self.engine.trades_made == len(SYMBOLS)

    def open_account(self, user_id: str, cash: float) -> None:
        result = self.apply(OpenAccount(ts=self.ts(), user_id=user_id, password_hash="h", init_cash=cash))
        if not isinstance(result, QaexError):
            self.cash[user_id] = cash

    @rule(
        user_id=st.sampled_from([LATE_USER, "alice", "da ve", "dave/../x"]),
        cash=st.sampled_from([0.0, 1_000_000.0, 5_000_000.0, -1.0, math.nan, math.inf, 1e13]),
    )
    def open_late_account(self, user_id: str, cash: float) -> None:
        exists = user_id in self.engine.users
        result = self.apply(OpenAccount(ts=self.ts(), user_id=user_id, password_hash="h", init_cash=cash))
        if isinstance(result, QaexError):  # an existing user, or cash that is not a sane amount
            assert exists or not 0 <= cash <= 1e9 or not user_id.isalnum(), result
        else:
            assert not exists
            self.cash[user_id] = cash

    @rule(user_id=users)
    def change_password(self, user_id: str) -> None:
        result = self.apply(ChangePassword(ts=self.ts(), user_id=user_id, password_hash=f"h{self.now}"))
        assert isinstance(result, QaexError) == (user_id not in self.engine.users)

    @rule(
        user_id=users,
        symbol=st.one_of(symbols, symbols, symbols, st.sampled_from(["SHFE.nope", "SHFE.no pe", "SH FE.x"])),
        direction=st.sampled_from(["BUY", "SELL"]),
        offset=st.sampled_from(["OPEN", "OPEN", "CLOSE", "CLOSETODAY"]),
        volume=volumes,
        price=prices,
        price_type=st.sampled_from(["LIMIT", "LIMIT", "LIMIT", "ANY", "BEST"]),
        time_condition=st.sampled_from(["GFD", "GFD", "IOC", "GTC"]),
        volume_condition=st.sampled_from(["ANY", "ANY", "ALL", "MIN"]),
        order_id=order_ids,
    )
    def insert(
        self,
        user_id: str,
        symbol: str,
        direction: str,
        offset: str,
        volume: int,
        price: tuple[str, int, float],
        price_type: str,
        time_condition: str,
        volume_condition: str,
        order_id: str,
    ) -> None:
        """Any order, hostile ones included ("new" and "dup" stand for a fresh and a used order id)."""
        record = self.engine.users.get(user_id)
        if order_id == "new" or (order_id == "dup" and not (record and record.orders)):
            self.next_order += 1
            order_id = f"o{self.next_order}"
        elif order_id == "dup":
            assert record is not None
            order_id = next(iter(record.orders))
        instrument = self.engine.instruments.get(symbol) or self.engine.instruments[SYMBOLS[0]]
        limit_price = price_of(instrument, *price, buy=direction == "BUY")
        exchange_id, instrument_id = symbol.split(".")
        request = InsertOrder(
            user_id=user_id,
            order_id=order_id,
            exchange_id=exchange_id,
            instrument_id=instrument_id,
            direction=direction,  # type: ignore[arg-type]
            offset=offset,  # type: ignore[arg-type]
            volume=volume,
            price_type=price_type,  # type: ignore[arg-type]
            limit_price=limit_price,  # ignored by market orders, but still a number the engine reads
            time_condition=time_condition,  # type: ignore[arg-type]
            volume_condition=volume_condition,  # type: ignore[arg-type]
        )
        known = record is not None and order_id in record.orders
        before = record.orders[order_id] if known else None
        result = self.apply(Insert(ts=self.ts(), order=request))
        if isinstance(result, QaexError):
            # Refused as a whole (no such user, a bad or reused id, a value out of bounds, over the
            # rate): nothing is recorded (and the replay checks that nothing else changed either).
            ordinary = price[0] == "grid" and 1 <= volume <= 6 and 0 < limit_price <= 1e6
            if record is not None and order_id.startswith("o") and not known and ordinary:
                assert result.code == "rate_limited", result
            assert record is None or record.orders.get(order_id) is before
            return
        # Accepted: recorded under its id, FINISHED with the reason if risk checks rejected it.
        assert record is not None and not known and record.orders[order_id] is result

    @rule(
        user_id=st.sampled_from(list(USERS)),
        symbol=symbols,
        direction=st.sampled_from(["BUY", "SELL"]),
        offset=st.sampled_from(["OPEN", "CLOSE", "CLOSETODAY"]),
        price=st.sampled_from(HOSTILE_PRICES),
        volume=st.sampled_from(HOSTILE_VOLUMES),
        which=st.sampled_from(["price", "volume", "both"]),
        price_type=st.sampled_from(["LIMIT", "LIMIT", "ANY"]),
    )
    def insert_hostile(
        self,
        user_id: str,
        symbol: str,
        direction: str,
        offset: str,
        price: float,
        volume: int,
        which: str,
        price_type: str,
    ) -> None:
        """An order from a user who exists, with a hostile price, volume or both: it must be refused
        as a whole or recorded as rejected, and whatever is applied must journal and replay."""
        self.insert(
            user_id,
            symbol,
            direction,
            offset,
            volume if which != "price" else 1,
            ("raw", 0, price) if which != "volume" else ("grid", 0, 0.0),
            price_type,
            "IOC" if price_type == "ANY" else "GFD",
            "ANY",
            "new",
        )

    @rule(
        user_id=st.sampled_from(list(USERS)),
        symbol=symbols,
        direction=st.sampled_from(["BUY", "SELL"]),
        offset=st.sampled_from(["OPEN", "OPEN", "CLOSE", "CLOSETODAY"]),
        volume=st.integers(1, 5),
        ticks=st.integers(-3, 3),
        kind=st.sampled_from(["GFD", "GFD", "GFD", "IOC", "FOK", "MARKET"]),
        aggressive=st.booleans(),
    )
    def trade(
        self,
        user_id: str,
        symbol: str,
        direction: str,
        offset: str,
        volume: int,
        ticks: int,
        kind: str,
        aggressive: bool,
    ) -> None:
        """An ordinary order near the middle of the book or (`aggressive`) near the best opposite
        price, so that orders cross and positions build up."""
        if aggressive:
            ticks = self.ticks_from_best(symbol, direction == "BUY", ticks)
        self.insert_ordinary(user_id, symbol, direction, offset, volume, ticks, kind)

    @rule(
        pair=st.permutations(list(USERS)),
        symbol=symbols,
        maker_buys=st.booleans(),
        offsets=st.tuples(*[st.sampled_from(["OPEN", "OPEN", "OPEN", "CLOSE", "CLOSETODAY"])] * 2),
        volumes=st.tuples(st.integers(1, 5), st.integers(1, 5)),
        ticks=st.integers(-3, 3),
        through=st.integers(0, 2),
        kind=st.sampled_from(["GFD", "GFD", "IOC", "FOK", "MARKET"]),
    )
    def cross(
        self,
        pair: list[str],
        symbol: str,
        maker_buys: bool,
        offsets: tuple[str, str],
        volumes: tuple[int, int],
        ticks: int,
        through: int,
        kind: str,
    ) -> None:
        """A resting order and one that crosses it (`through` ticks beyond its price): a trade,
        unless risk checks or self-trade prevention say otherwise."""
        maker, taker = pair[:2]
        buy, sell = ("BUY", "SELL") if maker_buys else ("SELL", "BUY")
        self.insert_ordinary(maker, symbol, buy, offsets[0], volumes[0], ticks, "GFD")
        taker_ticks = ticks - through if maker_buys else ticks + through
        self.insert_ordinary(taker, symbol, sell, offsets[1], volumes[1], taker_ticks, kind)

    @precondition(lambda self: any(lots.long or lots.short for lots in self.lots.values()))
    @rule(data=st.data(), ticks=st.integers(-3, 3), kind=st.sampled_from(["GFD", "GFD", "IOC", "MARKET"]))
    def close_held(self, data: st.DataObject, ticks: int, kind: str) -> None:
        """Close (some or a little more than all of) lots that are held."""
        held = sorted(
            (user_id, symbol, long, count)
            for (user_id, symbol), lots in self.lots.items()
            for long, count in ((True, lots.long), (False, lots.short))
            if count
        )
        user_id, symbol, long, count = data.draw(st.sampled_from(held))
        volume = data.draw(st.integers(1, count + 1))
        offset = data.draw(st.sampled_from(["CLOSE", "CLOSETODAY"]))
        ticks = self.ticks_from_best(symbol, not long, ticks)  # mostly against what rests opposite
        self.insert_ordinary(user_id, symbol, "SELL" if long else "BUY", offset, volume, ticks, kind)

    def ticks_from_best(self, symbol: str, buy: bool, ticks: int) -> int:
        """Ticks from the middle of a price `ticks` through the best opposite price (into the book
        for ticks >= 0), or `ticks` from the middle when nothing rests opposite."""
        book, instrument = self.engine.books[symbol], self.engine.instruments[symbol]
        best = book.best_ask() if buy else book.best_bid()
        if best is None:
            return ticks
        middle = round(instrument.pre_settlement / instrument.price_tick)
        return best - middle + (ticks if buy else -ticks)

    def insert_ordinary(
        self, user_id: str, symbol: str, direction: str, offset: str, volume: int, ticks: int, kind: str
    ) -> None:
        """A fresh order id, a price on the grid `ticks` from the middle, and one of the usual kinds:
        GFD limit, IOC limit (FAK), IOC + ALL (FOK) or market (ANY + IOC)."""
        market = kind == "MARKET"
        self.insert(
            user_id,
            symbol,
            direction,
            offset,
            volume,
            ("grid", ticks, 0.0),
            "ANY" if market else "LIMIT",
            "GFD" if kind == "GFD" else "IOC",
            "ALL" if kind == "FOK" else "ANY",
            "new",
        )

    @rule(
        user_id=users,
        which=st.sampled_from(["alive", "alive", "own", "other", "unknown"]),
        index=st.integers(0, 50),
    )
    def cancel(self, user_id: str, which: str, index: int) -> None:
        """Cancel an open order, a finished one, someone else's, or one that does not exist."""
        engine = self.engine
        owner = (
            user_id if which in ("alive", "own") else next((u for u in engine.users if u != user_id), user_id)
        )
        orders = engine.users[owner].orders if owner in engine.users else {}
        ids = [i for i, o in orders.items() if o.status == "ALIVE" or which != "alive"]
        order_id = ids[index % len(ids)] if ids and which != "unknown" else "unknown-order"
        record = engine.users.get(user_id)
        mine = record.orders.get(order_id) if record is not None else None
        alive = mine is not None and mine.status == "ALIVE"
        result = self.apply(Cancel(ts=self.ts(), user_id=user_id, order_id=order_id))
        assert isinstance(result, QaexError) == (not alive)
        if alive:
            assert result is mine and mine.status == "FINISHED" and mine.last_msg == "已撤单"

    @rule(user_id=users, amount=amounts)
    def deposit(self, user_id: str, amount: float) -> None:
        result = self.apply(Deposit(ts=self.ts(), user_id=user_id, amount=amount))
        if not isinstance(result, QaexError):
            self.cash[user_id] += amount
            self.deposits_today[user_id] += amount

    @rule(user_id=users, amount=amounts)
    def withdraw(self, user_id: str, amount: float) -> None:
        result = self.apply(Withdraw(ts=self.ts(), user_id=user_id, amount=amount))
        if not isinstance(result, QaexError):
            self.cash[user_id] -= amount
            self.withdrawals_today[user_id] += amount
            assert result.available >= -1e-6, "a withdrawal never makes available negative"

    @rule()
    def mark_to_market(self) -> None:
        result = self.apply(MarkToMarket(ts=self.ts()))
        assert not isinstance(result, QaexError)

    @rule(symbol=st.one_of(symbols, st.just("SHFE.nope")), suspended=st.sampled_from([False, False, True]))
    def suspend(self, symbol: str, suspended: bool) -> None:
        result = self.apply(SetSuspended(ts=self.ts(), symbol=symbol, suspended=suspended))
        assert isinstance(result, QaexError) == (symbol not in self.engine.instruments)

    @rule(
        chosen=st.dictionaries(
            symbols,
            st.one_of(
                st.tuples(st.just("grid"), st.integers(-20, 20), st.just(0.0)),
                st.tuples(st.just("off"), st.integers(-3, 3), st.just(0.0)),
                st.tuples(st.just("raw"), st.just(0), st.sampled_from(HOSTILE_SETTLEMENT_PRICES)),
            ),
            max_size=3,
        ),
        trading_day=st.sampled_from(["", "20991231"]),
        unknown=st.sampled_from(["", "", "", "SHFE.zz2601", "not a symbol"]),
    )
    def settle(self, chosen: dict[str, tuple[str, int, float]], trading_day: str, unknown: str) -> None:
        settlement = {
            symbol: price_of(self.engine.instruments[symbol], *choice, buy=True)
            for symbol, choice in chosen.items()
        }
        if unknown:  # a price for a symbol the exchange does not list (or that is no symbol at all)
            settlement[unknown] = 100.0
        result = self.apply(Settle(ts=self.ts(), prices=settlement, trading_day=trading_day))
        if isinstance(result, QaexError):  # an off-grid or hostile price or symbol; nothing changed
            ordinary = not unknown and all(kind == "grid" for kind, _, _ in chosen.values())
            assert not (ordinary and all(0 < price <= 1e6 for price in settlement.values())), result
            return
        for record in self.engine.users.values():
            assert not record.orders and not record.trades
        assert not any(len(book) for book in self.engine.books.values())

    @rule(gap_ns=st.sampled_from([0, 0, 1, 1_000_000_000, 3_600 * 1_000_000_000, 86_400 * 1_000_000_000]))
    def end_batch(self, gap_ns: int) -> None:
        """The router flushes after each batch; the next one may come much later."""
        self.flush()
        self.now += gap_ns

    @rule(user_id=users, admin=st.booleans())
    def look(self, user_id: str, admin: bool) -> None:
        """What happens outside the router: a session's first snapshot (`user_tree`, as
        `Exchange.seed_from_engine` takes it) or the admin state-digest endpoint."""
        if admin:
            self.engine.state_digest()
        elif user_id in self.engine.users:
            self.engine.user_tree(user_id)

    @rule()
    def take_checkpoint(self) -> None:
        """A checkpoint between two batches, as the journal takes it after a commit."""
        self.flush()
        data = encode_checkpoint(self.engine, self.journaled, self.last_ts)
        restored = decode_checkpoint(data)
        assert restored.seq == self.journaled and restored.last_ts == self.last_ts
        assert restored.engine.state_digest() == self.engine.state_digest()
        self.checkpoint = data

    @rule(from_checkpoint=st.booleans())
    def restart(self, from_checkpoint: bool) -> None:
        """Stop, recover from the journal (and maybe the newest checkpoint), and go on."""
        self.flush()
        expected = self.engine.state_digest()  # marks accounts, as the journal's shutdown does
        if from_checkpoint and self.checkpoint is not None:
            checkpoint = decode_checkpoint(self.checkpoint)
            engine = self.replay(checkpoint.engine, checkpoint.seq)
        else:
            engine = self.replay(make_engine(), 0)
        assert engine.state_digest() == expected, "the replayed state differs from the live state"
        self.engine = engine
        for user_id in engine.users:  # Exchange.seed_from_engine, before serving
            engine.user_tree(user_id)
        self.now += 1_000_000_000  # the router's clock resumes after the last record

    # -- invariants ---------------------------------------------------------------------------------
    @invariant()
    def journal_keeps_up(self) -> None:
        assert self.engine.seq == self.journaled + len(self.pending)

    @invariant()
    def books_are_not_crossed_and_hold_exactly_the_alive_orders(self) -> None:
        engine = self.engine
        for book in engine.books.values():
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is None or ask is None or bid < ask, book
        resting = 0
        for record in engine.users.values():
            for order in record.orders.values():
                book = engine.books.get(order.symbol)
                if order.status == "ALIVE":
                    resting += 1
                    assert book is not None and order.seqno in book
                    assert book.volume_left(order.seqno) == order.volume_left > 0
                    assert order.price_type == "LIMIT" and order.time_condition != "IOC"
                else:
                    assert book is None or order.seqno not in book
        assert resting == sum(len(book) for book in engine.books.values())

    @invariant()
    def order_volume_is_conserved(self) -> None:
        for record in self.engine.users.values():
            filled: dict[str, int] = defaultdict(int)
            for trade in record.trades.values():
                filled[trade.order_id] += trade.volume
            for order_id, order in record.orders.items():
                if order.volume_orign > 0:
                    assert 0 <= order.volume_left <= order.volume_orign
                assert order.volume_orign == order.volume_left + filled[order_id], order
                if order.status == "FINISHED" and order.volume_left == 0 and order.volume_orign > 0:
                    assert order.last_msg == "全部成交"
            assert set(filled) <= set(record.orders)

    @invariant()
    def trades_pair_up_within_the_limits(self) -> None:
        engine = self.engine
        by_exchange_id: dict[str, list[Any]] = defaultdict(list)
        bought: dict[str, int] = defaultdict(int)
        sold: dict[str, int] = defaultdict(int)
        for record in engine.users.values():
            for trade in record.trades.values():
                by_exchange_id[trade.exchange_trade_id].append(trade)
                (bought if trade.direction == "BUY" else sold)[trade.symbol] += trade.volume
                instrument = engine.instruments[trade.symbol]
                assert instrument.to_ticks(trade.price) is not None
                assert instrument.lower_limit <= trade.price <= instrument.upper_limit
                assert trade.commission >= 0.0 and math.isfinite(trade.commission)
                order = record.orders[trade.order_id]
                if order.price_type == "LIMIT":
                    assert (
                        trade.price <= order.limit_price if order.is_buy else trade.price >= order.limit_price
                    )
        assert bought == sold
        for pair in by_exchange_id.values():
            assert len(pair) == 2
            buy, sell = sorted(pair, key=lambda trade: trade.direction)
            assert (buy.direction, sell.direction) == ("BUY", "SELL")
            assert buy.user_id != sell.user_id  # no self-trade
            assert (buy.symbol, buy.price, buy.volume, buy.trade_date_time) == (
                sell.symbol, sell.price, sell.volume, sell.trade_date_time
            )  # fmt: skip

    @invariant()
    def positions_equal_trades(self) -> None:
        engine = self.engine
        long_total: dict[str, int] = defaultdict(int)
        short_total: dict[str, int] = defaultdict(int)
        for (user_id, symbol), lots in self.lots.items():
            long_total[symbol] += lots.long
            short_total[symbol] += lots.short
            if not (lots.long or lots.short):
                continue
            position = engine.users[user_id].account.positions[symbol]
            assert (position.volume_long, position.volume_short) == (lots.long, lots.short), (user_id, symbol)
            if engine.instruments[symbol].separates_today:
                assert position.volume_long_today == lots.long_today
                assert position.volume_short_today == lots.short_today
        for user_id, record in engine.users.items():
            frozen: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
            for order in record.orders.values():
                if order.status == "ALIVE" and order.offset != "OPEN":
                    split = frozen[order.symbol, not order.is_buy]  # (symbol, closes the long side)
                    split[0] += order.frozen_volume_his
                    split[1] += order.frozen_volume_today
            for symbol, p in record.account.positions.items():
                lots = self.lots.get((user_id, symbol)) or Lots()
                assert (p.volume_long, p.volume_short) == (lots.long, lots.short)
                assert p.volume_long == p.volume_long_his + p.volume_long_today
                assert p.volume_short == p.volume_short_his + p.volume_short_today
                assert (
                    min(p.volume_long_his, p.volume_long_today, p.volume_short_his, p.volume_short_today) >= 0
                )
                assert [p.volume_long_frozen_his, p.volume_long_frozen_today] == frozen[symbol, True]
                assert [p.volume_short_frozen_his, p.volume_short_frozen_today] == frozen[symbol, False]
                assert p.volume_long_frozen_his <= p.volume_long_his
                assert p.volume_long_frozen_today <= p.volume_long_today
                assert p.volume_short_frozen_his <= p.volume_short_his
                assert p.volume_short_frozen_today <= p.volume_short_today
        for symbol in engine.instruments:
            assert long_total[symbol] == short_total[symbol]
            if engine.instruments[symbol].expired:  # closed out: no lots, and no open interest left
                assert long_total[symbol] == 0 and engine.open_interest[symbol] == 0
            else:
                assert engine.open_interest[symbol] - BASE_OPEN_INTEREST[symbol] == long_total[symbol]

    @invariant()
    def account_identities_hold(self) -> None:
        engine = self.engine
        for user_id, record in engine.users.items():
            account = record.account
            a = account.to_diff()
            bad = {k: v for k, v in a.items() if not finite(v)}
            assert not bad, f"{user_id}: not finite {bad}"
            assert a["static_balance"] == a["pre_balance"] + a["deposit"] - a["withdraw"]
            assert a["balance"] == (
                a["static_balance"]
                + a["close_profit"]
                - a["commission"]
                + a["premium"]
                + a["position_profit"]
            )
            assert a["available"] == (
                a["balance"] - a["margin"] - a["frozen_margin"] - a["frozen_commission"] - a["frozen_premium"]
            )
            assert a["risk_ratio"] == (a["margin"] / a["balance"] if a["balance"] > 0 else 0.0)
            assert a["premium"] == a["frozen_premium"] == 0.0
            positions = account.positions.values()
            assert close(a["margin"], math.fsum(p.margin for p in positions))
            assert close(a["position_profit"], math.fsum(p.position_profit for p in positions))
            assert close(a["float_profit"], math.fsum(p.float_profit for p in positions))
            # Frozen money is exactly 0 once no order of the user is open (open or close: the account
            # snaps its totals to 0 when the last frozen order goes), else the sum over open orders.
            if not any(o.status == "ALIVE" for o in record.orders.values()):
                assert a["frozen_margin"] == a["frozen_commission"] == 0.0
            alive = [o for o in record.orders.values() if o.status == "ALIVE" and o.offset == "OPEN"]
            assert close(a["frozen_margin"], math.fsum(o.frozen_margin for o in alive))
            assert close(a["frozen_commission"], math.fsum(o.frozen_commission for o in alive))
            for order in record.orders.values():
                assert finite(order.frozen_margin) and order.frozen_margin >= 0.0
                if order.status == "FINISHED":
                    assert order.frozen_margin == order.frozen_commission == 0.0
                    assert order.frozen_volume_his == order.frozen_volume_today == 0
            assert close(a["commission"], math.fsum(t.commission for t in record.trades.values()))
            assert close(a["deposit"], self.deposits_today[user_id])
            assert close(a["withdraw"], self.withdrawals_today[user_id])
            # The balance from cash and fills alone, however it is split into profits and settlements.
            value = 0.0
            for symbol, position in account.positions.items():
                lots = self.lots[user_id, symbol]
                net = lots.long - lots.short
                multiple = engine.instruments[symbol].volume_multiple
                value += lots.fill_value + (net * position.last_price * multiple if net else 0.0)
            expected = self.cash[user_id] - self.commissions[user_id] + value
            assert math.isclose(a["balance"], expected, rel_tol=1e-9, abs_tol=1e-4), (a["balance"], expected)

    @invariant()
    def held_positions_are_finite(self) -> None:
        for record in self.engine.users.values():
            for p in record.account.positions.values():
                rendered = msgspec.structs.asdict(p)
                nan_when_flat = {
                    "open_price_long": p.volume_long == 0,
                    "position_price_long": p.volume_long == 0,
                    "open_price_short": p.volume_short == 0,
                    "position_price_short": p.volume_short == 0,
                    "last_price": p.volume_long == 0 and p.volume_short == 0,
                }
                for name, value in rendered.items():
                    if name in nan_when_flat and nan_when_flat[name] and math.isnan(value):
                        continue
                    assert finite(value), f"{p.symbol} of {p.user_id}: {name} = {value}"
                if p.volume_long == 0:
                    assert math.isnan(p.open_price_long) and p.margin_long == 0.0
                if p.volume_short == 0:
                    assert math.isnan(p.open_price_short) and p.margin_short == 0.0


EngineMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_invariants_hold_and_replays_match = EngineMachine.TestCase
