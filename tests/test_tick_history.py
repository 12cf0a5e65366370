"""TqSdk DataDownloader tick CSVs (qaex.core.tick_file): parse, refuse, write back, build bars.

The header is checked against TqSdk's own DataDownloader (its ``_get_headers``), so a file TqSdk
writes is a file qaex reads. Properties (hypothesis): any ticks on the tick grid survive a write and a
parse unchanged (NaN included); bars built from them obey ``low <= open, close <= high``, sit on the
grid, hold every lot traded and open interest continuity.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tqsdk.tools.downloader import DataDownloader

from qaex.core.history import HistoryFileError
from qaex.core.kline import KlineSeries
from qaex.core.tick_file import (
    MAX_LINE,
    TickColumns,
    bars_from_ticks,
    is_tick_header,
    levels_of,
    parse_ticks,
    tick_fields,
    tick_header,
    ticks_to_csv,
    traded,
)

S = 1_000_000_000
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 China time, a Monday
RB = "SHFE.rb2601"
M = "DCE.m2601"


def tqsdk_header(symbol: str, dur_sec: int = 0) -> str:
    """The header TqSdk's DataDownloader writes for one symbol."""
    downloader = object.__new__(DataDownloader)
    downloader._symbol_list = [symbol]  # type: ignore[attr-defined]
    downloader._dur_nano = dur_sec * S  # type: ignore[attr-defined]
    return ",".join(downloader._get_headers())  # type: ignore[attr-defined]


def tick_values(
    levels: int, price: float, volume: int, oi: int = 1000, tick: float = 1.0
) -> dict[str, float]:
    values: dict[str, float] = {}
    for field, _ in tick_fields(levels):
        if field == "last_price" or field in ("highest", "lowest"):
            values[field] = price
        elif field.startswith("bid_price"):
            values[field] = price - tick * int(field[-1])
        elif field.startswith("ask_price"):
            values[field] = price + tick * int(field[-1])
        elif field == "volume":
            values[field] = volume
        elif field == "open_interest":
            values[field] = oi
        elif field == "amount":
            values[field] = price * volume * 10
        elif field == "average":
            values[field] = price + 0.25
        else:
            values[field] = 3  # book volumes
    return values


def sample(levels: int = 5) -> TickColumns:
    ticks = TickColumns(levels)
    for index, (price, volume) in enumerate([(3500.0, 10), (3501.0, 12), (3501.0, 12), (3499.0, 20)]):
        ticks.append(T0 + index * S // 2, tick_values(levels, price, volume, 1000 + index))
    return ticks


def test_the_header_is_tqsdks_for_five_and_one_level_exchanges() -> None:
    assert tick_header(RB, levels_of(RB)) == tqsdk_header(RB)
    assert tick_header(M, levels_of(M)) == tqsdk_header(M)
    assert levels_of(RB) == 5 and levels_of(M) == 1
    assert is_tick_header(tqsdk_header(RB)) and not is_tick_header(tqsdk_header(RB, 60))


@pytest.mark.parametrize("levels", [1, 5])
def test_round_trip_with_and_without_header(levels: int) -> None:
    ticks = sample(levels)
    text = ticks_to_csv(RB, ticks, 0)
    assert text.splitlines()[0] == tick_header(RB, levels)
    assert text.splitlines()[1].startswith("2025-11-24 09:00:00.000000000,1763946000000000000,3500.0,")
    symbol, parsed = parse_ticks(text, "rb.csv", price_tick=1.0)
    assert (symbol, parsed) == (RB, ticks)
    rows = ticks_to_csv(RB, ticks, 0, header=False)
    assert parse_ticks(rows, "appended.csv", symbol=RB)[1] == ticks
    with pytest.raises(HistoryFileError, match=r"appended\.csv:1: column header: no header line"):
        parse_ticks(rows, "appended.csv")
    if levels == 5:
        assert parsed.tick(0)["bid_price5"] == 3495.0
    else:  # DIFF ticks always have five levels: the ones the file lacks do not exist
        assert math.isnan(parsed.tick(0)["bid_price5"]) and parsed.tick(0)["ask_volume5"] == 0


def test_na_carries_the_value_before_and_nan_is_no_price() -> None:
    header = tick_header(M, 1)
    rows = [
        f"2025-11-24 09:00:00.000000000,{T0},3500,3500,3500,3500.5,10,350000,100,3499,2,3501,3",
        f"2025-11-24 09:00:00.500000000,{T0 + S // 2},#N/A,3500,3500,#N/A,#N/A,350000,#N/A,nan,0,3501,3",
    ]
    _, ticks = parse_ticks("\n".join([header, *rows]) + "\n", "m.csv", price_tick=1.0)
    second = ticks.tick(1)
    assert second["last_price"] == 3500 and second["volume"] == 10 and second["open_interest"] == 100
    assert second["average"] == 3500.5
    assert math.isnan(second["bid_price1"]) and second["bid_volume1"] == 0
    first_na = rows[0].replace(",3500,3500,3500,", ",#N/A,3500,3500,", 1)
    _, ticks = parse_ticks("\n".join([header, first_na]), "m.csv")
    assert math.isnan(ticks.tick(0)["last_price"])


GOOD = f"2025-11-24 09:00:00.000000000,{T0},3500,3500,3500,3500.5,10,350000,100,3499,2,3501,3"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [tick_header(M, 1), GOOD, GOOD.replace(str(T0), str(T0 - 1))],
            r"m\.csv:3: column datetime_nano: rows not sorted by time",
        ),
        (
            [tick_header(M, 1), GOOD.replace(",3499,", ",3499.5,")],
            r"m\.csv:2: column DCE\.m2601\.bid_price1: .*tick grid",
        ),
        (
            [tick_header(M, 1), GOOD.replace(",10,", ",ten,")],
            r"m\.csv:2: column DCE\.m2601\.volume: not a number",
        ),
        (
            [tick_header(M, 1), GOOD.replace(",10,", ",-10,")],
            r"m\.csv:2: column DCE\.m2601\.volume: not a count",
        ),
        (
            [tick_header(M, 1), GOOD.replace(",100,", ",1.5,")],
            r"column DCE\.m2601\.open_interest: not a count",
        ),
        (
            [tick_header(M, 1), GOOD.replace(",3500,", ",0,", 1)],
            r"m\.csv:2: column DCE\.m2601\.last_price: not a price",
        ),
        ([tick_header(M, 1), GOOD + ",7"], r"m\.csv:2: column -: 14 cells, expected 13"),
        (
            [tick_header(M, 1), GOOD.replace(str(T0), "soon")],
            r"m\.csv:2: column datetime_nano: not an integer",
        ),
        ([tick_header(M, 1), "x" * (MAX_LINE + 1)], r"m\.csv:2: column -: a line of more than"),
        ([tick_header(M, 1).replace(".average", ".avg")], r"m\.csv:1: column 6: header 'DCE\.m2601\.avg'"),
        (
            [tick_header(M, 1).replace("DCE.m2601.ask_volume1", "DCE.m2605.ask_volume1")],
            r"m\.csv:1: column 13:",
        ),
        ([tick_header(M, 3)], r"m\.csv:1: column header: not a tick file"),
        ([tick_header("DCE.m2605", 1)], r"m\.csv:1: column 3: file is for DCE\.m2605, not DCE\.m2601"),
    ],
)
def test_bad_tick_files_are_refused_with_file_line_and_column(lines: list[str], message: str) -> None:
    with pytest.raises(HistoryFileError, match=message):
        parse_ticks("\n".join(lines) + "\n", "m.csv", symbol=M, price_tick=1.0)


def test_one_minute_and_daily_bars_from_ticks() -> None:
    ticks = TickColumns(1)
    night = T0 - 12 * 3600 * S  # 21:00 the evening before: the same trading day
    rows = [
        (night, 3500.0, 10, 100),
        (night + 30 * S, 3504.0, 15, 103),  # same minute
        (night + 61 * S, 3498.0, 18, 101),  # next minute
        (T0, 3502.0, 30, 110),  # the day session: no flat bars for the night in between
        (T0 + S, math.nan, 30, 111),  # no last price: no bar from it (its open interest still counts)
        (T0 + 86400 * S, 3510.0, 4, 120),  # the next trading day: its running volume starts again
    ]
    for ns, price, volume, oi in rows:
        ticks.append(ns, tick_values(1, price, volume, oi) | {"last_price": price})
    minutes = list(bars_from_ticks(ticks, 60).bars())
    assert [bar["datetime"] for bar in minutes] == [night, night + 60 * S, T0, T0 + 86400 * S]
    assert minutes[0] | {} == {
        "datetime": night, "open": 3500.0, "high": 3504.0, "low": 3500.0, "close": 3504.0,
        "volume": 15, "open_oi": 100, "close_oi": 103,
    }  # fmt: skip
    assert (minutes[1]["volume"], minutes[1]["open_oi"], minutes[1]["close_oi"]) == (3, 103, 101)
    assert (minutes[2]["volume"], minutes[3]["volume"], minutes[3]["open_oi"]) == (12, 4, 111)
    days = list(bars_from_ticks(ticks, 86400).bars())
    day_series = KlineSeries("-", 86400 * S)
    assert [bar["datetime"] for bar in days] == [
        day_series.bar_start(T0),
        day_series.bar_start(T0 + 86400 * S),
    ]
    assert (days[0]["open"], days[0]["high"], days[0]["low"], days[0]["close"]) == (3500, 3504, 3498, 3502)
    assert [bar["volume"] for bar in days] == [30, 4]


@st.composite
def tick_runs(draw: st.DrawFn) -> TickColumns:
    levels = draw(st.sampled_from([1, 5]))
    count = draw(st.integers(1, 60))
    ticks = TickColumns(levels)
    ns, price, volume, oi = T0 - 12 * 3600 * S, 3500, 0, 1000
    for _ in range(count):
        ns += draw(st.sampled_from([0, S // 2, 20 * S, 3600 * S, 86400 * S]))
        price = max(1, price + draw(st.integers(-3, 3)))
        volume = volume + draw(st.integers(0, 9)) if draw(st.integers(0, 20)) else draw(st.integers(0, 5))
        oi = max(0, oi + draw(st.integers(-5, 5)))
        values = tick_values(levels, float(price), volume, oi)
        if draw(st.booleans()):
            values["bid_price1"] = math.nan  # an empty side
        if draw(st.integers(0, 9)) == 0:
            values["last_price"] = math.nan
        ticks.append(ns, values)
    return ticks


@settings(max_examples=60, deadline=None)
@given(tick_runs())
def test_any_ticks_round_trip_and_make_sound_bars(ticks: TickColumns) -> None:
    text = ticks_to_csv(RB, ticks, 0)
    assert parse_ticks(text, "rb.csv", price_tick=1.0) == (RB, ticks)
    lots = 0
    previous = 0
    for index in range(len(ticks)):
        volume = ticks.columns["volume"][index]
        if ticks.columns["last_price"][index] == ticks.columns["last_price"][index]:
            lots += traded(previous, volume)
        previous = volume
    for duration in (60, 86400):
        bars = bars_from_ticks(ticks, duration)
        assert sum(bars.volume) == lots
        assert list(bars.datetime) == sorted(set(bars.datetime))
        for index in range(len(bars)):
            bar = bars.bar(index)
            assert (
                bar["low"] <= min(bar["open"], bar["close"]) <= max(bar["open"], bar["close"]) <= bar["high"]
            )
            assert all(float(bar[key]).is_integer() for key in ("open", "high", "low", "close"))
            if index:
                assert bar["open_oi"] >= 0 and bars.close_oi[index - 1] >= 0
