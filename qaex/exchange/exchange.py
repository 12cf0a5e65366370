"""Exchange: owns the engine and runs every service in one nursery.

```
Exchange.run
├── Journal.run              group commit (when the journal is a Journal)
├── SnapshotManager.run      per-user trees, fan-out to sessions (one consumer task for all users)
├── TradeGateway.run         batches -> per-user patches (and market events)
├── MarketData.run           quotes, ticks, K-lines (when attached)
├── OrderRouter.run          single writer: commands -> engine -> journal -> batches
├── mark-to-market timer     MarkToMarket every mark_interval when prices moved
├── daily settlement timer   Settle at settle_at (China time), when set
└── LiquiditySimulator.run   the market maker (when attached)
```
`await nursery.start(exchange.run)` returns once every service is ready. A service that crashes
is logged and cancels the whole nursery: the exception propagates, so the process ends rather than
serving with half its services dead.

The async methods are the one API both transports (HTTP and DIFF) use; each checks nothing about
*who* calls — the transports authenticate and pass the authenticated user id.

Two services are optional and come from outside: ``market`` (a MarketData, given to the constructor:
the gateway forwards market effects to it, the transports read it) and ``simulator`` (anything
:class:`Simulator` describes; the LiquiditySimulator is built on the exchange, so qaex.app attaches it
after construction). Sessions are no service of the exchange: the DIFF transport attaches them to
``snapshots`` and ``market`` itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import msgspec
import trio

from qaex.core import commands
from qaex.core.account import Account
from qaex.core.calendar import (
    HolidayCalendar,
    china_date_of,
    format_day,
    next_settlement,
    next_trading_day,
    trading_day_of,
)
from qaex.core.engine import Batch, Engine
from qaex.core.errors import Forbidden, QaexError
from qaex.core.instruments import Instrument
from qaex.core.limits import MAX_PASSWORD_LENGTH, password_problem
from qaex.core.listing import ProductListing, listing_update
from qaex.core.orders import InsertOrder
from qaex.core.passwords import hash_password, verify_password
from qaex.core.throttle import AccessGuard, LoginThrottled
from qaex.exchange.gateway import TradeGateway
from qaex.exchange.journal import Journal
from qaex.exchange.market import MarketData
from qaex.exchange.router import CommandLog, OrderRouter, Request
from qaex.exchange.snapshot import DEFAULT_MAX_SESSIONS_PER_USER, SnapshotManager

log = logging.getLogger("qaex.exchange")


class Simulator(Protocol):
    """What the exchange asks of its liquidity simulator (qaex.exchange.simulator.LiquiditySimulator,
    which is built on the exchange, hence set after it: ``exchange.simulator = ...``)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def instrument_added(self, symbol: str) -> None: ...


MAX_CATCH_UP_SETTLEMENTS = 4000
"""Settlements a start may run to catch up with the calendar (about 15 years of trading days)."""


class _Gate:
    __slots__ = ("lock", "waiting")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.waiting = 0


class Exchange:
    def __init__(
        self,
        engine: Engine | None = None,
        *,
        journal: CommandLog | None = None,
        clock: Callable[[], int] | None = None,
        market: MarketData | None = None,
        mark_interval: float = 0.5,
        settle_at: dt.time | None = None,
        settlement_calendar: HolidayCalendar | None = None,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
        guard: AccessGuard | None = None,
        listing: ProductListing | None = None,
    ) -> None:
        self.listing = listing
        """None: the instruments are fixed (a file, or the engine's own); else listed by product and date."""
        self.engine = engine if engine is not None else Engine()
        self._wall_clock = clock if clock is not None else time.time_ns
        batch_send, batch_receive = trio.open_memory_channel[Batch](256)
        self.router = OrderRouter(self.engine, batch_send, journal=journal, clock=self._wall_clock)
        self.journal = journal
        self.snapshots = SnapshotManager(self._root_fields, max_sessions_per_user=max_sessions_per_user)
        # The market-data service, given at construction (the gateway feeds it); the transports read
        # it: DIFF routes sessions to it, HTTP reads quotes and series. None: no market data.
        self.market: MarketData | None = market
        # Built on the exchange, so attached after it (by qaex.app); started once the router runs,
        # told of every new contract by upsert_instrument.
        self.simulator: Simulator | None = None
        market_send = market.batches if market is not None else None
        self.gateway = TradeGateway(batch_receive, self.snapshots, market_send)
        self._verified: dict[str, bytes] = {}  # user -> keyed digest of the last verified password
        self._secret = os.urandom(32)
        # scrypt needs 16 MB per hash: at most two at a time (one per core), so a burst of logins
        # neither starves the event loop's core nor leaves dozens of 16 MB thread arenas behind.
        self._hashing = trio.CapacityLimiter(2)
        self.guard = guard if guard is not None else AccessGuard()  # login throttles, per-address limits
        self._dummy_hash: str | None = None  # verified for unknown users: same cost as a real check
        self._checking: dict[str, _Gate] = {}  # source address -> its password checks, one at a time
        self.mark_interval = mark_interval
        self.settle_at = settle_at
        self.settlement_calendar = settlement_calendar  # None: every weekday settles
        self._wall_clock = clock if clock is not None else time.time_ns

    def _root_fields(self, user_id: str) -> dict[str, Any]:
        day = self.engine.trading_day
        return {
            "user_id": user_id,
            "trading_day": day,
            "trade_more_data": False,
            "session": {"user_id": user_id, "trading_day": day},
            "accounts": {},
            "positions": {},
            "orders": {},
            "trades": {},
            "banks": {"qaex": {"id": "qaex", "name": "qaex"}},
            "transfers": {},
        }

    def seed_from_engine(self) -> None:
        """After recovery, before serving: start every user's DIFF tree from the engine's state.

        The gateway otherwise builds trees from patches alone, so a session logging in after a
        restart would see only what changed since. The tree is also what the gateway compares new
        renderings with, so its next patches stay minimal.
        """
        for user_id in self.engine.users:
            self.snapshots.trees[user_id] = self.engine.user_tree(user_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if isinstance(self.journal, Journal):
                    await nursery.start(self.journal.run)
                await nursery.start(self.snapshots.run)
                await nursery.start(self.gateway.run)
                if self.market is not None:
                    await nursery.start(self.market.run)
                await nursery.start(self.router.run)
                await self.catch_up()
                nursery.start_soon(self._mark_to_market)
                if self.settle_at is not None:
                    nursery.start_soon(self._daily_settlement, self.settle_at)
                if self.simulator is not None:
                    await nursery.start(self.simulator.run)
                log.info(
                    "exchange ready: %d instruments, %d users, trading day %s",
                    len(self.engine.instruments),
                    len(self.engine.users),
                    self.engine.trading_day or "(first command)",
                )
                task_status.started()
        except BaseException as exc:
            rest = exc.split(trio.Cancelled)[1] if isinstance(exc, BaseExceptionGroup) else exc
            if rest is not None and not isinstance(rest, trio.Cancelled):
                log.critical("exchange service crashed: %r", exc, exc_info=True)
            raise

    async def catch_up(self) -> None:
        """Bring the exchange to the wall clock's trading day before it serves: on a fresh data
        directory, list what the exchanges list today; after days off, run every daily settlement that
        fell due meanwhile, in order (each one expiring and listing contracts as it would have), so
        that the exchange is on the trading day whose settlement is the next one to come.
        """
        if self.listing is not None and not self.engine.trading_day:
            await self.relist()  # the first command: the engine's trading day is the clock's
        if self.settle_at is not None:
            now = self._wall_clock()
            due = format_day(china_date_of(next_settlement(now, self.settle_at, self.settlement_calendar)))
            for _ in range(MAX_CATCH_UP_SETTLEMENTS):
                if not self.engine.trading_day or self.engine.trading_day >= due:
                    break
                log.info("catching up: settling trading day %s", self.engine.trading_day)
                await self.settle()
        await self.relist()

    async def relist(self) -> None:
        """List the contracts the product calendar lists on the engine's trading day and are not
        listed yet, and delist the expired ones kept long enough (qaex.core.listing): journaled
        commands, so a replay lists exactly what was listed."""
        listing = self.listing
        if listing is None:
            return
        day = self.engine.trading_day or trading_day_of(self._wall_clock(), self.settlement_calendar)
        update = listing_update(
            self.engine.instruments,
            listing.products,
            day,
            listing.calendar,
            keep_expired_days=listing.keep_expired_days,
        )
        commands_: list[commands.AnyCommand] = [commands.Delist(ts=0, symbol=s) for s in update.delist]
        commands_ += [commands.UpsertInstrument(ts=0, spec=msgspec.to_builtins(i)) for i in update.new]
        for request in await self.router.execute_all(commands_):  # the router stamps each ts
            if request.error is not None:
                log.error("listing: %s refused: %s", request.command, request.error)
            elif isinstance(request.command, commands.UpsertInstrument) and self.simulator is not None:
                assert isinstance(request.result, Instrument)
                self.simulator.instrument_added(request.result.symbol)  # gets liquidity at once
        if update:
            log.info(
                "listing for trading day %s: %d contracts listed, %d delisted (%d in all)",
                day,
                len(update.new),
                len(update.delist),
                len(self.engine.instruments),
            )

    async def _mark_to_market(self) -> None:
        """Every `mark_interval`, mark all holders of instruments whose price moved (one command, journaled).

        Fill participants are marked with the fill itself; this pass reaches everyone else holding the
        instrument, so a price move costs one pass per interval however many orders trade meanwhile.
        """
        while True:
            await trio.sleep(self.mark_interval)
            if self.engine.prices_moved:
                await self.router.execute(lambda ts: commands.MarkToMarket(ts=ts))

    def market_open(self, instrument: Instrument) -> bool:
        """Whether `instrument` trades now under the market-hours policy (the engine's rule, at the
        wall clock; the router stamps an order a moment later, so at a session's edge it may differ)."""
        return self.engine.market_open(instrument, self._wall_clock())

    async def _daily_settlement(self, at: dt.time) -> None:
        """Settle every weekday (with `settlement_calendar`: every trading day) at `at` (China time),
        like the exchanges' end of day.

        Settlement cancels open orders, rolls positions to the settlement prices (the last price of
        each instrument) and starts a new trading day, which also clears the day's finished orders
        and trades, so a long-running server's memory and journal stay bounded.
        """
        while True:
            now = self._wall_clock()
            due = next_settlement(now, at, self.settlement_calendar)
            await trio.sleep((due - now) / 1e9)
            prices = await self.settle()
            log.info("daily settlement at %s: %d instruments settled", at.strftime("%H:%M"), len(prices))

    # -- accounts ---------------------------------------------------------------------------------
    async def open_account(self, user_id: str, password: str, init_cash: float = 1_000_000.0) -> Account:
        """Open an account; `user_id` must match ``limits.USER_ID_PATTERN``, `password` the policy
        (``limits.password_problem``): QaexError ``bad_user_id`` / ``weak_password`` / ``user_exists``."""
        # The engine's rule, asked before the scrypt hash as well: refused openings are refunded by
        # the AccessGuard, so without it one address could retry a taken id without end, each try
        # holding one of the two hashing slots (16 MB, the ones logins wait for). The engine still
        # decides: another opening of the same id may get in while this one hashes.
        self.engine.check_new_user(user_id)
        problem = password_problem(user_id, password)  # the engine never sees the password
        if problem is not None:
            raise QaexError(problem, code="weak_password")
        password_hash = await trio.to_thread.run_sync(hash_password, password, limiter=self._hashing)
        account = await self.router.execute(
            lambda ts: commands.OpenAccount(
                ts=ts, user_id=user_id, password_hash=password_hash, init_cash=init_cash
            )
        )
        log.info("account opened: %s with %.2f", user_id, init_cash)
        return account

    async def check_password(self, user_id: str, password: str, *, source: str | None = None) -> bool:
        """True if `password` is the user's; repeat checks of a verified password skip the scrypt cost.

        `source` is the client's address (``AccessGuard.source``) when a client asks: the login
        throttle then applies — LoginThrottled, before any hashing, while the (user, address) key
        backs off or the address has spent its failures — and the outcome is recorded. In-process
        callers pass no source. An unknown user costs the same scrypt as a known one, so the time
        of the answer does not tell who has an account. Only the length bounds are checked (a
        password chosen before the policy still works).
        """
        if source is None:
            return await self._verify_password(user_id, password)
        logins = self.guard.logins
        wait = logins.wait(user_id, source, trio.current_time())  # throttled already: refused at once
        if wait > 0:
            raise LoginThrottled(wait)
        async with self._one_check_at_a_time(source):
            wait = logins.begin(user_id, source, trio.current_time())  # sees the check before's outcome
            if wait > 0:
                raise LoginThrottled(wait)
            ok = False
            try:
                ok = await self._verify_password(user_id, password)
            finally:  # cancelled while hashing: a failure
                logins.end(user_id, source, ok, trio.current_time())
        return ok

    @asynccontextmanager
    async def _one_check_at_a_time(self, source: str) -> AsyncIterator[None]:
        """One password check per source address at a time: a flood from one address holds one of
        the two hashing slots, never both, nor a queue of them that other clients wait behind; and
        each throttle decision for the address sees the outcome of the check before it."""
        gate = self._checking.get(source)
        if gate is None:
            gate = self._checking[source] = _Gate()
        gate.waiting += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.waiting -= 1
            if gate.waiting == 0:
                del self._checking[source]

    async def _verify_password(self, user_id: str, password: str) -> bool:
        if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
            return False
        record = self.engine.users.get(user_id)
        if record is None:
            if self._dummy_hash is None:
                self._dummy_hash = await trio.to_thread.run_sync(
                    hash_password, os.urandom(16).hex(), limiter=self._hashing
                )
            await trio.to_thread.run_sync(verify_password, password, self._dummy_hash, limiter=self._hashing)
            return False
        keyed = hmac.new(
            self._secret, f"{user_id}\0{password}\0{record.password_hash}".encode(), hashlib.sha256
        )
        digest = keyed.digest()
        cached = self._verified.get(user_id)
        if cached is not None and hmac.compare_digest(cached, digest):
            return True
        ok = await trio.to_thread.run_sync(
            verify_password, password, record.password_hash, limiter=self._hashing
        )
        if ok:
            self._verified[user_id] = digest
        return ok

    async def change_password(
        self, user_id: str, old_password: str, new_password: str, *, source: str | None = None
    ) -> None:
        """Check the new password against the policy, then the old one (throttled like a login when
        a client's `source` is given).

        QaexError ``weak_password``, Forbidden ``bad_password``, LoginThrottled.
        """
        problem = password_problem(user_id, new_password)
        if problem is not None:
            raise QaexError(problem, code="weak_password")
        if not await self.check_password(user_id, old_password, source=source):
            raise Forbidden("old password is wrong", code="bad_password", diff_code=402)
        password_hash = await trio.to_thread.run_sync(hash_password, new_password, limiter=self._hashing)
        await self.router.execute(
            lambda ts: commands.ChangePassword(ts=ts, user_id=user_id, password_hash=password_hash)
        )
        self._verified.pop(user_id, None)

    async def deposit(self, user_id: str, amount: float) -> Account:
        return await self.router.execute(lambda ts: commands.Deposit(ts=ts, user_id=user_id, amount=amount))

    async def withdraw(self, user_id: str, amount: float) -> Account:
        return await self.router.execute(lambda ts: commands.Withdraw(ts=ts, user_id=user_id, amount=amount))

    # -- orders -----------------------------------------------------------------------------------
    async def insert_order(self, request: InsertOrder) -> dict[str, Any]:
        """Insert an order; returns it as DIFF shows it right after the exchange handled it."""
        order = await self.router.execute(lambda ts: commands.Insert(ts=ts, order=request))
        return order.to_diff()

    async def submit_insert_order(self, request: InsertOrder, on_done: Callable[[Request], None]) -> None:
        """Queue an insert without waiting (DIFF): its state arrives as patches, a refusal via on_done."""
        await self.router.submit(lambda ts: commands.Insert(ts=ts, order=request), on_done)

    async def submit_cancel_order(
        self, user_id: str, order_id: str, on_done: Callable[[Request], None]
    ) -> None:
        await self.router.submit(
            lambda ts: commands.Cancel(ts=ts, user_id=user_id, order_id=order_id), on_done
        )

    async def cancel_order(self, user_id: str, order_id: str) -> dict[str, Any]:
        order = await self.router.execute(
            lambda ts: commands.Cancel(ts=ts, user_id=user_id, order_id=order_id)
        )
        return order.to_diff()

    # -- admin ------------------------------------------------------------------------------------
    async def settle(self, prices: dict[str, float] | None = None, trading_day: str = "") -> dict[str, float]:
        """Settle the trading day (the engine's rules: VWAP prices, expiries), then list and delist
        for the next one. The next day is `trading_day`, by default the calendar's next trading day."""
        if not trading_day and self.engine.trading_day:
            trading_day = next_trading_day(self.engine.trading_day, self.settlement_calendar)
        settled = await self.router.execute(
            lambda ts: commands.Settle(ts=ts, prices=prices or {}, trading_day=trading_day)
        )
        log.info("settlement done: trading day is now %s", self.engine.trading_day)
        await self.relist()
        return settled

    async def upsert_instrument(self, spec: dict[str, Any]) -> Instrument:
        instrument = await self.router.execute(lambda ts: commands.UpsertInstrument(ts=ts, spec=spec))
        if self.simulator is not None:
            self.simulator.instrument_added(instrument.symbol)  # a new contract gets liquidity at once
        return instrument

    async def delist(self, symbol: str) -> Instrument:
        """Take an expired contract out of the listing (QaexError ``not_expired`` otherwise)."""
        return await self.router.execute(lambda ts: commands.Delist(ts=ts, symbol=symbol))

    async def set_suspended(self, symbol: str, suspended: bool) -> Instrument:
        return await self.router.execute(
            lambda ts: commands.SetSuspended(ts=ts, symbol=symbol, suspended=suspended)
        )
