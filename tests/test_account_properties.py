"""Property test: the account identities hold after any sequence of account operations.

A small driver plays each order's life the way the engine does: ``freeze`` when it arrives,
``fill`` (then the driver lowers ``volume_left``) for each fill at a price no worse than the
limit, ``release`` when it is cancelled with lots left. Between orders the market moves
(``mark``), cash comes and goes, and the day is settled whenever no order is open.

Besides the DIFF identities, the balance is checked against an independent model that knows
nothing of position prices: cash in − cash out − commissions + Σ(−signed fill value) + net lots
valued at the last price. That model must agree however the account splits profit into close
profit, position profit and settlement.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qaex.core.account import (
    MSG_CLOSE,
    MSG_CLOSE_HIS,
    MSG_CLOSE_TODAY,
    MSG_OPEN_FUNDS,
    MSG_WITHDRAW_FUNDS,
    Account,
)
from qaex.core.errors import RiskError
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.core.orders import Direction, Offset, Order

INSTRUMENTS = InstrumentRegistry()
# One exchange that separates today's lots (SHFE), two that do not, with very different scales.
SYMBOLS = ["SHFE.rb2601", "DCE.m2601", "CFFEX.IF2512"]
INIT_CASH = 3_000_000.0
ticks = st.integers(min_value=-40, max_value=40)


def close_enough(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


class AccountMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = Account("u", INIT_CASH)
        self.open_orders: list[tuple[Order, Instrument]] = []
        self.seqno = 0
        self.cash_in = INIT_CASH
        self.commissions = 0.0
        self.fill_value: dict[str, float] = defaultdict(float)  # Σ −signed lots × price × multiplier
        self.net_lots: dict[str, int] = defaultdict(int)  # long − short, from the fills alone
        self.long_lots: dict[str, int] = defaultdict(int)
        self.short_lots: dict[str, int] = defaultdict(int)

    # -- helpers ----------------------------------------------------------------------------------
    def price(self, instrument: Instrument, offset_ticks: int) -> float:
        """A price `offset_ticks` away from the contract's pre-settlement price, on the tick grid."""
        base = instrument.to_ticks(instrument.pre_settlement)
        assert base is not None
        return instrument.from_ticks(base + offset_ticks)

    # -- rules ------------------------------------------------------------------------------------
    @rule(
        symbol=st.sampled_from(SYMBOLS),
        direction=st.sampled_from(["BUY", "SELL"]),
        offset=st.sampled_from(["OPEN", "OPEN", "CLOSE", "CLOSETODAY"]),
        volume=st.integers(min_value=1, max_value=4),
        offset_ticks=ticks,
        market=st.booleans(),
    )
    def insert(
        self, symbol: str, direction: Direction, offset: Offset, volume: int, offset_ticks: int, market: bool
    ) -> None:
        instrument = INSTRUMENTS[symbol]
        limit = self.price(instrument, offset_ticks)
        self.seqno += 1
        order = Order(
            seqno=self.seqno, user_id="u", order_id=f"o{self.seqno}", exchange_id=instrument.exchange_id,
            instrument_id=instrument.instrument_id, direction=direction, offset=offset, volume_orign=volume,
            price_type="ANY" if market else "LIMIT", limit_price=0.0 if market else limit,
            time_condition="IOC" if market else "GFD", volume_condition="ANY", insert_date_time=0,
            volume_left=volume,
        )  # fmt: skip
        # The engine freezes a market order at the upper limit, the worst price a buy can fill at.
        freeze_price = instrument.upper_limit if market else limit
        before = self.account.to_diff()
        before_available = self.account.available
        try:
            self.account.freeze(order, instrument, freeze_price)
        except RiskError as error:
            assert error.message in (MSG_OPEN_FUNDS, MSG_CLOSE, MSG_CLOSE_HIS, MSG_CLOSE_TODAY)
            assert _same(self.account.to_diff(), before)
            return
        if offset == "OPEN":
            assert self.account.available >= -1e-6, "an accepted open never makes available negative"
        else:
            # A close freezes lots, not money: it is accepted even when a price move already made
            # available negative (closing is how such an account gets out), and leaves it as it was.
            assert self.account.available == before_available
        self.open_orders.append((order, instrument))

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        direction=st.sampled_from(["BUY", "SELL"]),
        volume=st.integers(min_value=1, max_value=4),
        offset_ticks=ticks,
        split=st.booleans(),
    )
    def open_and_fill(
        self, symbol: str, direction: Direction, volume: int, offset_ticks: int, split: bool
    ) -> None:
        """An order that trades at once, in one or two fills (so positions exist between orders)."""
        count = len(self.open_orders)
        self.insert(symbol, direction, "OPEN", volume, offset_ticks, market=False)
        if len(self.open_orders) == count:
            return  # refused
        order, _ = self.open_orders[-1]
        for part in [volume // 2, volume - volume // 2] if split and volume > 1 else [volume]:
            self._fill(len(self.open_orders) - 1, part, order.limit_price)

    @precondition(lambda self: any(p.volume_long or p.volume_short for p in self.account.positions.values()))
    @rule(
        data=st.data(),
        offset=st.sampled_from(["CLOSE", "CLOSETODAY"]),
        offset_ticks=ticks,
        fill_now=st.booleans(),
    )
    def close_held(self, data: st.DataObject, offset: Offset, offset_ticks: int, fill_now: bool) -> None:
        """Close lots that are held (random inserts mostly find nothing to close), often filling at once."""
        held = [
            (symbol, long)
            for symbol, p in self.account.positions.items()
            for long, lots in ((True, p.volume_long), (False, p.volume_short))
            if lots
        ]
        symbol, long = data.draw(st.sampled_from(held))
        position = self.account.positions[symbol]
        lots = position.volume_long if long else position.volume_short
        volume = data.draw(st.integers(min_value=1, max_value=lots + 1))
        count = len(self.open_orders)
        self.insert(symbol, "SELL" if long else "BUY", offset, volume, offset_ticks, market=False)
        if fill_now and len(self.open_orders) > count:
            order, _ = self.open_orders[-1]
            first = data.draw(st.integers(min_value=1, max_value=volume))
            self._fill(len(self.open_orders) - 1, first, order.limit_price)
            if first < volume:
                self._fill(len(self.open_orders) - 1, volume - first, order.limit_price)

    @precondition(lambda self: self.open_orders)
    @rule(data=st.data(), improve_ticks=st.integers(min_value=0, max_value=5))
    def fill(self, data: st.DataObject, improve_ticks: int) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.open_orders) - 1))
        order, instrument = self.open_orders[index]
        volume = data.draw(st.integers(min_value=1, max_value=order.volume_left))
        if order.price_type == "ANY":  # a market order fills at whatever the book offers
            price = self.price(instrument, data.draw(ticks))
        else:  # a limit order never fills worse than its limit: lower for a buy, higher for a sell
            limit_ticks = instrument.to_ticks(order.limit_price)
            assert limit_ticks is not None
            price = instrument.from_ticks(
                limit_ticks - improve_ticks if order.is_buy else limit_ticks + improve_ticks
            )
        self._fill(index, volume, price)

    def _fill(self, index: int, volume: int, price: float) -> None:
        """Fill as the engine does: the account first, then lower volume_left."""
        order, instrument = self.open_orders[index]
        commission = self.account.fill(order, instrument, price, volume)
        order.volume_left -= volume
        assert commission >= 0.0
        self.commissions += commission
        signed = volume if order.is_buy else -volume
        self.fill_value[instrument.symbol] -= signed * price * instrument.volume_multiple
        self.net_lots[instrument.symbol] += signed
        if order.offset == "OPEN":
            side = self.long_lots if order.is_buy else self.short_lots
            side[instrument.symbol] += volume
        else:
            side = self.short_lots if order.is_buy else self.long_lots
            side[instrument.symbol] -= volume
        if order.volume_left == 0:
            del self.open_orders[index]
            assert order.frozen_margin == 0.0 and order.frozen_commission == 0.0
            assert order.frozen_volume_his == 0 and order.frozen_volume_today == 0

    @precondition(lambda self: self.open_orders)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.open_orders) - 1))
        order, _ = self.open_orders.pop(index)
        self.account.release(order)
        assert order.frozen_margin == 0.0 and order.frozen_commission == 0.0
        assert order.frozen_volume_his == 0 and order.frozen_volume_today == 0

    @rule(symbol=st.sampled_from(SYMBOLS), offset_ticks=ticks)
    def mark(self, symbol: str, offset_ticks: int) -> None:
        instrument = INSTRUMENTS[symbol]
        self.account.mark(instrument, self.price(instrument, offset_ticks))

    @rule(amount=st.floats(min_value=0.01, max_value=1_000_000.0))
    def deposit(self, amount: float) -> None:
        self.account.deposit_cash(amount)
        self.cash_in += amount

    @rule(amount=st.floats(min_value=0.01, max_value=4_000_000.0))
    def withdraw(self, amount: float) -> None:
        available = self.account.available
        try:
            self.account.withdraw_cash(amount)
        except RiskError as error:
            assert error.message == MSG_WITHDRAW_FUNDS and amount > available
            return
        self.cash_in -= amount
        assert self.account.available >= -1e-6

    @precondition(lambda self: not self.open_orders)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        prices = {
            symbol: self.price(INSTRUMENTS[symbol], data.draw(ticks))
            for symbol in data.draw(st.lists(st.sampled_from(SYMBOLS), unique=True))
        }
        self.account.settle(prices, INSTRUMENTS)
        account = self.account
        assert account.deposit == account.withdraw == account.close_profit == account.commission == 0.0
        assert account.position_profit == pytest.approx(0.0, abs=1e-6)
        assert close_enough(account.balance, account.pre_balance)
        for position in account.positions.values():
            assert position.volume_long_today == position.volume_short_today == 0

    # -- invariants -------------------------------------------------------------------------------
    @invariant()
    def diff_identities_hold(self) -> None:
        a = self.account.to_diff()
        assert a["static_balance"] == a["pre_balance"] + a["deposit"] - a["withdraw"]
        assert close_enough(
            a["balance"],
            a["static_balance"] + a["close_profit"] - a["commission"] + a["premium"] + a["position_profit"],
        )
        assert close_enough(
            a["available"],
            a["balance"] - a["margin"] - a["frozen_margin"] - a["frozen_commission"] - a["frozen_premium"],
        )
        assert a["risk_ratio"] == (a["margin"] / a["balance"] if a["balance"] > 0 else 0.0)

    @invariant()
    def frozen_money_matches_open_orders(self) -> None:
        account = self.account
        if not any(o.offset == "OPEN" for o, _ in self.open_orders):  # close orders freeze lots only
            assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
        assert close_enough(account.frozen_margin, sum(o.frozen_margin for o, _ in self.open_orders))
        assert close_enough(account.frozen_commission, sum(o.frozen_commission for o, _ in self.open_orders))
        assert account.frozen_margin >= -1e-6 and account.frozen_commission >= -1e-6

    @invariant()
    def totals_are_sums_of_positions(self) -> None:
        positions = self.account.positions.values()
        assert close_enough(self.account.margin, sum(p.margin for p in positions))
        assert close_enough(self.account.position_profit, sum(p.position_profit for p in positions))
        assert close_enough(self.account.float_profit, sum(p.float_profit for p in positions))

    @invariant()
    def lots_match_fills_and_frozen_lots_match_close_orders(self) -> None:
        frozen: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
        for order, instrument in self.open_orders:
            if order.offset != "OPEN":
                split = frozen[instrument.symbol, not order.is_buy]  # (symbol, closes the long side)
                split[0] += order.frozen_volume_his
                split[1] += order.frozen_volume_today
        for symbol, p in self.account.positions.items():
            assert p.volume_long == p.volume_long_his + p.volume_long_today == self.long_lots[symbol]
            assert p.volume_short == p.volume_short_his + p.volume_short_today == self.short_lots[symbol]
            assert [p.volume_long_frozen_his, p.volume_long_frozen_today] == frozen[symbol, True]
            assert [p.volume_short_frozen_his, p.volume_short_frozen_today] == frozen[symbol, False]
            assert 0 <= p.volume_long_frozen_his <= p.volume_long_his
            assert 0 <= p.volume_long_frozen_today <= p.volume_long_today
            assert 0 <= p.volume_short_frozen_his <= p.volume_short_his
            assert 0 <= p.volume_short_frozen_today <= p.volume_short_today
            assert (p.pos_long_his, p.pos_long_today) == (p.volume_long_his, p.volume_long_today)
            assert (p.pos_short_his, p.pos_short_today) == (p.volume_short_his, p.volume_short_today)
            if p.volume_long == 0:
                assert p.margin_long == p.position_profit_long == p.float_profit_long == 0.0
            if p.volume_short == 0:
                assert p.margin_short == p.position_profit_short == p.float_profit_short == 0.0

    @invariant()
    def balance_matches_an_independent_cash_model(self) -> None:
        unrealized = 0.0
        for symbol, position in self.account.positions.items():
            lots = self.net_lots[symbol]
            value = lots * position.last_price * INSTRUMENTS[symbol].volume_multiple if lots else 0.0
            unrealized += self.fill_value[symbol] + value
        expected = self.cash_in - self.commissions + unrealized
        assert math.isclose(self.account.balance, expected, rel_tol=1e-9, abs_tol=1e-4)


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a.values(), b.values(), strict=True)
    )


AccountMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_account_identities_hold_after_any_sequence = AccountMachine.TestCase
