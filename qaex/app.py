"""The QuartTrio application: ``hypercorn qaex.app:app --worker-class trio``.

Configuration is read when serving starts (not at import), so a bad setting fails start-up with a
message naming the variable. ``before_serving`` then locks the data directory (one server per data
directory, hence one hypercorn worker), builds the Exchange and starts it and the DIFF listener in
the app's nursery, under one supervisor task:

```
app.nursery (quart-trio lifespan)
└── Server.supervise
    ├── StallReporter.run (only with QAEX_STALL_MS; qaex.stalls)
    ├── gc_policy.collect_on_timer (QAEX_GC_INTERVAL)
    ├── Exchange.run
    ├── NotificationHub.run (qaex.exchange.notifications: /ws and SSE /api/events)
    └── serve_diff (qaex.api.diff_server)
```
A failure while starting fails the lifespan startup, and hypercorn exits non-zero. A failure after
start — a crashed exchange service — would otherwise be swallowed by hypercorn's lifespan handling
and leave an HTTP server in front of a dead exchange, so the supervisor logs it and ends the process
(exit code 70). Shutdown (SIGTERM, Ctrl-C) cancels the supervisor, then releases the lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets

import trio
from quart_trio import QuartTrio

from qaex import gc_policy, logconfig
from qaex.api.auth import TokenSigner
from qaex.api.diff_server import serve_diff
from qaex.api.events import CuttableStreams
from qaex.api.http import Services, blueprint
from qaex.api.web import pages  # also declares GET /api/web/config on the API blueprint
from qaex.api.websocket_guard import RejectWebSockets, refuse_websocket_upgrades
from qaex.config import Config, ConfigError, access_guard, load_holidays, load_instruments, load_listing
from qaex.core.engine import Engine
from qaex.core.journal_format import JournalCorrupt
from qaex.core.replay import ReplayTrack
from qaex.datadir import DataDir, DataDirLocked
from qaex.exchange.exchange import Exchange
from qaex.exchange.history import HistoryStore, load_replay
from qaex.exchange.live_bars import LiveBarStore
from qaex.exchange.market import MarketData
from qaex.exchange.notifications import NotificationHub
from qaex.exchange.recovery import open_journal
from qaex.exchange.replay_keeper import ReplayKeeper
from qaex.exchange.simulator import LiquiditySimulator
from qaex.stalls import StallReporter

log = logging.getLogger("qaex.app")

EXIT_SERVICE_CRASHED = 70  # EX_SOFTWARE
EXIT_CANNOT_START = 78  # EX_CONFIG: bad setting, data directory in use, port taken
SHUTDOWN_TIMEOUT = 10.0


def _replay(config: Config) -> dict[str, ReplayTrack]:
    """QAEX_MARKET_REPLAY's (``qaex serve --replay``) recordings, or a ConfigError naming the file."""
    if not config.market_replay:
        return {}
    try:
        return load_replay(config.market_replay)
    except ValueError as exc:
        raise ConfigError(f"QAEX_MARKET_REPLAY (--replay): {exc}") from None


def build_exchange(config: Config, data_dir: DataDir) -> Exchange:
    """The Exchange this server runs; the one place to wire the journal and the market maker."""
    instruments = load_instruments(config)  # read even when a checkpoint has them: a bad file still fails
    journal, recovered = open_journal(
        data_dir.path,
        lambda: Engine(instruments, max_orders_per_second=config.max_orders_per_second),
        fsync=config.fsync == "batch",
        max_orders_per_second=config.max_orders_per_second,
        market_hours=config.market_hours,
        checkpoint_records=config.checkpoint_records,
        checkpoint_seconds=config.checkpoint_seconds,
    )
    calendar = load_holidays(config)
    market = MarketData(
        recovered.engine,
        history=config.market_history,
        publish_interval=config.quote_interval,
        history_store=(
            HistoryStore(data_dir.path / "history", seed=config.seed, calendar=calendar)
            if config.market_backfill
            else None
        ),
        live_bars=(
            LiveBarStore(data_dir.path / "history" / "live", keep=config.market_history)
            if config.market_backfill
            else None
        ),
    )
    today = dt.date.today()
    uncovered = calendar.uncovered_years(today, today + dt.timedelta(days=400))
    if uncovered:
        log.warning(
            "the holiday calendar does not cover %s: weekends only there (last trading days, and with "
            "QAEX_MARKET_HOURS=exchange the trading days, may differ from the exchanges'); QAEX_HOLIDAYS "
            "can add them",
            ", ".join(map(str, uncovered)),
        )
    exchange = Exchange(
        recovered.engine,
        listing=load_listing(config, calendar),
        journal=journal,
        market=market,
        mark_interval=config.mark_interval,
        # 18:00 on weekdays (always) or 15:30 on trading days (exchange), unless QAEX_SETTLEMENT_TIME says
        settle_at=config.settlement_clock,
        settlement_calendar=calendar if config.market_hours == "exchange" else None,
        max_sessions_per_user=config.max_sessions_per_user,
        guard=access_guard(config),
    )
    log.info("market hours: %s", config.market_hours)
    exchange.router.resume_after(recovered.last_ts)
    exchange.seed_from_engine()
    if config.market_maker:
        symbols = [s.strip() for s in config.market_maker_symbols.split(",") if s.strip()]
        replay = _replay(config)
        keeper = ReplayKeeper(data_dir.path, replay, config.market_replay_speed) if replay else None
        exchange.simulator = LiquiditySimulator(
            exchange, seed=config.seed, interval=config.market_maker_interval, symbols=symbols or None,
            replay=replay, replay_speed=config.market_replay_speed,
            replay_from=keeper.load() if keeper else None, on_replay_progress=keeper.save if keeper else None,
        )  # fmt: skip
    return exchange


class Server:
    """The per-process state behind the app: data directory lock, exchange and their supervisor."""

    def __init__(self, app: QuartTrio, config: Config | None) -> None:
        self.app = app
        self._given_config = config
        self.config: Config | None = None
        self.data_dir: DataDir | None = None
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

    async def start(self) -> None:
        """Start everything, or end the process with one clear line and EXIT_CANNOT_START.

        Exiting here rather than raising spares the operator two screens of lifespan tracebacks
        (Quart's and hypercorn's) around a message like "QAEX_DIFF_PORT: expected an integer".
        """
        try:
            await self._start()
        except Exception as exc:
            reason = _startup_problem(exc)
            if reason is None:
                raise
            log.critical("qaex cannot start: %s", reason)
            logging.shutdown()
            os._exit(EXIT_CANNOT_START)

    async def _start(self) -> None:
        config = self.config = self._given_config or Config.load()
        logconfig.configure(config.log)
        data_dir = self.data_dir = DataDir(config.data_dir)
        data_dir.lock()
        admin_token = config.admin_token
        if not admin_token:
            admin_token = secrets.token_urlsafe(24)
            log.warning("QAEX_ADMIN_TOKEN is not set; the admin token of this run is %s", admin_token)
        exchange = build_exchange(config, data_dir)
        gc_policy.tune(config.gc_threshold)
        gc_policy.freeze_loaded_state()
        self.app.config["MAX_CONTENT_LENGTH"] = config.max_message_size
        exchange.snapshots.notifications = NotificationHub.for_config(exchange.snapshots, config)
        self.app.extensions["qaex"] = Services(
            config=config,
            exchange=exchange,
            tokens=TokenSigner(data_dir.secret(), config.token_ttl),
            admin_token=admin_token,
        )
        await self.app.nursery.start(self._supervise, exchange, config)
        log.info("data directory %s (locked by pid %d)", data_dir.path, os.getpid())

    async def _supervise(
        self, exchange: Exchange, config: Config, *, task_status: trio.TaskStatus[None]
    ) -> None:
        started = False
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    if config.stall_ms > 0:
                        await nursery.start(StallReporter(config.stall_ms / 1000).run)
                    if config.gc_interval > 0:
                        await nursery.start(gc_policy.collect_on_timer, config.gc_interval)
                    await nursery.start(exchange.run)
                    if config.broker:  # scale-out: patches to the gateways (qaex.exchange.broker_core)
                        from qaex.exchange.broker_core import BrokerCore
                        from qaex.exchange.nats_client import NatsClient

                        core = BrokerCore(
                            exchange, NatsClient(config.broker, name="qaex-core"), config.exchange_id
                        )
                        await nursery.start(core.run)
                    if exchange.snapshots.notifications is not None:
                        await nursery.start(exchange.snapshots.notifications.run)
                    tokens = self.app.extensions["qaex"].tokens
                    await nursery.start(serve_diff, exchange, config, tokens)
                    log.info("DIFF: ws://%s:%d/ws/diff", config.diff_host, config.diff_port)
                    log.info("HTTP: on hypercorn's bind (see its 'Running on' line)")
                    started = True
                    task_status.started()
        except Exception:
            if not started:
                raise  # fails the lifespan startup: hypercorn reports it and exits
            log.critical("an exchange service crashed; stopping the server", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_SERVICE_CRASHED)
        finally:
            self._stopped.set()
        if started and not self._scope.cancelled_caught:
            log.critical("the exchange stopped by itself; stopping the server")
            logging.shutdown()
            os._exit(EXIT_SERVICE_CRASHED)

    async def stop(self) -> None:
        self._scope.cancel()
        with trio.move_on_after(SHUTDOWN_TIMEOUT):
            await self._stopped.wait()
        if self.data_dir is not None:
            self.data_dir.unlock()
        log.info("stopped")


def _startup_problem(exc: BaseException) -> BaseException | None:
    """The operator-fixable error inside `exc` (possibly nested in exception groups), if any."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_problem(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, ConfigError | DataDirLocked | JournalCorrupt | OSError) else None


def create_app(config: Config | None = None) -> QuartTrio:
    """A fresh app; `config` defaults to Config.load() (environment and QAEX_CONFIG) at start-up."""
    app = QuartTrio(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.register_blueprint(blueprint)
    app.register_blueprint(pages)  # the web terminal: / and /admin and /web/*, outside /openapi.json
    # hypercorn issue #225: WebSocket upgrades on this port are plain HTTP requests, answered with a
    # JSON 400 by the guard; see qaex.api.websocket_guard.
    app.asgi_app = RejectWebSockets(app.asgi_app)  # type: ignore[method-assign]
    # SSE streams (/api/events) get a cancel scope, so that a client that stops reading can be cut off.
    app.asgi_app = CuttableStreams(app.asgi_app)  # type: ignore[method-assign, assignment]
    refuse_websocket_upgrades(app)
    server = Server(app, config)
    app.extensions["qaex.server"] = server
    app.before_serving(server.start)
    app.after_serving(server.stop)
    return app


app = create_app()
