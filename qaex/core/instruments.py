"""Contract specifications and the instrument registry.

A symbol is ``EXCHANGE.INSTRUMENT`` (``SHFE.cu2601``), as DIFF and TqSdk spell it. Prices travel as
floats at the edges; inside the book they are integer numbers of ticks, so matching never compares
floats. :meth:`Instrument.to_ticks` is the one place that converts, and it refuses prices that are not
a whole number of ticks.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec

from qaex.core import limits
from qaex.core.calendar.china_time import china_date_of

DAY_SESSION_METALS = [["09:00:00", "10:15:00"], ["10:30:00", "11:30:00"], ["13:30:00", "15:00:00"]]
DAY_SESSION_CFFEX = [["09:30:00", "11:30:00"], ["13:00:00", "15:00:00"]]


ClockTime = Annotated[str, msgspec.Meta(pattern=limits.whole(r"[0-9]{2}:[0-9]{2}:[0-9]{2}"))]
Session = Annotated[list[ClockTime], msgspec.Meta(min_length=2, max_length=2)]  # [start, end]
Sessions = Annotated[list[Session], msgspec.Meta(max_length=8)]


class TradingTime(msgspec.Struct, frozen=True):
    day: Sessions = msgspec.field(default_factory=lambda: [list(s) for s in DAY_SESSION_METALS])
    night: Sessions = msgspec.field(default_factory=list)


# Bounds of a contract's figures (qaex.core.limits has the reasons): checked wherever an Instrument is
# decoded — the admin route, instrument TOML files, the journal's upsert commands.
Tick = Annotated[float, msgspec.Meta(ge=10.0**-limits.MAX_PRICE_TICK_DIGITS, le=1e6)]
Multiplier = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
LimitRatio = Annotated[float, msgspec.Meta(gt=0, le=1)]
Fee = Annotated[float, msgspec.Meta(ge=0, le=1e6)]
Lots = Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_ORDER_VOLUME)]
Interest = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Code = Annotated[str, msgspec.Meta(pattern=limits.whole(r"[A-Za-z0-9_-]{1,32}"))]


class Instrument(msgspec.Struct, kw_only=True):
    """One futures contract. Money is CNY; rates are fractions of turnover (price × multiplier × lots)."""

    exchange_id: limits.ExchangeCode
    instrument_id: Code
    product_id: Code
    instrument_name: Annotated[str, msgspec.Meta(max_length=64)]
    price_tick: Tick
    volume_multiple: Multiplier
    margin_ratio_long: Ratio
    margin_ratio_short: Ratio
    # Commission: a fixed amount per lot plus a rate on turnover, separately for open, close, close-today.
    open_commission_per_lot: Fee = 0.0
    open_commission_rate: Ratio = 0.0
    close_commission_per_lot: Fee = 0.0
    close_commission_rate: Ratio = 0.0
    close_today_commission_per_lot: Fee = 0.0
    close_today_commission_rate: Ratio = 0.0
    pre_settlement: limits.PositivePrice
    pre_close: limits.Price = math.nan
    pre_open_interest: Interest = 0
    # Daily price limits as a fraction of pre_settlement; explicit limits override the ratio.
    limit_ratio: LimitRatio = 0.06
    upper_limit: limits.Price = math.nan
    lower_limit: limits.Price = math.nan
    min_limit_order_volume: Lots = 1
    max_limit_order_volume: Lots = 500
    min_market_order_volume: Lots = 1
    max_market_order_volume: Lots = 100
    trading_time: TradingTime = msgspec.field(default_factory=TradingTime)
    # epoch seconds, as TqSdk's quote shows it
    expire_datetime: Annotated[float, msgspec.Meta(ge=0, le=1e10)] = 0.0
    expired: bool = False
    suspended: bool = False
    settlement_rule: Literal["vwap", "last"] = "vwap"
    """How the daily settlement price is found: the volume-weighted average price of the day's trades
    (the exchanges' rule; the previous settlement when nothing traded), or the last price."""
    settlement_window: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 0
    """With ``vwap``: average only the trades of this many seconds up to the day's last trade
    (CFFEX: 3600, the last hour); 0: the whole day."""

    def __post_init__(self) -> None:
        if not self.price_tick > 0:
            raise ValueError(f"{self.exchange_id}.{self.instrument_id}: price_tick must be > 0")
        if self.volume_multiple <= 0:
            raise ValueError(f"{self.exchange_id}.{self.instrument_id}: volume_multiple must be > 0")
        if math.isnan(self.pre_close):
            self.pre_close = self.pre_settlement
        if math.isnan(self.upper_limit) or math.isnan(self.lower_limit):
            self.reset_limits()

    # -- identity ---------------------------------------------------------------------------------
    @property
    def symbol(self) -> str:
        return f"{self.exchange_id}.{self.instrument_id}"

    @property
    def product_key(self) -> str:
        """``EXCHANGE.product`` (``SHFE.rb``): the product this contract belongs to."""
        return f"{self.exchange_id}.{self.product_id}"

    @property
    def last_trading_day(self) -> str:
        """``YYYYMMDD`` of the last trading day (the China date of ``expire_datetime``); "" if none."""
        if not self.expire_datetime:
            return ""
        return _china_day(self.expire_datetime)

    @property
    def price_decs(self) -> int:
        """Number of decimals a price of this contract needs (0.02 -> 2, 10 -> 0)."""
        return _decimals(self.price_tick)

    @property
    def separates_today(self) -> bool:
        """SHFE and INE keep today's and yesterday's positions apart (CLOSE vs CLOSETODAY)."""
        return self.exchange_id in ("SHFE", "INE")

    # -- prices -----------------------------------------------------------------------------------
    def to_ticks(self, price: float) -> int | None:
        """The price as a whole number of ticks, or None if it is not on the tick grid."""
        ticks = round(price / self.price_tick)
        if abs(ticks * self.price_tick - price) > 1e-6 * self.price_tick:
            return None
        return ticks

    def from_ticks(self, ticks: int) -> float:
        return _price_of(ticks, self.price_tick)

    @property
    def upper_limit_ticks(self) -> int:
        return round(self.upper_limit / self.price_tick)

    @property
    def lower_limit_ticks(self) -> int:
        return round(self.lower_limit / self.price_tick)

    def reset_limits(self) -> None:
        """Recompute the daily limits from pre_settlement and limit_ratio, kept on the tick grid."""
        up = math.floor(self.pre_settlement * (1 + self.limit_ratio) / self.price_tick + 1e-9)
        down = math.ceil(self.pre_settlement * (1 - self.limit_ratio) / self.price_tick - 1e-9)
        self.upper_limit = self.from_ticks(up)
        self.lower_limit = self.from_ticks(max(down, 1))

    # -- money ------------------------------------------------------------------------------------
    def margin_per_lot(self, price: float, long: bool) -> float:
        ratio = self.margin_ratio_long if long else self.margin_ratio_short
        return price * self.volume_multiple * ratio

    def commission(self, price: float, volume: int, offset: str) -> float:
        """Commission for `volume` lots at `price`; offset is OPEN, CLOSE or CLOSETODAY."""
        if offset == "OPEN":
            per_lot, rate = self.open_commission_per_lot, self.open_commission_rate
        elif offset == "CLOSETODAY":
            per_lot, rate = self.close_today_commission_per_lot, self.close_today_commission_rate
        else:
            per_lot, rate = self.close_commission_per_lot, self.close_commission_rate
        return volume * (per_lot + rate * price * self.volume_multiple)


@functools.lru_cache(maxsize=4096)
def _china_day(epoch_seconds: float) -> str:
    return china_date_of(int(epoch_seconds * 1e9)).strftime("%Y%m%d")


@functools.lru_cache(maxsize=1 << 16, typed=True)
def _price_of(ticks: int, tick: float) -> float:
    """Cached: every fill and every limit order converts a price from ticks, and rounding a float to
    a number of decimals is several times slower than a cache hit. A pure function of its
    arguments, so the cache changes no result (typed, so an int tick never answers for a float)."""
    return round(ticks * tick, _decimals(tick))


@functools.lru_cache(maxsize=256)
def _decimals(tick: float) -> int:
    """Cached: every fill converts a price from ticks; formatting the tick each time showed in profiles."""
    text = f"{tick:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _night(end: str) -> list[list[str]]:
    return [["21:00:00", end]]


def default_instruments() -> list[Instrument]:
    """Built-in contracts with realistic ticks, multipliers, margins, fees and late-2025 prices."""
    metals = [list(s) for s in DAY_SESSION_METALS]
    return [
        Instrument(
            exchange_id="SHFE",
            instrument_id="cu2601",
            product_id="cu",
            instrument_name="沪铜2601",
            price_tick=10.0,
            volume_multiple=5,
            margin_ratio_long=0.10,
            margin_ratio_short=0.10,
            open_commission_rate=0.00005,
            close_commission_rate=0.00005,
            close_today_commission_rate=0.0001,
            pre_settlement=86000.0,
            pre_open_interest=180000,
            limit_ratio=0.07,
            trading_time=TradingTime(day=metals, night=_night("25:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="SHFE",
            instrument_id="au2602",
            product_id="au",
            instrument_name="沪金2602",
            price_tick=0.02,
            volume_multiple=1000,
            margin_ratio_long=0.14,
            margin_ratio_short=0.14,
            open_commission_per_lot=10.0,
            close_commission_per_lot=10.0,
            close_today_commission_per_lot=0.0,
            pre_settlement=950.0,
            pre_open_interest=210000,
            limit_ratio=0.10,
            trading_time=TradingTime(day=metals, night=_night("26:30:00")),
            expire_datetime=1771225200.0,
        ),
        Instrument(
            exchange_id="SHFE",
            instrument_id="rb2601",
            product_id="rb",
            instrument_name="螺纹钢2601",
            price_tick=1.0,
            volume_multiple=10,
            margin_ratio_long=0.07,
            margin_ratio_short=0.07,
            open_commission_rate=0.0001,
            close_commission_rate=0.0001,
            close_today_commission_rate=0.0001,
            pre_settlement=3100.0,
            pre_open_interest=1900000,
            limit_ratio=0.06,
            max_limit_order_volume=1000,
            trading_time=TradingTime(day=metals, night=_night("23:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="INE",
            instrument_id="sc2601",
            product_id="sc",
            instrument_name="原油2601",
            price_tick=0.1,
            volume_multiple=1000,
            margin_ratio_long=0.12,
            margin_ratio_short=0.12,
            open_commission_per_lot=20.0,
            close_commission_per_lot=20.0,
            close_today_commission_per_lot=0.0,
            pre_settlement=480.0,
            pre_open_interest=30000,
            limit_ratio=0.08,
            trading_time=TradingTime(day=metals, night=_night("26:30:00")),
            expire_datetime=1765868400.0,
        ),
        Instrument(
            exchange_id="DCE",
            instrument_id="m2601",
            product_id="m",
            instrument_name="豆粕2601",
            price_tick=1.0,
            volume_multiple=10,
            margin_ratio_long=0.07,
            margin_ratio_short=0.07,
            open_commission_per_lot=1.5,
            close_commission_per_lot=1.5,
            close_today_commission_per_lot=1.5,
            pre_settlement=3000.0,
            pre_open_interest=1500000,
            limit_ratio=0.06,
            max_limit_order_volume=1000,
            trading_time=TradingTime(day=metals, night=_night("23:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="DCE",
            instrument_id="i2601",
            product_id="i",
            instrument_name="铁矿石2601",
            price_tick=0.5,
            volume_multiple=100,
            margin_ratio_long=0.11,
            margin_ratio_short=0.11,
            open_commission_rate=0.0001,
            close_commission_rate=0.0001,
            close_today_commission_rate=0.0001,
            pre_settlement=780.0,
            pre_open_interest=600000,
            limit_ratio=0.08,
            max_limit_order_volume=1000,
            trading_time=TradingTime(day=metals, night=_night("23:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="CZCE",
            instrument_id="SR601",
            product_id="SR",
            instrument_name="白糖601",
            price_tick=1.0,
            volume_multiple=10,
            margin_ratio_long=0.07,
            margin_ratio_short=0.07,
            open_commission_per_lot=3.0,
            close_commission_per_lot=3.0,
            close_today_commission_per_lot=0.0,
            pre_settlement=5500.0,
            pre_open_interest=400000,
            limit_ratio=0.06,
            max_limit_order_volume=1000,
            trading_time=TradingTime(day=metals, night=_night("23:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="CZCE",
            instrument_id="TA601",
            product_id="TA",
            instrument_name="PTA601",
            price_tick=2.0,
            volume_multiple=5,
            margin_ratio_long=0.07,
            margin_ratio_short=0.07,
            open_commission_per_lot=3.0,
            close_commission_per_lot=3.0,
            close_today_commission_per_lot=0.0,
            pre_settlement=4700.0,
            pre_open_interest=900000,
            limit_ratio=0.06,
            max_limit_order_volume=1000,
            trading_time=TradingTime(day=metals, night=_night("23:00:00")),
            expire_datetime=1768460400.0,
        ),
        Instrument(
            exchange_id="CFFEX",
            instrument_id="IF2512",
            product_id="IF",
            instrument_name="沪深300股指2512",
            price_tick=0.2,
            volume_multiple=300,
            margin_ratio_long=0.12,
            margin_ratio_short=0.12,
            open_commission_rate=0.000023,
            close_commission_rate=0.000023,
            close_today_commission_rate=0.00023,
            pre_settlement=4500.0,
            pre_open_interest=250000,
            limit_ratio=0.10,
            max_limit_order_volume=20,
            max_market_order_volume=10,
            trading_time=TradingTime(day=[list(s) for s in DAY_SESSION_CFFEX], night=[]),
            expire_datetime=1766127600.0,
        ),
    ]


class InstrumentRegistry(Mapping[str, Instrument]):
    """All contracts the exchange lists, by symbol."""

    def __init__(self, instruments: list[Instrument] | None = None) -> None:
        self._by_symbol: dict[str, Instrument] = {}
        for instrument in default_instruments() if instruments is None else instruments:
            self.add(instrument)

    def add(self, instrument: Instrument) -> None:
        self._by_symbol[instrument.symbol] = instrument

    def remove(self, symbol: str) -> None:
        del self._by_symbol[symbol]

    def __getitem__(self, symbol: str) -> Instrument:
        return self._by_symbol[symbol]

    # Mapping's generic get/__contains__ go through __getitem__ and an exception; these are on the
    # hot path (every order and every mark looks its instrument up).
    def get(self, symbol: str, default: Instrument | None = None) -> Instrument | None:  # type: ignore[override]
        return self._by_symbol.get(symbol, default)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_symbol)

    def view(self) -> Mapping[str, Instrument]:
        """A live read-only view of the registry: C-level lookups for the engine's hot path (a
        registry lookup is a Python call), and it follows every later :meth:`add`."""
        return MappingProxyType(self._by_symbol)

    def __len__(self) -> int:
        return len(self._by_symbol)

    @classmethod
    def from_toml(cls, path: str | Path, *, include_defaults: bool | None = None) -> InstrumentRegistry:
        """Load ``[[instrument]]`` tables from a TOML file.

        The file may set ``include_defaults = true`` at top level to keep the built-in contracts
        and add or override some of them; otherwise only the file's contracts are listed.
        """
        with open(path, "rb") as f:
            document: dict[str, Any] = tomllib.load(f)
        return cls.from_mapping(document, include_defaults=include_defaults)

    @classmethod
    def from_mapping(
        cls, document: dict[str, Any], *, include_defaults: bool | None = None
    ) -> InstrumentRegistry:
        keep = bool(document.get("include_defaults", False)) if include_defaults is None else include_defaults
        registry = cls(None if keep else [])
        for table in document.get("instrument", []):
            try:
                registry.add(msgspec.convert(table, Instrument, strict=False))
            except msgspec.ValidationError as exc:
                symbol = f"{table.get('exchange_id')}.{table.get('instrument_id')}"
                raise ValueError(f"{symbol}: {exc}") from None
        if not registry:
            raise ValueError("instrument file lists no [[instrument]]")
        return registry
