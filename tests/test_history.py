"""The synthetic history generator (qaex.core.history), its CSV format, and K-line series with history.

Properties (hypothesis): every bar on the tick grid, inside its day's limits, ``high >= max(open,
close)``, ``low <= min(open, close)``, volume >= 0; minute bars only inside the product's sessions; the
last day settles (VWAP of its minute bars, to the tick) at the anchor and closes at ``pre_close``; open
interest ends at ``pre_open_interest``; deterministic per seed; months of a product move together.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qaex.core.calendar import default_holiday_calendar, is_open, is_trading_day, trading_day_of
from qaex.core.history import (
    BarColumns,
    ContractHistory,
    HistoryFileError,
    HistorySpec,
    generate,
    parse_csv,
    to_csv,
)
from qaex.core.instruments import TradingTime
from qaex.core.kline import KlineSeries
from qaex.core.market import MarketState
from qaex.core.products import PRODUCTS

CALENDAR = default_holiday_calendar()
TEMPLATES = sorted(PRODUCTS.values(), key=lambda p: p.key)
S = 1_000_000_000
MINUTE = 60_000_000_000
DAY = 86_400_000_000_000


def spec_for(
    template,
    *,
    symbol: str | None = None,
    last_day: dt.date = dt.date(2026, 12, 1),
    minute_bars: int = 1_500,
    days: int = 40,
    price_factor: float = 1.0,
    months_out: int = 0,
    close_ticks: int = 0,
) -> HistorySpec:
    tick = template.price_tick
    settlement = round(template.reference_price * price_factor / tick) * tick
    return HistorySpec(
        symbol=symbol or f"{template.key}2701",
        product=template.key,
        price_tick=tick,
        limit_ratio=template.limit_ratio,
        day_sessions=tuple((s, e) for s, e in template.trading_time.day),
        night_sessions=tuple((s, e) for s, e in template.trading_time.night),
        settlement=settlement,
        close=settlement + close_ticks * tick,
        open_interest=template.reference_open_interest,
        last_day=last_day,
        minute_bars=minute_bars,
        days=days,
        months_out=months_out,
    )


def on_grid(price: float, tick: float) -> bool:
    return abs(price / tick - round(price / tick)) < 1e-6


trading_days = st.dates(dt.date(2026, 1, 5), dt.date(2026, 12, 31)).filter(
    lambda day: is_trading_day(day, CALENDAR)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(TEMPLATES),
    seed=st.integers(0, 2**32),
    last_day=trading_days,
    minute_bars=st.integers(50, 2_500),
    days=st.integers(3, 60),
    price_factor=st.floats(0.5, 2.0),
    close_ticks=st.integers(-5, 5),
)
def test_generated_bars_obey_the_rules(
    template, seed, last_day, minute_bars, days, price_factor, close_ticks
) -> None:
    spec = spec_for(
        template,
        last_day=last_day,
        minute_bars=minute_bars,
        days=days,
        price_factor=price_factor,
        close_ticks=close_ticks,
    )
    history = generate(spec, seed, CALENDAR)
    tick = spec.price_tick
    minutes, daily = history.minutes, history.days
    assert len(daily) == days and 0 < len(minutes) <= minute_bars
    if trading_day_of(minutes.datetime[0], CALENDAR) != trading_day_of(daily.datetime[0] + 12 * 3600 * 10**9):
        assert len(minutes) == minute_bars  # fewer only when every day has its minutes
    for bars in (minutes, daily):
        for bar in bars.bars():
            for name in ("open", "high", "low", "close"):
                assert on_grid(bar[name], tick), bar
                assert bar[name] > 0
            assert bar["high"] >= max(bar["open"], bar["close"])
            assert bar["low"] <= min(bar["open"], bar["close"])
            assert bar["volume"] >= 0 and bar["open_oi"] >= 0 and bar["close_oi"] >= 0
    # Days: in order, trading days, inside the limits of the settlement before.
    assert list(daily.datetime) == sorted(set(daily.datetime))
    for index, bar in enumerate(daily.bars()):
        lower, upper = history.limits[index]
        assert lower - 1e-9 <= bar["low"] and bar["high"] <= upper + 1e-9, (index, bar, lower, upper)
        if index:
            settle = history.settlements[index - 1]
            assert lower >= settle * (1 - spec.limit_ratio) - 1e-6
            assert upper <= settle * (1 + spec.limit_ratio) + 1e-6
    # Minutes: strictly increasing, inside the sessions, inside their day's limits.
    trading_time = TradingTime(
        day=[list(s) for s in spec.day_sessions], night=[list(s) for s in spec.night_sessions]
    )
    day_index = {ns: i for i, ns in enumerate(daily.datetime)}
    assert all(a < b for a, b in zip(minutes.datetime, minutes.datetime[1:], strict=False))
    for bar in minutes.bars():
        assert is_open(trading_time, bar["datetime"], CALENDAR), bar
        day = dt.datetime.strptime(trading_day_of(bar["datetime"], CALENDAR), "%Y%m%d")
        index = day_index[int((day - dt.datetime(1970, 1, 1)).total_seconds() * 1e9) - 8 * 3600 * 10**9]
        lower, upper = history.limits[index]
        assert lower - 1e-9 <= bar["low"] and bar["high"] <= upper + 1e-9
    # The anchor: the last day's settlement (VWAP of its minute bars), close, open interest.
    last_day_ns = daily.datetime[-1]
    last = [
        b for b in minutes.bars() if trading_day_of(b["datetime"], CALENDAR) == last_day.strftime("%Y%m%d")
    ]
    volume = sum(b["volume"] for b in last)
    full_day = trading_day_of(minutes.datetime[0], CALENDAR) < last_day.strftime("%Y%m%d")
    if volume and full_day:
        vwap = sum(b["close"] * b["volume"] for b in last) / volume
        if full_day:
            assert round(vwap / tick) * tick == pytest.approx(spec.settlement), (vwap, spec.settlement)
    assert history.settlements[-1] == pytest.approx(spec.settlement)
    assert minutes.close[-1] == pytest.approx(spec.close) == daily.close[-1]
    assert daily.close_oi[-1] == spec.open_interest == minutes.close_oi[-1]
    assert last_day_ns == daily.datetime[-1]


def test_deterministic_per_seed() -> None:
    spec = spec_for(PRODUCTS["rb"])
    one, two = generate(spec, 5, CALENDAR), generate(spec, 5, CALENDAR)
    assert one.minutes == two.minutes and one.days == two.days
    other = generate(spec, 6, CALENDAR)
    assert other.minutes != one.minutes
    # The anchor holds for every seed; only the path differs.
    assert other.minutes.close[-1] == one.minutes.close[-1]


def test_main_contract_has_ten_thousand_minutes_and_a_year_of_days() -> None:
    spec = spec_for(PRODUCTS["cu"], minute_bars=10_000, days=250)
    history = generate(spec, 1, CALENDAR)
    assert len(history.minutes) == 10_000 and len(history.days) == 250
    # cu trades 21:00-01:00 and the day sessions: ~465 minutes a day, ~22 trading days.
    first_day = trading_day_of(history.minutes.datetime[0], CALENDAR)
    assert "20261030" <= first_day <= "20261103"


def test_months_of_a_product_move_together() -> None:
    template = PRODUCTS["rb"]
    near = generate(spec_for(template, symbol="SHFE.rb2701", days=120), 3, CALENDAR)
    far = generate(spec_for(template, symbol="SHFE.rb2705", days=120, months_out=4), 3, CALENDAR)
    other = generate(spec_for(PRODUCTS["m"], days=120), 3, CALENDAR)

    def returns(days: BarColumns) -> list[float]:
        return [math.log(b / a) for a, b in zip(days.close, days.close[1:], strict=False)]

    assert statistics.correlation(returns(near.days), returns(far.days)) > 0.9
    assert abs(statistics.correlation(returns(near.days), returns(other.days))) < 0.5
    spreads = [f / n - 1 for n, f in zip(near.days.close, far.days.close, strict=True)]
    assert max(spreads) - min(spreads) < 0.05  # a sane spread: a few percent at most


def test_u_shaped_volume() -> None:
    history = generate(spec_for(PRODUCTS["rb"], minute_bars=10_000, days=60), 2, CALENDAR)
    by_day: dict[str, list[int]] = {}
    for ns, volume in zip(history.minutes.datetime, history.minutes.volume, strict=True):
        by_day.setdefault(trading_day_of(ns, CALENDAR), []).append(volume)
    edges, middle = [], []
    for volumes in list(by_day.values())[1:]:
        tenth = len(volumes) // 10
        edges.extend(volumes[:tenth] + volumes[-tenth:])
        middle.extend(volumes[4 * tenth : 6 * tenth])
    assert statistics.mean(edges) > 2 * statistics.mean(middle)


def test_overnight_gaps_open_each_day_away_from_the_close_before() -> None:
    history = generate(spec_for(PRODUCTS["cu"], days=120), 4, CALENDAR)
    gaps = [o != c for c, o in zip(history.days.close, history.days.open[1:], strict=False)]
    assert sum(gaps) > 0.8 * len(gaps)


# -- CSV -----------------------------------------------------------------------------------------
def test_csv_round_trip() -> None:
    history = generate(spec_for(PRODUCTS["au"]), 9, CALENDAR)
    text = to_csv("SHFE.au2702", history.minutes, 2)
    symbol, bars = parse_csv(text, "au.csv", price_tick=0.02)
    assert symbol == "SHFE.au2702" and bars == history.minutes
    assert text.splitlines()[1].startswith(("20", "19")) and ".000000000," in text.splitlines()[1]
    # Header-less (appended) rows need the symbol.
    body = "\n".join(text.splitlines()[1:])
    _, again = parse_csv(body, "au-appended.csv", symbol="SHFE.au2702")
    assert again == bars
    with pytest.raises(HistoryFileError, match="no header line"):
        parse_csv(body, "au-appended.csv")


HEADER = (
    "datetime,datetime_nano,SHFE.rb2701.open,SHFE.rb2701.high,SHFE.rb2701.low,SHFE.rb2701.close,"
    "SHFE.rb2701.volume,SHFE.rb2701.open_oi,SHFE.rb2701.close_oi"
)
ROW = "2026-12-01 09:00:00.000000000,{ns},{o},{h},{l},{c},10,100,101"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [ROW.format(ns=2, o=1, h=2, l=1, c=2), ROW.format(ns=1, o=1, h=2, l=1, c=2)],
            r"bad\.csv:3: column datetime_nano: rows not sorted",
        ),
        (
            [ROW.format(ns=1, o=3, h=2, l=1, c=2)],
            r"bad\.csv:2: column SHFE\.rb2701\.high: high 2\.0 below open/close",
        ),
        ([ROW.format(ns=1, o=1, h=2, l=2, c=2)], r"bad\.csv:2: column SHFE\.rb2701\.low: low 2\.0 above"),
        (
            [ROW.format(ns=1, o=1.5, h=2, l=1, c=2)],
            r"bad\.csv:2: column SHFE\.rb2701\.open: 1\.5 is off the tick grid",
        ),
        ([ROW.format(ns="x", o=1, h=2, l=1, c=2)], r"bad\.csv:2: column datetime_nano: not an integer"),
    ],
)
def test_bad_csv_files_are_refused_with_file_line_and_column(rows: list[str], message: str) -> None:
    with pytest.raises(HistoryFileError, match=message):
        parse_csv("\n".join([HEADER, *rows]), "bad.csv", price_tick=1.0)


def test_na_cells_carry_the_previous_close() -> None:
    text = "\n".join(
        [
            HEADER,
            ROW.format(ns=1, o=1, h=2, l=1, c=2),
            ROW.format(ns=2, o="#N/A", h="#N/A", l="#N/A", c="#N/A"),
        ]
    )
    _, bars = parse_csv(text, "na.csv")
    assert bars.bar(1)["open"] == bars.bar(1)["close"] == 2.0


# -- K-line series with history --------------------------------------------------------------------
def columns(starts: list[int], price: float = 100.0) -> BarColumns:
    bars = BarColumns()
    for i, start in enumerate(starts):
        bars.append(start, price + i, price + i + 1, price + i - 1, price + i, 5, 10, 10)
    return bars


BASE = 1_796_000_000_000_000_000 // MINUTE * MINUTE


def test_live_bars_continue_where_history_ends_with_no_gap_or_overlap() -> None:
    series = KlineSeries("X.a1", MINUTE, max_len=100)
    history = columns([BASE + i * MINUTE for i in range(10)])
    assert series.attach_history(history) == 10
    assert series.resuming and series.last_id == 9 and series.first_id == 0
    later = BASE + 3 * 3600 * 10**9  # the server starts three hours after history's last bar
    series.on_time(later)
    assert series.last_id == 10  # one live bar at the clock, not 180 flat ones
    assert series.get(10)["datetime"] == later and series.get(10)["close"] == history.close[-1]
    series.on_trade(200.0, 1, later + MINUTE + 5, 11)
    assert series.last_id == 11
    window = series.window(0, 11)
    assert [int(k) for k in window] == list(range(12))
    datetimes = [bar["datetime"] for bar in window.values()]
    assert datetimes == sorted(set(datetimes))
    assert series.lower_bound(BASE + 5 * MINUTE) == 5 and series.find(later) == 10
    patch = series.take_patch()
    assert patch is not None and patch["klines"]["X.a1"][str(MINUTE)]["last_id"] == 11


def test_history_attached_after_live_bars_goes_before_them() -> None:
    series = KlineSeries("X.a1", MINUTE, max_len=12)
    start = BASE + 100 * MINUTE
    series.on_trade(50.0, 1, start, 5)
    series.on_trade(51.0, 1, start + MINUTE, 5)
    # History overlapping the first live bar is cut there; max_len keeps the newest.
    kept = series.attach_history(columns([BASE + (90 + i) * MINUTE for i in range(20)]))
    assert kept == 10 and series.first_id == 0 and series.last_id == 11
    assert series.get(9)["datetime"] == BASE + 99 * MINUTE
    assert series.get(10)["close"] == 50.0 and series.get(11)["close"] == 51.0
    assert not series.resuming
    series.on_trade(52.0, 1, start + 2 * MINUTE, 5)  # the oldest history bar is dropped
    assert series.first_id == 1 and series.last_id == 12 and len(series) == 12


def test_longer_bars_are_built_from_history_without_flat_session_breaks() -> None:
    minutes = KlineSeries("X.a1", MINUTE)
    morning = [BASE + i * MINUTE for i in range(30)]
    afternoon = [BASE + 4 * 3600 * 10**9 + i * MINUTE for i in range(30)]
    minutes.attach_history(columns(morning + afternoon))
    five = KlineSeries("X.a1", 5 * MINUTE)
    five.fill_from(minutes.window(minutes.first_id, minutes.last_id).values(), resuming=minutes.resuming)
    assert len(five) == 12 + (1 if BASE % (5 * MINUTE) else 0) or len(five) in (12, 13, 14)
    assert five.resuming
    total = sum(bar["volume"] for bar in five.window(0, 100).values())
    assert total == 60 * 5


@settings(max_examples=60, deadline=None)
@given(
    history_len=st.integers(0, 40),
    live_before=st.lists(st.integers(0, 3), max_size=6),  # minutes between live events before the attach
    live_after=st.lists(st.tuples(st.booleans(), st.integers(0, 200)), max_size=10),
    max_len=st.integers(5, 60),
    start_after=st.integers(1, 5000),  # minutes from history's end to the server's start
)
def test_history_then_live_bars_are_contiguous_and_ordered(
    history_len, live_before, live_after, max_len, start_after
) -> None:
    series = KlineSeries("X.a1", MINUTE, max_len=max_len)
    now = BASE + (history_len + start_after) * MINUTE
    for step in live_before:
        now += step * MINUTE
        series.on_trade(50.0, 1, now, 5)
    series.attach_history(columns([BASE + i * MINUTE for i in range(history_len)]))
    for is_trade, seconds in live_after:
        now += seconds * S
        if is_trade:
            series.on_trade(60.0, 1, now, 6)
        else:
            series.on_time(now)
    bars = series.window(series.first_id, series.last_id)
    assert [int(k) for k in bars] == list(range(series.first_id, series.last_id + 1))
    assert len(bars) <= max_len
    datetimes = [bar["datetime"] for bar in bars.values()]
    assert datetimes == sorted(set(datetimes))
    for bar in bars.values():
        assert bar["low"] <= min(bar["open"], bar["close"]) and bar["high"] >= max(bar["open"], bar["close"])
    # No flat filler between history and the first live bar: at most one bar per live event (plus
    # the gap bars between live events), never the minutes in between.
    history_kept = sum(1 for d in datetimes if d < BASE + history_len * MINUTE)
    live = len(datetimes) - history_kept
    assert live <= 1 + sum(live_before) + sum(seconds // 60 + 1 for _, seconds in live_after)


def market_with(symbol: str = "SHFE.cu2601") -> tuple[MarketState, ContractHistory]:
    from qaex.core.instruments import InstrumentRegistry

    registry = InstrumentRegistry()
    state = MarketState(registry, with_history=True)
    state.list_instrument(symbol, BASE + 10 * DAY)
    instrument = registry[symbol]
    spec = HistorySpec(
        symbol=symbol,
        product="SHFE.cu",
        price_tick=instrument.price_tick,
        limit_ratio=instrument.limit_ratio,
        day_sessions=(("09:00:00", "10:15:00"), ("10:30:00", "11:30:00"), ("13:30:00", "15:00:00")),
        night_sessions=(("21:00:00", "01:00:00"),),
        settlement=instrument.pre_settlement,
        close=instrument.pre_close,
        open_interest=instrument.pre_open_interest,
        last_day=dt.date(2026, 11, 30),
        minute_bars=3_000,
        days=100,
    )
    return state, generate(spec, 1, CALENDAR)


def test_a_quote_listed_with_history_is_complete_at_once() -> None:
    state, _ = market_with()
    quote = state.full_quote("SHFE.cu2601")["quotes"]["SHFE.cu2601"]
    assert quote["last_price"] == quote["pre_close"] == quote["pre_settlement"]
    assert state.needs_history("SHFE.cu2601") and state.pending_history() == ["SHFE.cu2601"]


def test_charts_see_history_and_scroll_back_into_it() -> None:
    state, history = market_with()
    state.attach_history("SHFE.cu2601", history)
    assert not state.needs_history("SHFE.cu2601")
    state.advance_time(BASE + 10 * DAY)  # the clock at start: one live bar after history, no filler
    minutes = state.klines[("SHFE.cu2601", MINUTE)]
    assert minutes.last_id == 3_000 and minutes.get(3_000)["datetime"] == BASE + 10 * DAY
    chart = state.open_chart(
        {
            "aid": "set_chart",
            "chart_id": "c",
            "ins_list": "SHFE.cu2601",
            "duration": MINUTE,
            "view_width": 200,
        },
        BASE + 10 * DAY,
    )
    patch = state.chart_patch(chart)
    body = patch["klines"]["SHFE.cu2601"][str(MINUTE)]
    assert body["last_id"] == 3_000 and len(body["data"]) == 200
    assert patch["charts"]["c"]["left_id"] == 2_801
    # focus_datetime / left_kline_id scroll into history.
    focus = history.minutes.datetime[1_000]
    back = state.open_chart(
        {
            "aid": "set_chart",
            "chart_id": "b",
            "ins_list": "SHFE.cu2601",
            "duration": MINUTE,
            "view_width": 50,
            "focus_datetime": focus,
            "focus_position": 0,
        },
        BASE + 10 * DAY,
    )
    answer = state.chart_patch(back)
    assert answer["charts"]["b"]["left_id"] == 1_000
    assert answer["klines"]["SHFE.cu2601"][str(MINUTE)]["data"]["1000"]["datetime"] == focus
    # A longer duration is built from history: 15-minute bars, none flat across the night.
    quarter = state.kline_history("SHFE.cu2601", 15 * MINUTE, BASE + 10 * DAY)
    bars = list(quarter.window(quarter.first_id, quarter.last_id).values())
    assert sum(b["volume"] for b in bars) == sum(history.minutes.volume)
    assert sum(1 for b in bars if b["volume"] == 0) <= 1  # only the live bar at the clock
    days = state.kline_history("SHFE.cu2601", 86400 * S, BASE + 10 * DAY)
    assert days.last_id >= 99
