"""LiquiditySimulator: a built-in market maker, so a lone user can trade any contract at once.

Two exchange-owned accounts trade like anyone else - through ``Exchange.insert_order`` and
``cancel_order``, hence the same router, risk checks, journal and matching:

* the **maker** (``qaex-mm``) keeps a ladder of resting limit orders around a reference price: the
  best bid at the reference, the best ask one tick above, ``levels`` prices each side, a few lots each.
  The reference follows a seeded random walk, pulled back towards the day's ``pre_settlement`` and kept
  inside the price limits with the whole ladder. A level that was taken is put back at the next step.
* the **taker** (``qaex-taker``) now and then sends a small IOC order at the best opposite price, so
  that last price, volume, ticks and K-lines move even with no user. It closes positions it holds
  before opening new ones, so its position stays small and open interest does not drift up forever.

One account per role (not per instrument): the books are separate, so the maker's bids and asks only
meet in the same book, where the ladder never crosses itself: every step cancels the orders that left
the ladder *before* it inserts new ones, so the engine's self-trade check never fires. Each instrument
runs its own loop with its own ``random.Random`` (seeded from ``seed`` and the symbol), so a run with a
seed is reproducible per instrument whatever the scheduling order of the loops.

Order ids are ``{instrument_id}.{N}`` (maker) and ``{instrument_id}.{N}t`` (taker), N from one counter
per instrument. After a restart the journal has brought back the day's orders of both accounts, so the
counter resumes above every number either account used for the instrument, whatever the suffix (an id
used again would be refused as a duplicate), and the maker takes up its orders still in the book.

The simulator is a participant, and no participant can end the exchange: everything it does runs
inside a supervisor boundary. A step (or the first put-up of a ladder) that raises an ``Exception`` is
logged with its traceback (each kind of exception at most once a minute, the repeats counted), the
ladder waits ``BACKOFF_FIRST`` seconds, doubling with each failure in a row up to ``BACKOFF_MAX``, then
re-syncs from the engine (the maker's live orders, the next free id) and tries again; the other
ladders go on. A failure outside the ladders' loops (opening the accounts, building the ladders)
restarts the whole simulator from the engine's state after the same back-off. Only a ``BaseException``
(cancellation, when the exchange stops) ends it.

Cost: a step every 0.5-2 s per instrument (``interval`` is the mean) sends about one order per second
per instrument. Finished orders and trades stay in the engine (about 1 KB each) and in the journal
until the daily settlement clears them, so once the day holds ``day_order_budget`` of the simulator's
orders it slows down in proportion (a day without settlement then costs ~300k orders, not ~900k);
run ``POST /api/admin/settle`` daily on a long-running server. The
gateway sends these accounts no patches (nobody can log in as them: their passwords are random and
never shown), so they cost the engine's records only.

With ``QAEX_MARKET_HOURS=exchange`` a ladder places no order while its contract is closed (out of its
sessions, weekends, holidays); the settlement cancels the resting ones, and the first step after the
next session opens puts the ladder back up.
"""

from __future__ import annotations

import logging
import math
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from qaex.core.errors import QaexError
from qaex.core.instruments import Instrument
from qaex.core.orders import Direction, InsertOrder, Offset, TimeCondition
from qaex.core.replay import ReplayTrack

if TYPE_CHECKING:
    from qaex.exchange.exchange import Exchange

log = logging.getLogger("qaex.simulator")

MAKER = "qaex-mm"
TAKER = "qaex-taker"
ACCOUNT_CASH = 1e11
"""Big enough that margin never limits the simulator in a lifetime of trading days."""
BACKOFF_FIRST = 1.0
"""Seconds a ladder waits after a failed step; doubled for each further failure in a row..."""
BACKOFF_MAX = 30.0
"""...up to this."""
LOG_EVERY = 60.0
"""Seconds between two log records of one kind of failure (the ones in between are counted)."""

_NUMBER = re.compile(r"\d+")


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, 3, ...)."""
    return min(BACKOFF_FIRST * 2.0 ** min(failures - 1, 64), BACKOFF_MAX)


CROWDING_EVERY = 30.0
"""Seconds between two computations of the simulator's crowding factor (_crowded)."""
MIN_ACTIVITY = 0.05
"""The slowest a listed contract's ladder steps, relative to its product's main contract (_activity)."""
REPLAY_STEP_MIN = 0.1
"""Seconds (trio time) between two steps of a replaying ladder at the least: it re-quotes at each
recorded price change, at most this often (faster changes are skipped to the latest)."""
REPLAY_LATE = 1e-6
"""Seconds a replaying ladder wakes after the change it waits for (the float sum lands at or past it)."""
REPLAY_KEEP_EVERY = 1.0
"""Seconds (trio time) between two reports of the replay's progress (``on_replay_progress``), also
reported when the simulator stops: a ``kill -9`` loses at most this much wall time of the replay."""


class ThrottledLog:
    """Logs one kind of record at most once per ``every`` seconds of trio's clock, counting the rest.

    The count is reported with the next record of the kind that gets through.
    """

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}  # kind -> when it was last logged
        self._held: dict[str, int] = {}  # kind -> records not logged since

    def log(
        self, kind: str, level: int, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        """Log unless a record of `kind` went out less than ``every`` seconds ago; True if logged."""
        now = trio.current_time()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        if held and last is not None:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, held, now - last)
        self._last[kind] = now
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True


@dataclass(slots=True)
class Ladder:
    """The maker's plan for one instrument: reference price and live orders. No IO, no clock."""

    instrument: Instrument
    rng: random.Random
    levels: int
    max_lots: int
    reference: int = 0  # ticks: the best bid; the best ask is one tick above
    live: dict[str, tuple[bool, int]] = field(default_factory=dict)  # order_id -> (buy, price in ticks)
    next_id: int = 1
    failures: int = 0  # steps failed in a row (the supervisor's back-off and re-sync)
    track: ReplayTrack | None = None  # QAEX_MARKET_REPLAY: the recorded prices to follow, until they end
    replay_start: float = 0.0  # trio time the replay started

    def bounds(self) -> tuple[int, int]:
        """Lowest and highest reference that keep the whole ladder inside the price limits."""
        instrument = self.instrument
        low = instrument.lower_limit_ticks + self.levels - 1
        high = instrument.upper_limit_ticks - self.levels
        if low > high:  # limits narrower than the ladder: centre it
            low = high = (instrument.lower_limit_ticks + instrument.upper_limit_ticks) // 2
        return low, high

    def clamp(self) -> None:
        low, high = self.bounds()
        self.reference = min(max(self.reference, low), high)

    def walk(self) -> None:
        """One random-walk step: stay, or move one tick, more likely towards ``pre_settlement``."""
        self.clamp()
        if self.rng.random() < 0.5:
            return
        low, high = self.bounds()
        anchor = round(self.instrument.pre_settlement / self.instrument.price_tick)
        half_range = max((high - low) / 2, 1.0)
        up = 0.5 - 0.4 * max(-1.0, min(1.0, (self.reference - anchor) / half_range))
        self.reference += 1 if self.rng.random() < up else -1
        self.clamp()

    def desired(self) -> dict[tuple[bool, int], None]:
        """Every (buy, price) the ladder wants a resting order at; best first each side."""
        wanted: dict[tuple[bool, int], None] = {}
        for step in range(self.levels):
            wanted[(True, self.reference - step)] = None
            wanted[(False, self.reference + 1 + step)] = None
        return wanted

    def plan(self) -> tuple[list[str], list[tuple[bool, int, int]]]:
        """Orders to cancel (off the ladder) and ``(buy, price, lots)`` to insert (empty ladder levels).

        Cancels come first when applied: a bid moving up to where an ask was must not meet it.
        """
        wanted = self.desired()
        cancels = [order_id for order_id, level in self.live.items() if level not in wanted]
        held = {level for level in self.live.values() if level in wanted}
        inserts = [
            (buy, price, self.rng.randint(1, self.max_lots))
            for buy, price in wanted
            if (buy, price) not in held
        ]
        return cancels, inserts

    def new_order_id(self) -> str:
        order_id = f"{self.instrument.instrument_id}.{self.next_id}"
        self.next_id += 1
        return order_id


class LiquiditySimulator:
    """The built-in market maker and taker (see the module docstring); a service with ``run``."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        seed: int | None = None,
        interval: float = 1.25,
        levels: int = 5,
        max_lots: int = 5,
        taker_chance: float = 0.3,
        symbols: list[str] | None = None,
        day_order_budget: int = 50_000,
        steps_per_second: float = 8.0,
        replay: Mapping[str, ReplayTrack] | None = None,
        replay_speed: float = 1.0,
        replay_from: Mapping[str, int] | None = None,
        on_replay_progress: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        """``interval``: mean seconds between two steps of one instrument (each step waits 0.4-1.6 ×
        ``interval``); ``taker_chance``: probability that a step also sends a taker order;
        ``day_order_budget``: orders of the trading day past which the simulator slows down;
        ``steps_per_second``: the most steps of all ladders together, on average (a full listing of a
        few hundred contracts is slowed to it: CPU and journal stay small with nobody trading).
        ``replay``: recorded reference prices per symbol (qaex.core.replay), played ``replay_speed``
        times real time from the ladder's start instead of the random walk, which takes over when
        the recording ends; ``replay_from``: recorded ns already played per symbol (a restart resumes
        there; past a track's end: the maker walks from the last price); ``on_replay_progress``:
        called with :meth:`replay_positions` every REPLAY_KEEP_EVERY seconds and when the simulator
        stops (qaex.exchange.replay_keeper keeps it)."""
        if replay_speed <= 0:
            raise ValueError("replay_speed > 0")
        self.replay = dict(replay or {})
        self.replay_speed = replay_speed
        self.replay_from = dict(replay_from or {})
        self.on_replay_progress = on_replay_progress
        if interval <= 0 or levels < 1 or max_lots < 1 or not 0 <= taker_chance <= 1 or day_order_budget < 1:
            raise ValueError(
                "interval > 0, levels >= 1, max_lots >= 1, 0 <= taker_chance <= 1 and day_order_budget >= 1"
            )
        self.exchange = exchange
        self.seed = seed
        self.interval = interval
        self.levels = levels
        self.max_lots = max_lots
        self.taker_chance = taker_chance
        self.symbols = symbols
        self.day_order_budget = day_order_budget
        self.steps_per_second = steps_per_second
        self._crowding = 1.0  # >= 1: how much every ladder is slowed to keep to steps_per_second
        self._crowding_at = -math.inf  # trio time of its last computation
        self.ladders: dict[str, Ladder] = {}
        self._products: dict[str, list[str]] = {}  # product key -> its quoted contracts (_activity)
        self._stepping: dict[str, trio.Lock] = {}  # symbol -> held while one of its ladder's actions runs
        self._nursery: trio.Nursery | None = None  # the ladders' loops, while running
        self._errors = ThrottledLog(log)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open (or reuse) the two accounts, put up every ladder, then keep them moving.

        Started once the ladders are up (or once putting them up failed: the exchange does not wait
        for the simulator). Never returns, and raises nothing but cancellation: a failure restarts the
        simulator from the engine's state after a back-off (see the module docstring).
        """
        started = False
        failures = 0
        while True:
            try:
                await self._put_up()
                failures = 0
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self.on_replay_progress is not None and self.replay:
                        nursery.start_soon(self._keep_replay_progress, name="simulator:replay-progress")
                    for ladder in self.ladders.values():
                        nursery.start_soon(self._loop, ladder, name=f"simulator:{ladder.instrument.symbol}")
                    await trio.sleep_forever()  # also with no ladder yet: contracts may be listed later
            except Exception as exc:
                failures += 1
                self._failed("start-up", exc, failures)
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(backoff(failures))
            finally:
                self._nursery = None
                self._report_replay_progress()  # also when stopping: the next start goes on from here

    async def _put_up(self) -> None:
        """Open (or reuse) the two accounts, take up today's orders, put up every ladder once."""
        engine = self.exchange.engine
        self.replay_from = self.replay_positions()  # a restart of the simulator goes on where it was
        for user_id in (MAKER, TAKER):
            self.exchange.gateway.silent_users.add(user_id)
            if user_id not in engine.users:  # after a restart the journal already holds them
                await self.exchange.open_account(user_id, secrets.token_urlsafe(24), ACCOUNT_CASH)
        # A covered contract that does not exist yet gets its ladder when it is listed (instrument_added).
        symbols = [symbol for symbol in engine.instruments if self._covers(symbol)]
        self.ladders = {symbol: self._ladder(symbol) for symbol in symbols}
        self._products = {}
        for ladder in self.ladders.values():
            self._products.setdefault(ladder.instrument.product_key, []).append(ladder.instrument.symbol)
        self._resync(self.ladders.values())
        # All at once: their orders share the router's batches (one journal commit for hundreds of
        # orders), so putting up a ladder on every listed contract takes a moment, not a minute.
        async with trio.open_nursery() as nursery:
            for ladder in self.ladders.values():
                nursery.start_soon(self._supervised, ladder, self._reconcile)
        log.info("liquidity simulator ready: %d instruments, seed %s", len(symbols), self.seed)

    def instrument_added(self, symbol: str) -> None:
        """A contract listed while running (``POST /api/admin/instruments``) gets its ladder too.

        Only for a contract the simulator covers (every one, or those of its ``symbols`` list), and
        while it runs; the new loop puts the ladder up at its first step, like every other one.
        """
        if self._nursery is None or symbol in self.ladders or not self._covers(symbol):
            return
        if symbol not in self.exchange.engine.instruments:
            return
        try:
            ladder = self._ladder(symbol)
            self._resync([ladder])  # today's orders, if the contract was quoted earlier today
        except Exception as exc:  # a participant's failure is not the admin's request's
            self._failed(symbol, exc, 1)
            return
        self.ladders[symbol] = ladder
        self._products.setdefault(ladder.instrument.product_key, []).append(symbol)
        self._nursery.start_soon(self._loop, ladder, name=f"simulator:{symbol}")
        log.info("liquidity simulator: ladder for %s", symbol)

    def _covers(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols

    def _ladder(self, symbol: str) -> Ladder:
        engine = self.exchange.engine
        instrument = engine.instruments[symbol]
        # A string seed is hashed deterministically (unlike hash()), so runs with one seed agree.
        rng = random.Random(f"{self.seed}/{symbol}") if self.seed is not None else random.Random()
        ladder = Ladder(instrument, rng, self.levels, min(self.max_lots, instrument.max_limit_order_volume))
        last_price = engine.last_price.get(symbol, instrument.pre_settlement)
        ladder.reference = round(last_price / instrument.price_tick)
        track = self.replay.get(symbol)
        played = self.replay_from.get(symbol, 0)
        price = track.price_at(played) if track is not None else None
        if track is not None and price is not None:
            ladder.track = track
            ladder.replay_start = trio.current_time() - played / self.replay_speed / 1e9
            ladder.reference = round(price / instrument.price_tick)
            if played:
                log.info("replay of %s resumed at %.1f s of %.1f s recorded", symbol, played / 1e9,
                         track.length_ns / 1e9)  # fmt: skip
        elif track is not None:
            log.info("replay of %s ended before this start: the random walk from the last price", symbol)
        ladder.clamp()
        return ladder

    def replay_positions(self) -> dict[str, int]:
        """Recorded ns each recording has played: a quoted ladder's so far (its track's length + 1
        once ended), the kept one of a symbol not quoted (yet)."""
        positions = {symbol: self.replay_from[symbol] for symbol in self.replay if symbol in self.replay_from}
        for symbol, ladder in self.ladders.items():
            track = self.replay.get(symbol)
            if track is None:
                continue
            ended = track.length_ns + 1
            if ladder.track is None:
                positions[symbol] = ended
            else:
                positions[symbol] = min(int(self._replay_elapsed_ns(ladder)), ended)
        return positions

    def _report_replay_progress(self) -> None:
        if self.on_replay_progress is not None and self.replay:
            self.on_replay_progress(self.replay_positions())

    async def _keep_replay_progress(self) -> None:
        while True:
            await trio.sleep(REPLAY_KEEP_EVERY)
            self._report_replay_progress()

    def _resync(self, ladders: Iterable[Ladder]) -> None:
        """Make the ladders agree with the engine (after a restart, after a failure).

        ``live`` becomes the maker's orders in the instrument's book, and ``next_id`` goes above every
        number used in the instrument's ids of *either* account, whatever follows it (the taker's ``t``):
        ids are kept for the day, so one issued again would be refused as a duplicate.
        """
        by_symbol = {ladder.instrument.symbol: ladder for ladder in ladders}
        if not by_symbol:
            return
        highest = {ladder.instrument.instrument_id: 0 for ladder in by_symbol.values()}  # id prefix -> N
        for ladder in by_symbol.values():
            ladder.live = {}
        users = self.exchange.engine.users
        for user_id in (MAKER, TAKER):
            for order_id, order in users[user_id].orders.items():
                prefix, dot, rest = order_id.rpartition(".")
                number = _NUMBER.match(rest) if dot and prefix in highest else None
                if number is not None:
                    highest[prefix] = max(highest[prefix], int(number.group()))
                if user_id == MAKER and order.status == "ALIVE":
                    quoting = by_symbol.get(order.symbol)
                    if quoting is not None:
                        price = quoting.instrument.to_ticks(order.limit_price) or 0
                        quoting.live[order_id] = (order.is_buy, price)
        for ladder in by_symbol.values():
            ladder.next_id = max(ladder.next_id, highest[ladder.instrument.instrument_id] + 1)

    async def _loop(self, ladder: Ladder) -> None:
        symbol = ladder.instrument.symbol
        while symbol in self.exchange.engine.instruments:  # until the contract leaves the listing
            if ladder.failures:
                await trio.sleep(backoff(ladder.failures))
            else:
                pause = ladder.rng.uniform(0.4, 1.6) * self.interval * self._slowdown() * self._crowded()
                await trio.sleep(self._replay_pause(ladder, pause / self._activity(ladder)))
            await self._supervised(ladder, self.step)
        self.ladders.pop(symbol, None)
        self._stepping.pop(symbol, None)
        siblings = self._products.get(ladder.instrument.product_key, [])
        if symbol in siblings:
            siblings.remove(symbol)

    async def _supervised(self, ladder: Ladder, action: Callable[[Ladder], Awaitable[None]]) -> None:
        """The supervisor boundary around one step of a ladder: an ``Exception`` is logged and counted
        (the loop then backs off), never raised; after a failure the ladder re-syncs before it acts."""
        lock = self._stepping.get(ladder.instrument.symbol)
        if lock is None:
            lock = self._stepping[ladder.instrument.symbol] = trio.Lock()
        try:
            async with lock:  # one action of a ladder at a time: a taker order decides from the position
                if ladder.failures:
                    self._resync([ladder])
                await action(ladder)
        except Exception as exc:
            ladder.failures += 1
            self._failed(ladder.instrument.symbol, exc, ladder.failures)
            return
        if ladder.failures:
            self._errors.log(
                "recovered",
                logging.WARNING,
                "liquidity simulator: %s recovered after %d failed step(s)",
                ladder.instrument.symbol,
                ladder.failures,
            )
            ladder.failures = 0

    def _failed(self, what: str, exc: Exception, failures: int) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        self._errors.log(
            kind,
            logging.ERROR,
            "liquidity simulator: %s failed (%d in a row); trying again in %.0f s: %r",
            what,
            failures,
            backoff(failures),
            exc,
            exc_info=exc,
        )

    def _activity(self, ladder: Ladder) -> float:
        """How often a contract's ladder steps, relative to ``interval``: its open interest's share of
        the product's busiest contract (the main contract: 1), at least MIN_ACTIVITY. With every month
        of every product listed, trading goes where the open interest is, as in the real market, and a
        far month with no open interest steps every ~``interval / MIN_ACTIVITY`` seconds."""
        instrument = ladder.instrument
        interest = self.exchange.engine.open_interest
        siblings = self._products.get(instrument.product_key, ())
        top = max((interest.get(symbol, 0) for symbol in siblings), default=0)
        if top <= 0:
            return 1.0
        return max(MIN_ACTIVITY, interest.get(instrument.symbol, 0) / top)

    def _crowded(self) -> float:
        """The factor that keeps all ladders' steps, weighted by their activity, to ``steps_per_second``
        (recomputed every CROWDING_EVERY seconds: activities follow the open interest slowly)."""
        now = trio.current_time()
        if now - self._crowding_at >= CROWDING_EVERY:
            wanted = sum(self._activity(ladder) for ladder in self.ladders.values()) / self.interval
            self._crowding = max(1.0, wanted / self.steps_per_second)
            self._crowding_at = now
        return self._crowding

    def _slowdown(self) -> float:
        """1 until today's orders pass the budget, then proportional to them: the day's records (kept
        until the settlement clears them) then grow like the square root of time, not linearly."""
        users = self.exchange.engine.users
        today = len(users[MAKER].orders) + len(users[TAKER].orders)
        return max(1.0, today / self.day_order_budget)

    async def step(self, ladder: Ladder) -> None:
        """Move the reference, maybe send a taker order, then restore the ladder."""
        instrument = ladder.instrument
        if instrument.suspended or instrument.expired or not self.exchange.market_open(instrument):
            return  # orders would only be rejected (and pile up in the day's records)
        self._forget_finished(ladder)
        self._move(ladder)
        if ladder.rng.random() < self.taker_chance:
            await self._take(ladder)
        await self._reconcile(ladder)

    def _replay_elapsed_ns(self, ladder: Ladder) -> float:
        """Recorded ns played so far by the ladder's replay."""
        return (trio.current_time() - ladder.replay_start) * self.replay_speed * 1e9

    def _replay_pause(self, ladder: Ladder, pause: float) -> float:
        """While a replay plays: the seconds until its next recorded change (at least REPLAY_STEP_MIN,
        at most ``pause``, the walk's pause), so the ladder re-quotes around each change; else ``pause``."""
        track = ladder.track
        if track is None:
            return pause
        elapsed = self._replay_elapsed_ns(ladder)
        change = track.next_change(elapsed)
        if change is None:  # past the last point: the next step goes back to the walk
            return pause
        wait = (change - elapsed) / 1e9 / self.replay_speed + REPLAY_LATE
        return min(pause, max(REPLAY_STEP_MIN, wait))

    def _move(self, ladder: Ladder) -> None:
        """The recorded price if a replay is playing, else one random-walk step."""
        track = ladder.track
        if track is not None:
            price = track.price_at(self._replay_elapsed_ns(ladder))
            if price is not None:
                ladder.reference = round(price / ladder.instrument.price_tick)
                ladder.clamp()
                return
            ladder.track = None
            log.info("replay of %s ended: back to the random walk", ladder.instrument.symbol)
        ladder.walk()

    def _forget_finished(self, ladder: Ladder) -> None:
        """Drop the maker's orders that were filled or cancelled (settlement clears them all)."""
        orders = self.exchange.engine.users[MAKER].orders
        for order_id in list(ladder.live):
            order = orders.get(order_id)
            if order is None or order.status != "ALIVE":
                del ladder.live[order_id]

    async def _reconcile(self, ladder: Ladder) -> None:
        if not self.exchange.market_open(ladder.instrument):
            return  # QAEX_MARKET_HOURS=exchange, out of hours: the ladder goes up at the session's open
        cancels, inserts = ladder.plan()
        for order_id in cancels:
            del ladder.live[order_id]
            try:
                await self.exchange.cancel_order(MAKER, order_id)
            except QaexError:
                pass  # filled in the meantime: nothing rests there any more either
        instrument = ladder.instrument
        for buy, price, lots in inserts:
            order_id = ladder.new_order_id()
            try:
                order = await self._send(MAKER, instrument, order_id, buy, price, lots, "OPEN", "GFD")
            except QaexError as exc:
                if exc.code == "market_closed":  # the session ended between the check and the router
                    return
                raise
            if order["status"] == "ALIVE":
                ladder.live[order_id] = (buy, price)
            elif not order["exchange_order_id"]:
                log.warning("market maker order refused (%s): %s", instrument.symbol, order["last_msg"])
                return  # try again at the next step, not in a loop now

    async def _take(self, ladder: Ladder) -> None:
        instrument = ladder.instrument
        book = self.exchange.engine.books[instrument.symbol]
        buy = ladder.rng.random() < 0.5
        price = book.best_ask() if buy else book.best_bid()
        if price is None:
            return
        lots = ladder.rng.randint(1, min(2, instrument.max_limit_order_volume))
        offset = self._taker_offset(instrument, buy, lots)
        order_id = f"{ladder.new_order_id()}t"
        try:
            await self._send(TAKER, instrument, order_id, buy, price, lots, offset, "IOC")
        except QaexError as exc:
            if exc.code != "market_closed":  # the session ended between the check and the router
                raise

    def _taker_offset(self, instrument: Instrument, buy: bool, lots: int) -> Offset:
        """Close what the taker holds on the other side first (today's lots on SHFE/INE), else open."""
        position = self.exchange.engine.users[TAKER].account.positions.get(instrument.symbol)
        if position is None:
            return "OPEN"
        his, today = position.closable(buy)
        if instrument.separates_today:
            if his >= lots:
                return "CLOSE"
            return "CLOSETODAY" if today >= lots else "OPEN"
        return "CLOSE" if his + today >= lots else "OPEN"

    async def _send(
        self,
        user_id: str,
        instrument: Instrument,
        order_id: str,
        buy: bool,
        price_ticks: int,
        lots: int,
        offset: Offset,
        time_condition: TimeCondition,
    ) -> dict[str, object]:
        direction: Direction = "BUY" if buy else "SELL"
        request = InsertOrder(
            user_id=user_id,
            order_id=order_id,
            exchange_id=instrument.exchange_id,
            instrument_id=instrument.instrument_id,
            direction=direction,
            offset=offset,
            volume=lots,
            limit_price=instrument.from_ticks(price_ticks),
            time_condition=time_condition,
        )
        return await self.exchange.insert_order(request)
