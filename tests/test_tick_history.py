"""TqSdk DataDownloader tick CSVs (qaex.core.tick_file): parse, refuse, write back, build bars.

The header is checked against TqSdk's own DataDownloader (its ``_get_headers``), so a file TqSdk
writes is a file qaex reads. Properties (hypothesis): any ticks on the tick grid survive a write and a
parse unchanged (NaN included); bars built from them obey ``low <= open, close <= high``, sit on the
grid, hold every lot traded and open interest continuity.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tqsdk.tools.downloader import DataDownloader

from qaex.core import tick_file
from qaex.core.history import HistoryFileError, to_csv
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
from qaex.exchange import history as history_store
from qaex.exchange.history import HistoryStore, ImportRefused, import_history

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


def test_a_file_past_the_row_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tick_file, "MAX_ROWS", 3)
    text = ticks_to_csv(RB, sample(), 0)  # four rows
    with pytest.raises(HistoryFileError, match=r"rb\.csv:5: column -: more than 3 rows"):
        parse_ticks(text, "rb.csv")
    assert len(parse_ticks(ticks_to_csv(RB, sample().slice(0, 3), 0), "rb.csv")[1]) == 3


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


# -- import: a tick file is the contract's whole history; other durations are kept as their own file ---
LISTED = {RB: 1.0, M: 1.0}
DECS = {RB: 0, M: 0}


def day_of_ticks(count: int = 400) -> TickColumns:
    """Ticks every 2 s from 09:00 (a run of 13 minutes), the price stepping by a tick or two."""
    ticks = TickColumns(5)
    for index in range(count):
        price = 3500.0 + (index % 17) - (index % 5)
        ticks.append(T0 + index * 2 * S, tick_values(5, price, 10 + index * 3, 1000 + index % 7))
    return ticks


def test_a_tick_file_replaces_the_contracts_history_wholesale(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history", seed=1)
    for seconds in (60, 86400, 300):  # an earlier history, one duration of its own
        store.path(RB, seconds).write_text("old\n")
    ticks = day_of_ticks()
    source = tmp_path / "rb-ticks.csv"
    source.write_text(ticks_to_csv(RB, ticks, 0))
    done = import_history(store, [source], symbol=None, duration=None, ticks=LISTED, price_decs=DECS)
    minutes, days = bars_from_ticks(ticks, 60), bars_from_ticks(ticks, 86400)
    assert done == [(RB, 0, 400), (RB, 60, len(minutes)), (RB, 86400, 1)]
    assert sorted(store.kept(RB)) == [0, 60, 86400]  # the 300 s bars went with the old history
    assert store.path(RB, 0).read_text() == source.read_text()
    loaded = store.load(RB)
    assert loaded is not None and loaded.ticks == ticks
    assert (loaded.minutes, loaded.days, loaded.others) == (minutes, days, {})
    assert len(minutes) == 14 and sum(minutes.volume) == ticks.columns["volume"][-1]


@pytest.mark.parametrize("chunk", [7, 300, 1 << 16])
@pytest.mark.parametrize("keep", [0, 1, 57, 399, 400, 5000])
def test_a_load_reads_only_the_last_ticks_the_series_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, keep: int
) -> None:
    monkeypatch.setattr(history_store, "TAIL_CHUNK", chunk)  # chunk boundaries inside rows
    store = HistoryStore(tmp_path / "history", seed=1)
    ticks = day_of_ticks()
    source = tmp_path / "rb-ticks.csv"
    source.write_text(ticks_to_csv(RB, ticks, 0))
    import_history(store, [source], symbol=None, duration=None, ticks=LISTED, price_decs=DECS)
    loaded = store.load(RB, keep)
    assert loaded is not None and loaded.ticks == ticks.slice(max(len(ticks) - keep, 0), len(ticks))
    assert history_store.tail_text(store.path(RB, 0), keep).splitlines()[0] == tick_header(RB, 5)


def test_the_tail_of_a_file_is_read_within_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_store, "TAIL_CHUNK", 7)
    path = tmp_path / "long.csv"
    path.write_text("header\n" + "x" * (3 * MAX_LINE) + "\nlast\n")
    assert history_store.tail_text(path, 1) == "header\nlast\n"
    # Bounded: a row longer than any tick row is not read whole (nor returned), the rows after it are.
    assert history_store.tail_text(path, 2) == "header\nlast\n"
    (tmp_path / "header.csv").write_text("header\n")
    assert history_store.tail_text(tmp_path / "header.csv", 10).splitlines() == ["header"]


def test_a_header_less_tick_file_needs_its_symbol(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history", seed=1)
    rows = tmp_path / "appended.csv"
    rows.write_text(ticks_to_csv(M, sample(1), 0, header=False))
    with pytest.raises(HistoryFileError, match="no header line: give the symbol"):
        import_history(store, [rows], symbol=None, duration=None, ticks=LISTED, price_decs=DECS)
    done = import_history(store, [rows], symbol=M, duration=None, ticks=LISTED, price_decs=DECS)
    assert done[0] == (M, 0, 4)
    rows.write_text("1,2,3,4,5\n")
    with pytest.raises(HistoryFileError, match=r"5 cells: neither a K-line row \(9 cells\) nor a tick row"):
        import_history(store, [rows], symbol=M, duration=None, ticks=LISTED, price_decs=DECS)


def test_bars_of_any_duration_are_kept_as_their_own_file(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history", seed=1)
    five = bars_from_ticks(day_of_ticks(), 300)
    source = tmp_path / "rb-5min.csv"
    source.write_text(to_csv(RB, five, 0))
    done = import_history(store, [source], symbol=None, duration=None, ticks=LISTED, price_decs=DECS)
    assert done == [(RB, 300, len(five))]  # the duration read from the rows
    assert store.path(RB, 300).read_text() == source.read_text()
    for bad, message in ((90_000, "over a day must be whole days"), (-60, "positive whole number")):
        with pytest.raises(ImportRefused, match=message):
            import_history(store, [source], symbol=None, duration=bad, ticks=LISTED, price_decs=DECS)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["rb-ticks.csv", "rb-minutes.csv"], r"K-lines with its tick file .*rb-ticks\.csv"),
        (["rb-ticks.csv", "rb-ticks-again.csv"], r"SHFE\.rb2601 ticks are also in .*rb-ticks\.csv"),
        (["rb-ticks.csv", "unknown.csv"], r"unknown\.csv:1: column 3: unknown symbol SHFE\.rb2705"),
        (["rb-ticks.csv", "off-grid.csv"], r"off-grid\.csv:3: column SHFE\.rb2601\.ask_price1: 3502\.5"),
        (["rb-ticks.csv", "unsorted.csv"], r"unsorted\.csv:4: column datetime_nano: rows not sorted"),
    ],
)
def test_bad_imports_change_nothing(tmp_path: Path, files: list[str], message: str) -> None:
    store = HistoryStore(tmp_path / "history", seed=1)
    text = ticks_to_csv(RB, sample(), 0)
    lines = text.splitlines()
    contents = {
        "rb-ticks.csv": text,
        "rb-ticks-again.csv": text,
        "rb-minutes.csv": to_csv(RB, bars_from_ticks(sample(), 60), 0),
        "unknown.csv": text.replace(RB, "SHFE.rb2705"),
        "off-grid.csv": "\n".join([*lines[:2], lines[2].replace(",3502.0,", ",3502.5,", 1), *lines[3:]]),
        "unsorted.csv": "\n".join([lines[0], lines[1], lines[3], lines[2], *lines[4:]]),
    }
    for seconds in (60, 86400):
        store.path(RB, seconds).write_text(f"before {seconds}\n")
    paths = []
    for name in files:
        (tmp_path / name).write_text(contents[name])
        paths.append(tmp_path / name)
    with pytest.raises((HistoryFileError, ImportRefused), match=message):
        import_history(store, paths, symbol=None, duration=None, ticks={RB: 1.0}, price_decs=DECS)
    assert sorted(store.kept(RB)) == [60, 86400]
    assert [store.path(RB, s).read_text() for s in (60, 86400)] == ["before 60\n", "before 86400\n"]


def test_the_market_serves_imported_ticks_and_bars_before_the_live_ones() -> None:
    from qaex.core.history import ContractHistory
    from qaex.core.instruments import InstrumentRegistry
    from qaex.core.market import MarketState

    cu = "SHFE.cu2601"
    ticks = TickColumns(5)
    for index in range(30):
        ticks.append(T0 + index * 10 * S, tick_values(5, 86000.0 + 10 * (index % 4), index, 50, tick=10.0))
    five = bars_from_ticks(ticks, 300)
    state = MarketState(InstrumentRegistry(), with_history=True)
    now = T0 + 3600 * S
    state.list_instrument(cu, now)
    history = ContractHistory(cu, bars_from_ticks(ticks, 60), bars_from_ticks(ticks, 86400), [], [])
    history.ticks, history.others = ticks, {300: five}
    state.attach_history(cu, history)
    series = state.ticks[cu]
    assert (series.first_id, series.last_id) == (0, 29)
    assert series.get(29) == ticks.tick(29)
    served = state.kline_history(cu, 300 * S, now)
    bars = list(served.window(0, served.last_id).values())
    assert bars[: len(five)] == list(five.bars())
    assert all(bar["datetime"] > five.datetime[-1] for bar in bars[len(five) :])
    # A series keeps only its newest max_len ticks of a long recording.
    short = MarketState(InstrumentRegistry(), with_history=True, history=20)
    short.list_instrument(cu, now)
    short.attach_history(cu, history)
    assert (short.ticks[cu].first_id, short.ticks[cu].last_id) == (0, 19)
    assert short.ticks[cu].get(0) == ticks.tick(10) and short.ticks[cu].get(19) == ticks.tick(29)
    assert short.ticks[cu]._archive is not ticks  # a copy of the tail, not the whole recording
