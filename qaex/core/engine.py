"""The exchange engine: books, accounts, orders and trades, changed only by commands.

`Engine.apply` takes one command at a time (single writer) and changes state deterministically: the
command carries its timestamp and the engine assigns sequence numbers, exchange order ids and trade ids
from its own counters, so replaying the same commands rebuilds exactly the same state.

The engine records what each command touched. `Engine.flush` then marks every holder of an
instrument whose price moved to market (once per batch, not once per fill), renders each touched order,
trade, position and account as DIFF shows it, and hands the result to the gateway as a `Batch`.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

import msgspec

from qaex.core import errors, limits, main_contracts, notify_codes
from qaex.core.account import Account, Position
from qaex.core.book import OrderBook
from qaex.core.calendar import CHINA_TZ as CHINA_TZ  # trading days live in qaex.core.calendar
from qaex.core.calendar import MarketHours, default_holiday_calendar, sessions
from qaex.core.calendar import next_trading_day as next_trading_day
from qaex.core.calendar import trading_day_of as trading_day_of
from qaex.core.commands import (
    AnyCommand,
    Cancel,
    ChangePassword,
    Delist,
    Deposit,
    Insert,
    MarkToMarket,
    OpenAccount,
    SetSuspended,
    Settle,
    UpsertInstrument,
    Withdraw,
)
from qaex.core.errors import NotFound, QaexError, RiskError, risk
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.core.orders import (
    MSG_ACCEPTED,
    MSG_CANCELLED,
    MSG_FILLED,
    MSG_IOC_CANCELLED,
    MSG_PARTIAL,
    InsertOrder,
    Order,
    Trade,
)
from qaex.core.quote import DEPTH_LEVELS  # the levels a batch carries per book: what a DIFF quote shows

RENDERED = dict[str, Any]
CommandResult = Order | Account | Instrument | dict[str, float] | int | None
"""What `Engine.apply` returns for some command; its overloads say which for which command."""
MAX_REJECTED_KEPT = 200
"""Orders refused by the risk checks that one user's trading day keeps (and shows); older ones are dropped."""
NAN = math.nan


@dataclass(slots=True)
class UserRecord:
    """Everything the exchange keeps about one user besides the account figures."""

    user_id: str
    password_hash: str
    account: Account
    orders: dict[str, Order] = field(default_factory=dict)  # by client order_id
    trades: dict[str, Trade] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_window: int = -1  # rate limit: the second being counted
    orders_in_window: int = 0
    # Client order ids of the day's orders refused by the risk checks, oldest first (MAX_REJECTED_KEPT).
    rejected: dict[str, None] = field(default_factory=dict)
    # The exchange's own accounts (ids with limits.RESERVED_USER_PREFIX: the market maker) are not
    # held to the per-user order rate: one ladder per listed contract is hundreds of orders a second.
    rate_exempt: bool = False


@dataclass(slots=True)
class MarketTrade:
    symbol: str
    price: float
    volume: int
    ts: int
    open_interest: int


Depth = tuple[list[tuple[int, int]], list[tuple[int, int]]]
"""``(bids, asks)`` of one book, each best first as ``(price_ticks, volume)`` (`OrderBook.depth`)."""


@dataclass(slots=True)
class Batch:
    """What a run of commands changed, rendered for the gateway and the market data.

    ``users[user_id][kind][key]`` is the full DIFF rendering of a touched object (kind is orders, trades,
    positions, accounts, transfers) or None when the object was removed from the user's tree; the
    gateway sends only the fields that differ from what it sent before.

    ``depth_changed`` holds the symbols whose book changed (an order rested, filled or was cancelled),
    ``instruments_changed`` the symbols listed or whose spec, suspension or daily figures changed.
    ``main_contracts`` holds the products whose main contract changed, product -> the new main
    (``Engine.main_contracts``), so that the ``KQ.m@`` quotes follow it.
    ``depth`` holds, for every symbol in ``depth_changed``, the :data:`DEPTH_LEVELS` best levels of
    its book as they stand when `Engine.flush` renders the batch: consumers read a book's depth from
    the batch, never from the engine, whose books may already be ahead of it.
    """

    users: dict[str, dict[str, dict[str, RENDERED | None]]] = field(default_factory=dict)
    notifies: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)  # (code, level, content)
    market_trades: list[MarketTrade] = field(default_factory=list)
    depth_changed: set[str] = field(default_factory=set)
    instruments_changed: set[str] = field(default_factory=set)
    settled: bool = False
    trading_day: str = ""
    last_seq: int = 0
    depth: dict[str, Depth] = field(default_factory=dict)  # by flush: symbol -> its book's best levels
    main_contracts: dict[str, str] = field(default_factory=dict)  # product -> its new main contract

    def __bool__(self) -> bool:
        return bool(
            self.users
            or self.notifies
            or self.market_trades
            or self.depth_changed
            or self.instruments_changed
            or self.main_contracts
        )

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickle, also a batch from a checkpoint written before the symbol sets had these names.

        An engine checkpoint pickles the engine's open batch. The state is ``(None, slot values)``
        (the default pickling of a class with ``__slots__``); fields it lacks get their defaults.
        """
        values = dict(state[1])
        for old, new in _RENAMED_BATCH_FIELDS.items():
            if old in values:
                values[new] = values.pop(old)
        Batch.__init__(self)
        for name, value in values.items():
            setattr(self, name, value)


_RENAMED_BATCH_FIELDS = {"books": "depth_changed", "instruments": "instruments_changed"}


class Engine:
    """All exchange state and the rules that change it. Synchronous; no IO; no clock."""

    market_hours: MarketHours = "always"  # also what a checkpoint from before the setting has

    def __init__(
        self,
        instruments: InstrumentRegistry | None = None,
        *,
        trading_day: str = "",
        max_orders_per_second: int = 0,
        market_hours: MarketHours = "always",
    ) -> None:
        self.instruments = instruments if instruments is not None else InstrumentRegistry()
        self.books: dict[str, OrderBook] = {symbol: OrderBook(symbol) for symbol in self.instruments}
        self.users: dict[str, UserRecord] = {}
        self.trading_day = trading_day
        self.max_orders_per_second = max_orders_per_second
        # QAEX_MARKET_HOURS: "exchange" refuses orders outside their contract's sessions (whole, like
        # the rate limit: a refusal changes nothing, so replaying the journal needs no calendar).
        self.market_hours = market_hours
        self.last_price: dict[str, float] = {}
        # The price positions are marked at: the last trade, or the settlement price until the next
        # trade after a settlement (positions were just re-priced at it).
        self.mark_price: dict[str, float] = {}
        self.open_interest: dict[str, int] = {s: i.pre_open_interest for s, i in self.instruments.items()}
        # The trading day's volume and turnover (Σ price × lots) per symbol: its VWAP settles it.
        self.day_volume: dict[str, int] = {}
        self.day_turnover: dict[str, float] = {}
        # (ts, price × lots, lots) of the recent trades of contracts settled on a window (CFFEX).
        self._window_trades: dict[str, collections.deque[tuple[int, float, int]]] = {}
        self.seq = 0  # commands applied
        self._order_seq = 0
        self._trade_seq = 0
        self._orders_by_key: dict[int, Order] = {}
        self._holders: dict[str, set[str]] = {symbol: set() for symbol in self.instruments}
        self._batch = Batch()
        # Product (``SHFE.rb``) -> its main contract's symbol: qaex.core.main_contracts has the rule.
        self.main_contracts: dict[str, str] = {}
        self._choose_main_contracts(self._listing_interest())
        self._batch = Batch()  # the first choice is the starting state, not a change to report
        self._init_tracking()

    def _init_tracking(self) -> None:
        """The change tracking of one batch, empty, and the caches that are not pickled.

        Touched and marked objects are kept by value in insertion-ordered dicts, so that flush renders
        them without looking them up again: orders by seqno (unique for ever), positions by
        (user_id, symbol), accounts by user_id.
        """
        self._touched_orders: dict[int, Order] = {}
        self._touched_positions: dict[tuple[str, str], Position] = {}
        self._touched_accounts: dict[str, Account] = {}
        self._moved: set[str] = set()
        # Marked to market but otherwise unchanged: rendered with the mark fields only.
        self._marked_positions: dict[tuple[str, str], Position] = {}
        self._marked_accounts: dict[str, Account] = {}
        self._init_caches()

    def _init_caches(self) -> None:
        # The registry as a read-only dict view: a registry lookup is a Python call, this one is not.
        self._instrument_of: Mapping[str, Instrument] = self.instruments.view()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_instrument_of"]  # a mappingproxy does not pickle; rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for record in self.users.values():
            if not hasattr(record, "rejected"):  # a checkpoint written before refusals were bounded
                record.rejected = {}
            if not hasattr(record, "rate_exempt"):  # a checkpoint written before the exemption
                record.rate_exempt = record.user_id.startswith(limits.RESERVED_USER_PREFIX)
        for name in ("day_volume", "day_turnover", "_window_trades"):  # before VWAP settlement
            self.__dict__.setdefault(name, {})
        if "main_contracts" not in state:  # a checkpoint written before main contracts: choose now,
            self.main_contracts = {}  # from the last settlement's figures, as at a settlement
            self._choose_main_contracts(self._listing_interest())
        self._init_caches()

    # ------------------------------------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------------------------------------
    @overload
    def apply(self, command: Insert | Cancel) -> Order: ...
    @overload
    def apply(self, command: OpenAccount | Deposit | Withdraw) -> Account: ...
    @overload
    def apply(self, command: UpsertInstrument | SetSuspended | Delist) -> Instrument: ...
    @overload
    def apply(self, command: Settle) -> dict[str, float]: ...  # the settlement prices
    @overload
    def apply(self, command: MarkToMarket) -> int: ...  # how many holders were marked
    @overload
    def apply(self, command: ChangePassword) -> None: ...
    @overload
    def apply(self, command: AnyCommand) -> CommandResult: ...
    def apply(self, command: AnyCommand) -> CommandResult:
        """Apply one command; returns its result (an Order for inserts and cancels, an Account, ...).

        Raises QaexError for commands refused as a whole (unknown user, bad amount, ...). An order that
        fails risk checks is not an exception: it is recorded FINISHED with last_msg saying why.
        """
        first = not self.trading_day
        if first:
            self.trading_day = trading_day_of(command.ts)
        try:
            if isinstance(command, Insert):  # most commands: skip the dispatch call
                result: CommandResult = self._insert(command.order, command.ts)
            else:
                result = self._dispatch(command)
        except QaexError:
            if first:
                self.trading_day = ""  # a refused command is not journaled, so it must change nothing
            raise
        self.seq += 1  # only commands that were applied count: refused ones are not journaled
        return result

    def _dispatch(self, command: AnyCommand) -> CommandResult:
        if isinstance(command, Insert):
            return self._insert(command.order, command.ts)
        if isinstance(command, Cancel):
            return self._cancel(command.user_id, command.order_id, command.ts)
        if isinstance(command, MarkToMarket):
            return self.mark_holders()
        if isinstance(command, OpenAccount):
            return self._open_account(command)
        if isinstance(command, Deposit):
            return self._transfer(command.user_id, command.amount, command.ts, deposit=True)
        if isinstance(command, Withdraw):
            return self._transfer(command.user_id, command.amount, command.ts, deposit=False)
        if isinstance(command, ChangePassword):
            self.user(command.user_id).password_hash = command.password_hash
            return None
        if isinstance(command, Settle):
            return self._settle(command)
        if isinstance(command, UpsertInstrument):
            return self._upsert_instrument(command.spec)
        if isinstance(command, SetSuspended):
            instrument = self.instrument(command.symbol)
            instrument.suspended = command.suspended
            self._batch.instruments_changed.add(command.symbol)
            return instrument
        if isinstance(command, Delist):
            return self._delist(command.symbol)
        raise TypeError(f"unknown command {command!r}")

    def user(self, user_id: str) -> UserRecord:
        record = self.users.get(user_id)
        if record is None:
            raise NotFound(f"no account for user {user_id!r}", code="unknown_user")
        return record

    def instrument(self, symbol: str) -> Instrument:
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise NotFound(
                f"unknown instrument {symbol!r}",
                code="unknown_instrument",
                diff_code=notify_codes.NOTIFY_BAD_INSTRUMENT,
            )
        return instrument

    def refuse_kq(self, symbol: str) -> None:
        """Refuse, as a whole, any request to trade a ``KQ.`` symbol (a main-contract series is quoted,
        never traded): RiskError ``not_tradable``, naming the contract to trade instead."""
        if not main_contracts.is_kq(symbol):
            return
        product = main_contracts.product_of(symbol)
        underlying = self.main_contracts.get(product) if product is not None else None
        instead = f", 请交易其标的合约 {underlying}" if underlying else ""
        raise risk(errors.NOT_TRADABLE, f"下单失败, {symbol[:100]} 是主连/指数行情, 不能交易{instead}")

    def check_new_user(self, user_id: str) -> None:
        """Refuse a user id an account cannot be opened for: malformed (``bad_user_id``) or taken
        (``user_exists``). The rule of OpenAccount; `Exchange.open_account` also asks it before it
        spends a scrypt hash on the password."""
        if not limits.is_user_id(user_id):
            raise QaexError("user_id must be 1-64 of A-Z a-z 0-9 _ -", code="bad_user_id")
        if user_id in self.users:
            raise errors.Conflict(f"user {user_id!r} already exists", code="user_exists")

    def _open_account(self, command: OpenAccount) -> Account:
        self.check_new_user(command.user_id)
        if not 0 <= command.init_cash <= limits.MAX_AMOUNT:
            raise QaexError(f"init_cash must be 0-{limits.MAX_AMOUNT:.0f}", code="bad_amount")
        account = Account(command.user_id, command.init_cash)
        exempt = command.user_id.startswith(limits.RESERVED_USER_PREFIX)
        self.users[command.user_id] = UserRecord(
            command.user_id, command.password_hash, account, rate_exempt=exempt
        )
        self._touched_accounts[command.user_id] = account
        self._batch.users.setdefault(command.user_id, {})
        return account

    def _transfer(self, user_id: str, amount: float, ts: int, *, deposit: bool) -> Account:
        record = self.user(user_id)
        if not limits.amount_ok(amount):
            message = f"转账金额必须大于0且不超过 {limits.MAX_AMOUNT:.0f}: {amount}"
            raise QaexError(message, code="bad_amount", diff_code=notify_codes.NOTIFY_TRANSFER_FAILED)
        if deposit:
            record.account.deposit_cash(amount)
        else:
            self._mark_account(record.account)
            record.account.withdraw_cash(amount)
            amount = -amount
        transfer_id = f"{ts}-{len(record.transfers)}"
        transfer = {"datetime": ts, "currency": "CNY", "amount": amount, "error_id": 0, "error_msg": "成功"}
        record.transfers[transfer_id] = transfer
        self._render_into(user_id, "transfers", transfer_id, dict(transfer))
        self._touched_accounts[user_id] = record.account
        kind = "入金" if amount > 0 else "出金"
        self.notify(user_id, notify_codes.NOTIFY_TRANSFER_OK, "INFO", f"{kind}成功: {abs(amount):.2f}")
        return record.account

    # -- orders -----------------------------------------------------------------------------------
    # The order path is the exchange's hot path: it keeps the symbol, account and instrument it has
    # looked up in locals and passes them on, and records touched objects by value (see flush).
    def _insert(self, request: InsertOrder, ts: int) -> Order:
        user_id = request.user_id
        record = self.users.get(user_id)
        if record is None:
            record = self.user(user_id)  # raises NotFound
        order_id = request.order_id
        # Refused as a whole (nothing recorded, nothing journaled): values outside the bounds of the
        # journal's InsertOrder type (qaex.core.limits). The decoders refuse them first; this is for
        # requests built in-process, so that every journaled insert decodes on replay. Within the
        # bounds, a volume or price the instrument does not allow is a recorded rejection (below).
        if not 0 < len(order_id) <= limits.MAX_ID_LENGTH:
            raise risk(errors.BAD_ORDER, f"下单失败, 委托单号长度必须在 1 到 {limits.MAX_ID_LENGTH} 之间")
        if not 1 <= request.volume <= limits.MAX_ORDER_VOLUME:
            raise risk(errors.BAD_VOLUME, f"下单失败, 委托数量必须在 1 到 {limits.MAX_ORDER_VOLUME} 之间")
        if not 0 <= request.limit_price <= limits.MAX_PRICE:  # also refuses NaN
            raise risk(errors.BAD_ORDER, f"下单失败, 委托价格必须在 0 到 {limits.MAX_PRICE:.0f} 之间")
        if not (0 < len(request.exchange_id) <= 16 and 0 < len(request.instrument_id) <= 64):
            raise risk(errors.UNKNOWN_INSTRUMENT, f"下单失败, 不支持的合约代码: {request.symbol[:100]}")
        if request.exchange_id[:2] == main_contracts.CONT_EXCHANGE:  # KQ, or KQ.m@SHFE from HTTP
            self.refuse_kq(request.symbol)
        if order_id in record.orders:
            # The existing order keeps its state; the duplicate is refused without a trace in the tree.
            raise risk(errors.DUPLICATE_ORDER_ID, f"下单失败, 委托单号重复: {order_id}")
        if self.market_hours == "exchange":
            self._check_market_open(request, ts)
        if self.max_orders_per_second and not record.rate_exempt:
            # Every order counts, refused ones included; one over the rate is refused as a whole, so a
            # flood costs neither memory nor journal. Replays see only the counted (journaled) orders.
            window = ts // 1_000_000_000
            if window != record.order_window:
                record.order_window, record.orders_in_window = window, 0
            if record.orders_in_window >= self.max_orders_per_second:
                raise risk(
                    errors.RATE_LIMITED, f"下单失败, 超过每秒 {self.max_orders_per_second} 笔的报单频率限制"
                )
            record.orders_in_window += 1
        self._order_seq = key = self._order_seq + 1
        price_type = request.price_type
        order = Order(
            seqno=key,
            user_id=user_id,
            order_id=order_id,
            exchange_id=request.exchange_id,
            instrument_id=request.instrument_id,
            direction=request.direction,
            offset=request.offset,
            volume_orign=request.volume,
            price_type=price_type,
            limit_price=request.limit_price if price_type == "LIMIT" else NAN,
            time_condition=request.time_condition,
            volume_condition=request.volume_condition,
            insert_date_time=ts,
            volume_left=request.volume,
        )
        record.orders[order_id] = order
        self._touched_orders[key] = order
        symbol = f"{request.exchange_id}.{request.instrument_id}"  # == order.symbol
        account = record.account
        try:
            instrument, price_ticks, ioc = self._validate(record, order, symbol, ts)
            freeze_price = (
                instrument.from_ticks(price_ticks) if price_type == "LIMIT" else instrument.upper_limit
            )
            self._mark_account(account)  # available depends on the current prices
            account.freeze(order, instrument, freeze_price)
        except RiskError as exc:
            self._reject(order, exc)
            return order
        self._touched_accounts[user_id] = account
        if order.offset != "OPEN":
            self._touch_position(account, symbol)
        submission = self.books[symbol].submit(
            key,
            user_id,
            order.direction == "BUY",
            price_ticks,
            order.volume_orign,
            ioc,
            order.volume_condition == "ALL",
        )
        if submission.self_trade:
            account.release(order)
            self._reject(order, risk(errors.SELF_TRADE, "自成交风险: 委托会与本账户的挂单成交, 已拒绝"))
            return order
        order.exchange_order_id = str(key)
        orders_by_key = self._orders_by_key
        orders_by_key[key] = order
        for maker, _, ticks, volume in submission.fills:
            self._fill(instrument, symbol, orders_by_key[maker], order, ticks, volume, ts)
        if submission.cancelled:
            account.release(order)
            order.status = "FINISHED"
            order.last_msg = MSG_IOC_CANCELLED
            del orders_by_key[key]
        elif order.volume_left == 0:
            del orders_by_key[key]
        else:
            order.last_msg = MSG_PARTIAL if order.volume_left < order.volume_orign else MSG_ACCEPTED
            self._batch.depth_changed.add(symbol)
        return order

    def market_open(self, instrument: Instrument, ts: int) -> bool:
        """Whether the policy lets ``instrument`` trade at ``ts``: always under ``always``; within its
        sessions on trading days under ``exchange`` (qaex.core.calendar.sessions)."""
        return self.market_hours == "always" or sessions.is_open(
            instrument.trading_time, ts, default_holiday_calendar()
        )

    def _check_market_open(self, request: InsertOrder, ts: int) -> None:
        """Refuse (whole) an order outside its contract's sessions; an unknown symbol is left to
        _validate (a recorded rejection, as in any mode)."""
        symbol = f"{request.exchange_id}.{request.instrument_id}"
        instrument = self._instrument_of.get(symbol)
        if instrument is not None:
            closed = sessions.closed_message(symbol, instrument.trading_time, ts, default_holiday_calendar())
            if closed is not None:
                raise risk(errors.MARKET_CLOSED, closed)

    def _validate(
        self, record: UserRecord, order: Order, symbol: str, ts: int
    ) -> tuple[Instrument, int, bool]:
        """Instrument, price, volume and rate checks; returns (instrument, price in ticks, ioc)."""
        instrument = self._instrument_of.get(symbol)
        if instrument is None:
            raise risk(errors.UNKNOWN_INSTRUMENT, f"下单失败, 不支持的合约代码: {symbol}")
        if instrument.expired:
            last_day = instrument.last_trading_day
            raise risk(errors.INSTRUMENT_EXPIRED, f"下单失败, 合约 {symbol} 已到期 (最后交易日 {last_day})")
        if instrument.suspended:
            raise risk(errors.INSTRUMENT_SUSPENDED, f"下单失败, 合约 {symbol} 已暂停交易")
        market = order.price_type != "LIMIT"
        low = instrument.min_market_order_volume if market else instrument.min_limit_order_volume
        high = instrument.max_market_order_volume if market else instrument.max_limit_order_volume
        if not low <= order.volume_orign <= high:
            raise risk(errors.BAD_VOLUME, f"下单失败, 委托数量 {order.volume_orign} 不在 [{low}, {high}] 内")
        ioc = order.time_condition == "IOC"
        if order.volume_condition == "ALL" and not ioc:
            raise risk(errors.BAD_ORDER, "下单失败, 全部成交条件 (ALL) 只能与 IOC 一起使用")
        if market:
            # Market orders take what the book offers within the daily limits and never rest.
            if not ioc:
                raise risk(errors.BAD_ORDER, "下单失败, 市价单必须是 IOC")
            buy = order.direction == "BUY"
            price_ticks = instrument.upper_limit_ticks if buy else instrument.lower_limit_ticks
        else:
            # The limits first: they bound the price before any tick arithmetic (a price of 1e9 on a
            # 0.02 tick is 5e10 ticks: fine; unchecked, a huge one would overflow).
            price, slack = order.limit_price, 1e-6 * instrument.price_tick
            if price > instrument.upper_limit + slack:
                raise risk(errors.PRICE_ABOVE_LIMIT, f"下单失败, 委托价格高于涨停板 {instrument.upper_limit}")
            if price < instrument.lower_limit - slack:
                raise risk(errors.PRICE_BELOW_LIMIT, f"下单失败, 委托价格低于跌停板 {instrument.lower_limit}")
            ticks = instrument.to_ticks(price)
            if ticks is None:
                raise risk(
                    errors.PRICE_OFF_TICK,
                    f"下单失败, 委托价格 {order.limit_price} 不是最小变动价位 "
                    f"{instrument.price_tick} 的整数倍",
                )
            price_ticks = ticks
        return instrument, price_ticks, ioc

    def _reject(self, order: Order, exc: QaexError) -> None:
        """Finish a refused order; the user's day keeps the newest MAX_REJECTED_KEPT of them."""
        order.status = "FINISHED"
        order.last_msg = exc.message
        self.notify(order.user_id, exc.diff_code or notify_codes.NOTIFY_REFUSED, "ERROR", exc.message)
        record = self.users[order.user_id]
        rejected = record.rejected
        rejected[order.order_id] = None
        if len(rejected) > MAX_REJECTED_KEPT:
            oldest = next(iter(rejected))
            del rejected[oldest]
            dropped = record.orders.pop(oldest)
            self._touched_orders.pop(dropped.seqno, None)
            self._render_into(order.user_id, "orders", oldest, None)

    def _fill(
        self,
        instrument: Instrument,
        symbol: str,
        maker: Order,
        taker: Order,
        ticks: int,
        volume: int,
        ts: int,
    ) -> None:
        price = instrument.from_ticks(ticks)
        self._trade_seq = trade_seq = self._trade_seq + 1
        exchange_trade_id = str(trade_seq)
        opens = 0
        users = self.users
        rendered_users = self._batch.users
        holders = self._holders[symbol]
        touched_orders = self._touched_orders
        touched_positions = self._touched_positions
        touched_accounts = self._touched_accounts
        for order in (maker, taker):
            user_id = order.user_id
            record = users[user_id]
            account = record.account
            commission = account.fill(order, instrument, price, volume)
            order.volume_left -= volume
            if order.volume_left == 0:
                order.status = "FINISHED"
                order.last_msg = MSG_FILLED
            else:
                order.last_msg = MSG_PARTIAL
            opens += 1 if order.offset == "OPEN" else -1
            trade_id = f"{exchange_trade_id}|{order.order_id}"
            trade = Trade(
                seqno=trade_seq,
                user_id=user_id,
                trade_id=trade_id,
                order_id=order.order_id,
                exchange_trade_id=exchange_trade_id,
                exchange_id=order.exchange_id,
                instrument_id=order.instrument_id,
                direction=order.direction,
                offset=order.offset,
                volume=volume,
                price=price,
                trade_date_time=ts,
                commission=commission,
            )
            record.trades[trade_id] = trade
            # _render_into inlined: two trades per fill.
            rendered = rendered_users.get(user_id)
            if rendered is None:
                rendered = rendered_users[user_id] = {}
            trades = rendered.get("trades")
            if trades is None:
                trades = rendered["trades"] = {}
            trades[trade_id] = trade.to_diff()
            touched_orders[order.seqno] = order
            touched_positions[user_id, symbol] = account.positions[symbol]  # the fill made it
            touched_accounts[user_id] = account
            holders.add(user_id)
        if maker.volume_left == 0:
            del self._orders_by_key[maker.seqno]
        self.open_interest[symbol] = open_interest = self.open_interest.get(symbol, 0) + volume * opens // 2
        self.last_price[symbol] = price
        self.mark_price[symbol] = price
        self.day_volume[symbol] = self.day_volume.get(symbol, 0) + volume
        self.day_turnover[symbol] = self.day_turnover.get(symbol, 0.0) + price * volume
        if instrument.settlement_window:
            self._keep_window_trade(instrument, symbol, ts, price, volume)
        self._moved.add(symbol)
        batch = self._batch
        batch.depth_changed.add(symbol)
        batch.market_trades.append(MarketTrade(symbol, price, volume, ts, open_interest))

    def _cancel(self, user_id: str, order_id: str, ts: int) -> Order:
        record = self.user(user_id)
        order = record.orders.get(order_id)
        if order is None:
            raise NotFound(
                f"撤单失败, 委托单不存在: {order_id}",
                code="unknown_order",
                diff_code=notify_codes.NOTIFY_CANCEL_FAILED,
            )
        if order.status != "ALIVE":
            raise QaexError(
                f"撤单失败, 委托单已结束 ({order.last_msg}): {order_id}",
                code="order_finished",
                diff_code=notify_codes.NOTIFY_CANCEL_FAILED,
            )
        self._cancel_order(order)
        self.notify(user_id, notify_codes.NOTIFY_CANCEL_OK, "INFO", f"撤单成功: {order_id}")
        return order

    def _cancel_order(self, order: Order) -> None:
        symbol = order.symbol
        self.books[symbol].cancel(order.seqno)
        account = self.users[order.user_id].account
        account.release(order)
        order.status = "FINISHED"
        order.last_msg = MSG_CANCELLED
        del self._orders_by_key[order.seqno]
        self._touched_orders[order.seqno] = order
        self._touched_accounts[order.user_id] = account
        if order.offset != "OPEN":
            self._touch_position(account, symbol)
        self._batch.depth_changed.add(symbol)

    # -- settlement and admin ---------------------------------------------------------------------
    def _settle(self, command: Settle) -> dict[str, float]:
        """End the trading day: expire every open order, settle every account at the settlement prices,
        close out the contracts whose last trading day this was, and roll every instrument to the next day.

        A settlement price is the command's, or the instrument's rule (:meth:`_settlement_price`).
        """
        day = command.trading_day
        if day and not (len(day) == 8 and day.isascii() and day.isdigit()):
            raise QaexError(f"trading_day must be YYYYMMDD, got {day[:20]!r}", code="bad_request")
        for symbol in command.prices:
            if not 0 < len(symbol) <= 64:
                raise QaexError(f"no instrument {symbol[:70]!r}", code="unknown_instrument")
        prices: dict[str, float] = {}
        for symbol, instrument in self.instruments.items():
            given = command.prices.get(symbol)
            price = self._settlement_price(symbol, instrument) if given is None else given
            if not 0 < price <= limits.MAX_PRICE:
                message = f"settlement price {price} of {symbol} is not in (0, {limits.MAX_PRICE:.0f}]"
                raise QaexError(message, code="bad_price")
            ticks = instrument.to_ticks(price)
            if ticks is None:  # checked before anything changes: a refused command is not journaled
                raise QaexError(
                    f"settlement price {price} of {symbol} is not on the tick grid", code="bad_price"
                )
            prices[symbol] = price
        settling = self.trading_day
        expiring = [
            symbol
            for symbol, instrument in self.instruments.items()
            if not instrument.expired
            and instrument.expire_datetime
            and instrument.last_trading_day <= settling
        ]
        for order in list(self._orders_by_key.values()):
            self._cancel_order(order)
        for record in self.users.values():
            account = record.account
            account.settle(prices, self.instruments)
            self._touched_accounts[record.user_id] = account
            for symbol, position in account.positions.items():
                self._touched_positions[record.user_id, symbol] = position
            # A new trading day starts with an empty order and trade list, as at a real exchange.
            for order_id in record.orders:
                self._render_into(record.user_id, "orders", order_id, None)
            for trade_id in record.trades:
                self._render_into(record.user_id, "trades", trade_id, None)
            record.orders.clear()
            record.rejected.clear()
            record.trades.clear()
        self._touched_orders.clear()  # every order touched so far belonged to some user's cleared list
        for symbol in expiring:
            self._expire(symbol, prices[symbol])
        for symbol, instrument in self.instruments.items():
            instrument.pre_close = self.last_price.get(symbol, instrument.pre_close)
            self.mark_price[symbol] = prices[symbol]
            instrument.pre_settlement = prices[symbol]
            instrument.pre_open_interest = self.open_interest.get(symbol, instrument.pre_open_interest)
            instrument.reset_limits()
            self._batch.instruments_changed.add(symbol)
        self.day_volume.clear()
        self.day_turnover.clear()
        self._window_trades.clear()
        self._moved.clear()  # positions were just reset to the settlement prices
        self.trading_day = command.trading_day or next_trading_day(self.trading_day)
        self._batch.settled = True
        self._choose_main_contracts()
        return prices

    def _settlement_price(self, symbol: str, instrument: Instrument) -> float:
        """The instrument's rule: the day's VWAP on the tick grid (over the last ``settlement_window``
        seconds of trading if set; the previous settlement when nothing traded), or the last price."""
        if instrument.settlement_rule == "last":
            return self.last_price.get(symbol, instrument.pre_settlement)
        window = self._window_trades.get(symbol)
        if window:
            volume = sum(lots for _, _, lots in window)
            turnover = math.fsum(amount for _, amount, _ in window)
        else:
            volume = self.day_volume.get(symbol, 0)
            turnover = self.day_turnover.get(symbol, 0.0)
        if not volume:
            return instrument.pre_settlement
        ticks = round(turnover / volume / instrument.price_tick)
        ticks = min(max(ticks, instrument.lower_limit_ticks), instrument.upper_limit_ticks)
        return instrument.from_ticks(ticks)

    def _keep_window_trade(
        self, instrument: Instrument, symbol: str, ts: int, price: float, volume: int
    ) -> None:
        """Keep a trade of a contract settled over its last ``settlement_window`` seconds of trading."""
        window = self._window_trades.get(symbol)
        if window is None:
            window = self._window_trades[symbol] = collections.deque()
        window.append((ts, price * volume, volume))
        start = ts - instrument.settlement_window * 1_000_000_000
        while window[0][0] < start:
            window.popleft()

    def _expire(self, symbol: str, price: float) -> None:
        """The contract's last trading day has been settled: it takes no more orders, and every position
        in it is closed out in cash at ``price`` (its final settlement price), with a notify to the holder."""
        instrument = self.instruments[symbol]
        instrument.expired = True
        for user_id in sorted(self._holders.get(symbol, ())):
            account = self.users[user_id].account
            long, short = account.close_out(symbol, instrument)
            if not (long or short):
                continue
            self._touch_position(account, symbol)
            self._touched_accounts[user_id] = account
            lots = "、".join(
                f"{side} {count} 手" for side, count in (("多头", long), ("空头", short)) if count
            )
            self.notify(
                user_id,
                notify_codes.NOTIFY_CONTRACT_EXPIRED,
                "INFO",
                f"合约 {symbol} 到期交割: {lots} 以最终结算价 {price} 现金了结, 保证金已释放",
            )
        self.open_interest[symbol] = 0

    def _delist(self, symbol: str) -> Instrument:
        """Take an expired contract out of the listing, with the (flat) positions users had in it."""
        instrument = self.instrument(symbol)
        if not instrument.expired:
            raise QaexError(
                f"{symbol} has not expired: only an expired contract leaves the listing", code="not_expired"
            )
        for user_id, record in self.users.items():
            if record.account.drop_position(symbol):
                self._touched_positions.pop((user_id, symbol), None)
                self._marked_positions.pop((user_id, symbol), None)
                self._render_into(user_id, "positions", symbol, None)
        self.instruments.remove(symbol)
        del self.books[symbol]
        self._holders.pop(symbol, None)
        for figures in (
            self.open_interest,
            self.last_price,
            self.mark_price,
            self.day_volume,
            self.day_turnover,
        ):
            figures.pop(symbol, None)
        self._moved.discard(symbol)
        self._batch.instruments_changed.add(symbol)
        return instrument

    def _upsert_instrument(self, spec: Mapping[str, Any]) -> Instrument:
        symbol = f"{spec.get('exchange_id')}.{spec.get('instrument_id')}"
        current = self.instruments.get(symbol)
        merged = dict(msgspec.to_builtins(current)) if current is not None else {}
        if current is not None and ("pre_settlement" in spec or "limit_ratio" in spec):
            merged.pop("upper_limit", None)
            merged.pop("lower_limit", None)
        merged.update(spec)
        try:
            instrument = msgspec.convert(merged, Instrument, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            raise QaexError(f"invalid instrument: {exc}", code="bad_instrument") from exc
        if current is not None:
            # Keep the same object: open orders and positions refer to the registry entry by symbol.
            for name in instrument.__struct_fields__:
                setattr(current, name, getattr(instrument, name))
            instrument = current
        else:
            self.instruments.add(instrument)
            self.books[symbol] = OrderBook(symbol)
            self._holders[symbol] = set()
            self.open_interest[symbol] = instrument.pre_open_interest
        self._batch.instruments_changed.add(symbol)
        product = main_contracts.product_key(instrument)
        # Chosen again from the listing figures (pre_open_interest): a product listed one contract at a
        # time gets the month with the most open interest, not its first; never an earlier one.
        self._choose_main_contracts(self._listing_interest(), product)
        return instrument

    def _listing_interest(self) -> dict[str, int]:
        """Each contract's open interest at its listing or at the last settlement (pre_open_interest)."""
        return {symbol: instrument.pre_open_interest for symbol, instrument in self.instruments.items()}

    def _choose_main_contracts(
        self, open_interest: Mapping[str, int] | None = None, product: str | None = None
    ) -> None:
        """Choose the main contract of every product (or of ``product``) by
        :func:`qaex.core.main_contracts.choose_main` from ``open_interest`` (by default the live
        figures: at a settlement those it settled); a change goes into the batch."""
        by_product: dict[str, list[Instrument]] = {}
        for instrument in self.instruments.values():
            key = main_contracts.product_key(instrument)
            if product is None or key == product:
                by_product.setdefault(key, []).append(instrument)
        interest = self.open_interest if open_interest is None else open_interest
        for key in sorted(by_product):
            current = self.main_contracts.get(key)
            chosen = main_contracts.choose_main(current, by_product[key], interest)
            if chosen is not None and chosen != current:
                self.main_contracts[key] = chosen
                self._batch.main_contracts[key] = chosen

    # ------------------------------------------------------------------------------------------------
    # Change tracking and rendering
    # ------------------------------------------------------------------------------------------------
    def notify(self, user_id: str, code: int, level: str, content: str) -> None:
        self._batch.notifies.setdefault(user_id, []).append((code, level, content))

    def _touch_position(self, account: Account, symbol: str) -> None:
        position = account.positions.get(symbol)
        if position is not None:  # a position is never removed, so one missing now has nothing to show
            self._touched_positions[account.user_id, symbol] = position

    def _render_into(self, user_id: str, kind: str, key: str, rendered: RENDERED | None) -> None:
        user = self._batch.users.get(user_id)
        if user is None:
            user = self._batch.users[user_id] = {}
        objects = user.get(kind)
        if objects is None:
            objects = user[kind] = {}
        objects[key] = rendered

    def _mark_account(self, account: Account) -> None:
        """Bring one account's positions to the current last prices (cheap: that user's positions only).

        Marking is lazy: an account is marked whenever it is used (a risk check, a transfer, a render)
        and, for every holder at once, by `mark_holders`. The result depends only on the positions and
        the last prices, never on when it happens, so lazy marking keeps replays exact.
        """
        if account.mark_all(self.mark_price, self._instrument_of, self._marked_positions):
            self._marked_accounts[account.user_id] = account

    def mark_holders(self) -> int:
        """Mark every holder of every instrument whose price moved since the last call; returns how many.

        Fill participants are marked at once (in `flush`); other holders are marked here, which the
        exchange runs on a short timer, so a busy instrument with thousands of holders costs one pass
        per interval instead of one per order.
        """
        marked = 0
        users = self.users
        for symbol in sorted(self._moved):  # set order varies by process: keep passes reproducible
            holders = self._holders[symbol]
            for user_id in sorted(holders):
                account = users[user_id].account
                position = account.positions.get(symbol)
                if position is None or (position.volume_long == 0 and position.volume_short == 0):
                    holders.discard(user_id)
                self._mark_account(account)
                marked += 1
        self._moved.clear()
        return marked

    def flush(self) -> Batch:
        """Render everything touched (participants marked to market first) and start a new batch.

        Rendered objects go to ``users[user_id][kind][key]`` (see `_render_into`); the best
        :data:`DEPTH_LEVELS` levels of every changed book go to ``depth[symbol]``, once per batch.
        """
        touched_accounts = self._touched_accounts
        touched_positions = self._touched_positions
        for account in touched_accounts.values():
            self._mark_account(account)
        render = self._render_into
        for order in self._touched_orders.values():
            render(order.user_id, "orders", order.order_id, order.to_diff())
        for (user_id, symbol), position in touched_positions.items():
            render(user_id, "positions", symbol, position.to_diff())
        for user_id, account in touched_accounts.items():
            render(user_id, "accounts", "CNY", account.to_diff())  # "CNY" is the only key of "accounts"
        for key, position in self._marked_positions.items():
            if key not in touched_positions:
                render(key[0], "positions", key[1], position.mark_view())
        for user_id, account in self._marked_accounts.items():
            if user_id not in touched_accounts:
                render(user_id, "accounts", "CNY", account.mark_view())
        self._marked_positions = {}
        self._marked_accounts = {}
        self._touched_orders = {}
        self._touched_positions = {}
        self._touched_accounts = {}
        batch = self._batch
        if batch.depth_changed:
            books = self.books
            batch.depth = {symbol: books[symbol].depth(DEPTH_LEVELS) for symbol in batch.depth_changed}
        batch.trading_day = self.trading_day
        batch.last_seq = self.seq
        self._batch = Batch()
        return batch

    # ------------------------------------------------------------------------------------------------
    # Views
    # ------------------------------------------------------------------------------------------------
    def user_tree(self, user_id: str) -> dict[str, Any]:
        """The user's whole DIFF trade tree (``trade/{user_id}``), for a session's first snapshot."""
        record = self.user(user_id)
        self._mark_account(record.account)
        return {
            "user_id": user_id,
            "trading_day": self.trading_day,
            "trade_more_data": False,
            "session": {"user_id": user_id, "trading_day": self.trading_day},
            "accounts": {"CNY": record.account.to_diff()},
            "positions": {symbol: p.to_diff() for symbol, p in record.account.positions.items()},
            "orders": {order_id: o.to_diff() for order_id, o in record.orders.items()},
            "trades": {trade_id: t.to_diff() for trade_id, t in record.trades.items()},
            "banks": {"qaex": {"id": "qaex", "name": "qaex"}},
            "transfers": {k: dict(v) for k, v in record.transfers.items()},
        }

    @property
    def orders_inserted(self) -> int:
        return self._order_seq

    @property
    def trades_made(self) -> int:
        return self._trade_seq

    @property
    def prices_moved(self) -> bool:
        """True while some holders may not be marked at an instrument's latest price."""
        return bool(self._moved)

    def state_digest(self) -> str:
        """A hash of the whole state, to check that a replay rebuilt exactly what was there."""
        state = {
            "seq": self.seq,
            "trading_day": self.trading_day,
            "users": {
                uid: self.user_tree(uid) | {"password_hash": r.password_hash}
                for uid, r in sorted(self.users.items())
            },
            "books": {s: list(b.resting_orders()) for s, b in sorted(self.books.items())},
            "last_price": sorted(self.last_price.items()),
            "mark_price": sorted(self.mark_price.items()),
            "open_interest": sorted(self.open_interest.items()),
            "day_volume": sorted(self.day_volume.items()),
            "day_turnover": sorted(self.day_turnover.items()),
            "instruments": [msgspec.to_builtins(self.instruments[s]) for s in sorted(self.instruments)],
            # Not a function of the rest: the choice depends on every past settlement (never back).
            "main_contracts": sorted(self.main_contracts.items()),
        }
        return hashlib.sha256(msgspec.json.encode(state, order="sorted")).hexdigest()
