"""Server configuration: environment variables over an optional TOML file over defaults.

Every setting has one name: ``QAEX_DIFF_PORT`` in the environment is ``diff_port`` in the TOML file
named by ``QAEX_CONFIG``. The environment wins, so a unit file or container can override one value
of a shared config file. A bad value fails at start-up with a message that names the variable and
says what was expected — a typo must never fall back to a default silently.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_type_hints

import msgspec

from qaex.core import limits
from qaex.core.calendar import HolidayCalendar, MarketHours, default_holiday_calendar, parse_clock_time
from qaex.core.instruments import InstrumentRegistry
from qaex.core.listing import ProductListing
from qaex.core.products import PRODUCTS, products_from_mapping
from qaex.core.throttle import AccessGuard, parse_networks
from qaex.logconfig import parse_levels

ENV_PREFIX = "QAEX_"
CONFIG_FILE_VARIABLE = "QAEX_CONFIG"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable or TOML key."""


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """All settings of one qaex server. See docs/configuration.md."""

    diff_host: str = "127.0.0.1"
    diff_port: int = 8001
    data_dir: str = "./qaex-data"
    admin_token: str = ""  # empty: the app generates one at start and logs it once
    market_maker: bool = True
    instruments: str = ""  # path of an instrument TOML file (a fixed listing); empty: listed by product
    products: str = ""  # path of a product TOML file ([[product]] tables) adding to / overriding the built-in
    holidays: str = ""  # path of a holiday TOML file (holidays.toml's format) extending the built-in calendar
    keep_expired_days: int = 7  # calendar days an expired contract stays listed before it is delisted
    fsync: Literal["batch", "off"] = "batch"
    checkpoint_records: int = 100_000  # journal records between checkpoints (bounds recovery time)
    checkpoint_seconds: float = 600.0  # ... or seconds, whichever comes first
    log: str = "info"
    max_sessions: int = 20_000
    max_sessions_per_user: int = 32  # DIFF sessions one user may be logged in on at once; 0 = no limit
    max_message_size: int = 1 << 20  # bytes, for DIFF messages and HTTP request bodies
    max_messages_per_second: int = 200  # per DIFF session
    max_orders_per_second: int = 500  # per user; 0 = unlimited
    init_cash: float = 1_000_000.0
    seed: int | None = None  # market maker seed; None = random
    market_maker_interval: float = 1.25  # mean seconds between two market-maker steps per instrument
    market_maker_symbols: str = ""  # comma-separated contracts the market maker quotes; "" = every one
    mark_interval: float = 0.5  # seconds between two mark-to-market passes over all holders
    market_hours: MarketHours = "always"  # "always": open round the clock; "exchange": real sessions
    # Daily settlement, China time; "" turns it off; unset (None): the market-hours policy's, see
    # settlement_clock.
    settlement_time: str | None = None
    quote_interval: float = 0.5  # shortest time between two market-data publishes (CTP-like snapshots)
    market_history: int = 10_000  # bars (and ticks) kept per series
    market_backfill: bool = True  # synthetic history for every contract (docs/market-data.md, History)
    market_replay: str = ""  # recorded K-line CSVs (files or directories) the market maker follows
    market_replay_speed: float = 1.0  # 1 = real time
    token_ttl: int = 86_400  # seconds a login token stays valid
    gc_threshold: int = 20_000  # CPython's young-generation GC threshold (qaex/gc_policy.py); 0 = CPython's
    gc_interval: float = 0.02  # seconds between timed young collections (qaex/gc_policy.py); 0 = none
    stall_ms: float = 0.0  # log event-loop passes longer than this (qaex/stalls.py); 0 = off
    # Access limits (qaex/core/throttle.py); the addresses are the clients', see trusted_proxies.
    login_failures_before_backoff: int = 5  # per (user id, address); then 1 s, 2 s, 4 s, ...
    login_backoff_max_seconds: float = 300.0  # the back-off's cap; 0 = no back-off
    login_address_failures_per_minute: int = 30  # per address, over all user ids; 0 = no limit
    max_accounts_per_address_per_hour: int = 20  # HTTP account opening; 0 = no limit
    trusted_proxies: str = ""  # comma-separated addresses/networks whose X-Forwarded-For is believed
    # The web terminal (qaex/api/web.py): the DIFF URL the page connects to; "": ws://<the page's
    # host>:<diff_port>/ws/diff. Set it behind a reverse proxy (wss://example.org/ws/diff).
    public_diff_url: str = ""
    # Comma-separated origins (scheme://host[:port]) allowed to open DIFF from a browser; "": any.
    # Clients that send no Origin header (TqSdk, scripts) are always let in.
    allowed_origins: str = ""
    # The per-event notification stream (/ws, SSE /api/events; docs/notifications.md).
    notify_buffer: int = 1000  # events kept per user for Last-Event-ID resume
    notify_max_lag: int = 500  # events a connection may be behind before it is cut off (<= notify_buffer)
    notify_mark_interval: float = 1.0  # seconds: at most one mark-to-market account_update per interval
    notify_retain_seconds: float = 600.0  # a user's events are kept this long after its last connection
    # Scale-out (docs/architecture.md, "Gateways"): a NATS URL (nats://host:4222) the core publishes
    # its patches on and answers the DIFF gateways through; "": no broker (one process, the default).
    broker: str = ""
    exchange_id: str = "qaex"  # the broker subjects' prefix is qaex.<exchange_id>.
    diff_reuse_port: bool = False  # SO_REUSEPORT on the DIFF port: several gateways share it

    @property
    def settlement_clock(self) -> dt.time | None:
        """When the daily settlement runs (China time), or None for never: ``settlement_time`` when it
        is set, else the policy's: 18:00 on weekdays (``always``: the trading day rolls at 18:00) or
        15:30 on trading days (``exchange``: after the day session, as the exchanges do)."""
        if self.settlement_time is None:
            return dt.time(18, 0) if self.market_hours == "always" else dt.time(15, 30)
        return parse_clock_time(self.settlement_time) if self.settlement_time else None

    @property
    def allowed_origin_list(self) -> list[str]:
        """``allowed_origins`` split, without trailing slashes; empty: every origin is allowed."""
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Defaults, then the TOML file named by ``QAEX_CONFIG`` (if any), then ``QAEX_*`` variables."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # field -> where its value came from, for error messages
        path = environ.get(CONFIG_FILE_VARIABLE, "")
        if path:
            values.update(_read_file(path))
            sources.update((name, f"{path}: {name}") for name in values)
        for name in cls.__struct_fields__:
            variable = ENV_PREFIX + name.upper()
            raw = environ.get(variable)
            if raw is not None:
                values[name] = _parse_env(name, raw)
                sources[name] = variable
        return cls.from_mapping(values, origin=lambda name: sources.get(name, name))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, origin: Callable[[str], str] = str) -> Config:
        """Build and check a Config; `origin(field)` names the source of a value in error messages."""
        try:
            config = msgspec.convert(dict(values), cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(exc, origin)) from None
        config.check(origin)
        return config

    def check(self, origin: Callable[[str], str] = str) -> None:
        """Range checks msgspec's types cannot express."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{origin(name)}: expected {what}, got {getattr(self, name)!r}")

        need(0 <= self.diff_port <= 65535, "diff_port", "a port number 0-65535")
        need(bool(self.diff_host), "diff_host", "a host name or address")
        need(bool(self.data_dir), "data_dir", "a directory path")
        need(0 < self.max_sessions <= 1_000_000, "max_sessions", "an integer 1-1000000")
        need(self.max_sessions_per_user >= 0, "max_sessions_per_user", "an integer >= 0 (0 = no limit)")
        need(1024 <= self.max_message_size <= 64 << 20, "max_message_size", "1024-67108864 (bytes)")
        need(self.max_messages_per_second > 0, "max_messages_per_second", "an integer > 0")
        need(self.max_orders_per_second >= 0, "max_orders_per_second", "an integer >= 0 (0 = unlimited)")
        need(0 <= self.init_cash <= limits.MAX_AMOUNT, "init_cash", f"a number 0-{limits.MAX_AMOUNT:.0f}")
        need(0 < self.token_ttl <= 366 * 86_400, "token_ttl", "a number of seconds 1-31622400")
        need(self.checkpoint_records > 0, "checkpoint_records", "an integer > 0")
        need(self.checkpoint_seconds > 0, "checkpoint_seconds", "a number of seconds > 0")
        need(self.market_maker_interval > 0, "market_maker_interval", "a number of seconds > 0")
        need(self.mark_interval > 0, "mark_interval", "a number of seconds > 0")
        need(self.quote_interval >= 0, "quote_interval", "a number of seconds >= 0")
        need(self.gc_threshold >= 0, "gc_threshold", "an integer >= 0 (0 = CPython's default)")
        need(self.gc_interval >= 0, "gc_interval", "a number of seconds >= 0 (0 = no timed collections)")
        need(self.stall_ms >= 0, "stall_ms", "a number of milliseconds >= 0 (0 = off)")
        need(self.notify_buffer >= 1, "notify_buffer", "an integer >= 1")
        need(1 <= self.notify_max_lag <= self.notify_buffer, "notify_max_lag", "an integer 1..notify_buffer")
        need(self.notify_mark_interval >= 0, "notify_mark_interval", "a number of seconds >= 0")
        need(self.notify_retain_seconds >= 0, "notify_retain_seconds", "a number of seconds >= 0")
        need(
            1 <= self.login_failures_before_backoff <= 1000,
            "login_failures_before_backoff",
            "an integer 1-1000",
        )
        need(
            0 <= self.login_backoff_max_seconds <= 86_400,
            "login_backoff_max_seconds",
            "a number of seconds 0-86400 (0 = no back-off)",
        )
        need(
            0 <= self.login_address_failures_per_minute <= 1_000_000,
            "login_address_failures_per_minute",
            "an integer 0-1000000 (0 = no limit)",
        )
        need(
            0 <= self.max_accounts_per_address_per_hour <= 1_000_000,
            "max_accounts_per_address_per_hour",
            "an integer 0-1000000 (0 = no limit)",
        )
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(
                f"{origin('trusted_proxies')}: expected comma-separated IP addresses or networks: {exc}"
            ) from None
        need(
            self.public_diff_url == "" or self.public_diff_url.startswith(("ws://", "wss://")),
            "public_diff_url",
            "a ws:// or wss:// URL, or empty",
        )
        need(
            all(o.startswith(("http://", "https://")) for o in self.allowed_origin_list),
            "allowed_origins",
            "comma-separated origins like https://example.org, or empty",
        )
        if self.settlement_time:
            try:
                parse_clock_time(self.settlement_time)
            except ValueError:
                need(False, "settlement_time", "HH:MM (China time) or empty")
        need(
            self.broker == "" or self.broker.startswith(("nats://", "tcp://")),
            "broker",
            "a nats://host:port URL, or empty",
        )
        need(
            0 < len(self.exchange_id) <= 64
            and all(c.isascii() and (c.isalnum() or c in "_-") for c in self.exchange_id),
            "exchange_id",
            "1-64 letters, digits, _ or -",
        )
        need(1 <= self.market_history <= 1_000_000, "market_history", "an integer 1-1000000")
        need(0 < self.market_replay_speed <= 1e6, "market_replay_speed", "a number > 0 (1 = real time)")
        need(
            not self.market_replay or self.market_maker,
            "market_replay",
            "no recording while the market maker, which plays it, is off (QAEX_MARKET_MAKER=0)",
        )
        need(0 <= self.keep_expired_days <= 3660, "keep_expired_days", "a number of days 0-3660")
        need(not (self.instruments and self.products), "products", "empty when QAEX_INSTRUMENTS is set")
        need(self.admin_token == "" or len(self.admin_token) >= 16, "admin_token", "at least 16 characters")
        try:
            parse_levels(self.log)
        except ValueError as exc:
            raise ConfigError(f"{origin('log')}: {exc}") from None


# -- parsing ------------------------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_env(name: str, raw: str) -> Any:
    """Turn one environment string into the field's type; msgspec then checks it like a TOML value."""
    variable = ENV_PREFIX + name.upper()
    field_type = Config.__annotations__[name]
    text = raw.strip()
    if field_type == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{variable}: expected 0 or 1, got {raw!r}")
    if field_type in ("int", "int | None"):
        if field_type == "int | None" and text == "":
            return None
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{variable}: expected an integer, got {raw!r}") from None
    if field_type == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{variable}: expected a number, got {raw!r}") from None
    return text


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - set(Config.__struct_fields__))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return document


def _explain(exc: msgspec.ValidationError, origin: Callable[[str], str]) -> str:
    """'Expected `int`, got `str` - at `$.diff_port`' -> 'QAEX_DIFF_PORT: expected `int`, got `str`'."""
    message = str(exc)
    text, _, where = message.rpartition(" - at `$.")
    if not text:
        return message
    name = where.rstrip("`").split("[")[0].split(".")[0]
    choices = get_args(get_type_hints(Config).get(name))
    if text.startswith("Invalid enum value") and choices:
        text += f" (expected one of: {', '.join(map(str, choices))})"
    return f"{origin(name)}: {text[0].lower()}{text[1:]}"


def load_instruments(config: Config) -> InstrumentRegistry:
    """The registry the exchange starts with: those of ``QAEX_INSTRUMENTS``, or none (the product
    listing, :func:`load_listing`, lists the contracts of the day at the first start)."""
    if not config.instruments:
        return InstrumentRegistry([])
    try:
        return InstrumentRegistry.from_toml(config.instruments)
    except OSError as exc:
        raise ConfigError(f"QAEX_INSTRUMENTS: cannot read {config.instruments}: {exc.strerror}") from None
    except (ValueError, msgspec.ValidationError) as exc:  # TOMLDecodeError is a ValueError
        raise ConfigError(f"QAEX_INSTRUMENTS: {config.instruments}: {exc}") from None


def access_guard(config: Config) -> AccessGuard:
    """The login throttles and per-address limits of `config` (qaex.core.throttle)."""
    return AccessGuard(
        trusted_proxies=config.trusted_proxies,
        login_failures_before_backoff=config.login_failures_before_backoff,
        login_backoff_max_seconds=config.login_backoff_max_seconds,
        login_address_failures_per_minute=config.login_address_failures_per_minute,
        max_accounts_per_address_per_hour=config.max_accounts_per_address_per_hour,
    )


def load_holidays(config: Config) -> HolidayCalendar:
    """The built-in holiday calendar, extended by ``QAEX_HOLIDAYS`` (same format as holidays.toml)."""
    calendar = default_holiday_calendar()
    if not config.holidays:
        return calendar
    try:
        extra = HolidayCalendar.from_toml(config.holidays)
    except OSError as exc:
        raise ConfigError(f"QAEX_HOLIDAYS: cannot read {config.holidays}: {exc.strerror}") from None
    except (ValueError, msgspec.ValidationError) as exc:
        raise ConfigError(f"QAEX_HOLIDAYS: {config.holidays}: {exc}") from None
    return calendar.with_closures(extra.closures, years=extra.years)


def load_listing(config: Config, calendar: HolidayCalendar) -> ProductListing | None:
    """The product listing (``QAEX_PRODUCTS`` over the built-in templates), or None with
    ``QAEX_INSTRUMENTS`` (a fixed listing)."""
    if config.instruments:
        return None
    products = dict(PRODUCTS)
    if config.products:
        try:
            with open(config.products, "rb") as file:
                products = products_from_mapping(tomllib.load(file))
        except OSError as exc:
            raise ConfigError(f"QAEX_PRODUCTS: cannot read {config.products}: {exc.strerror}") from None
        except ValueError as exc:  # TOMLDecodeError is a ValueError
            raise ConfigError(f"QAEX_PRODUCTS: {config.products}: {exc}") from None
    return ProductListing(list(products.values()), calendar, config.keep_expired_days)
