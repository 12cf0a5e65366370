"""set_chart windows and the patches that answer and follow them."""

from __future__ import annotations

from typing import Any

import pytest

from qaex.core.chart import Chart, ChartRequest, SeriesView, delete_patch
from qaex.core.kline import KlineSeries, TickSeries

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8
A, B = "SHFE.cu2601", "SHFE.au2602"


def series_with(symbol: str, minutes: range) -> KlineSeries:
    series = KlineSeries(symbol, MINUTE)
    for minute in minutes:
        series.on_trade(100.0 + minute, 1, T0 + minute * MINUTE, open_interest=minute)
    return series


class Market:
    """A series lookup over a fixed set of series, as the MarketData service would provide."""

    def __init__(self, *series: KlineSeries | TickSeries) -> None:
        self.series = {(s.symbol, s.duration_ns): s for s in series}

    def __call__(self, symbol: str, duration_ns: int) -> SeriesView:
        return self.series[(symbol, duration_ns)]


def request(**fields: Any) -> ChartRequest:
    message = {"aid": "set_chart", "chart_id": "c1", "ins_list": A, "duration": MINUTE, "view_width": 3}
    message.update(fields)
    return ChartRequest.from_message(message)


def chart_of(patch: dict[str, Any]) -> dict[str, Any]:
    return patch["charts"]["c1"]  # type: ignore[no-any-return]


def bars_of(patch: dict[str, Any], symbol: str = A) -> dict[str, Any]:
    return patch["klines"][symbol][str(MINUTE)]  # type: ignore[no-any-return]


def test_default_window_is_the_last_view_width_bars() -> None:
    market = Market(series_with(A, range(10)))
    patch = Chart(request()).initial_patch(market)
    assert (chart_of(patch)["left_id"], chart_of(patch)["right_id"]) == (7, 9)
    assert set(bars_of(patch)["data"]) == {"7", "8", "9"}
    assert bars_of(patch)["last_id"] == 9


def test_initial_answer_is_ready_with_the_request_echoed_as_state() -> None:
    market = Market(series_with(A, range(2)))
    message = {"aid": "set_chart", "chart_id": "c1", "ins_list": A, "duration": MINUTE, "view_width": 3}
    answer = chart_of(Chart(ChartRequest.from_message(message)).initial_patch(market))
    assert answer["ready"] is True and answer["more_data"] is False
    assert message.items() <= answer["state"].items()  # TqSdk's own check


def test_a_window_wider_than_the_history_starts_at_the_first_bar() -> None:
    market = Market(series_with(A, range(2)))
    answer = chart_of(Chart(request(view_width=200)).initial_patch(market))
    assert (answer["left_id"], answer["right_id"]) == (0, 1)


def test_an_empty_series_answers_ready_with_no_window() -> None:
    market = Market(KlineSeries(A, MINUTE))
    patch = Chart(request()).initial_patch(market)
    assert (chart_of(patch)["left_id"], chart_of(patch)["right_id"]) == (-1, -1)
    assert bars_of(patch) == {"last_id": -1, "data": {}}


def test_left_kline_id_fixes_the_left_edge() -> None:
    market = Market(series_with(A, range(10)))
    patch = Chart(request(left_kline_id=2)).initial_patch(market)
    assert (chart_of(patch)["left_id"], chart_of(patch)["right_id"]) == (2, 4)
    assert set(bars_of(patch)["data"]) == {"2", "3", "4"}


def test_focus_datetime_puts_the_focused_bar_at_focus_position() -> None:
    market = Market(series_with(A, range(10)))
    patch = Chart(request(focus_datetime=T0 + 5 * MINUTE, focus_position=1)).initial_patch(market)
    assert (chart_of(patch)["left_id"], chart_of(patch)["right_id"]) == (4, 6)


def test_focus_datetime_inside_a_bar_focuses_the_next_bar_as_tqsdk_expects() -> None:
    market = Market(series_with(A, range(10)))
    patch = Chart(request(focus_datetime=T0 + 5 * MINUTE + S, focus_position=0)).initial_patch(market)
    assert chart_of(patch)["left_id"] == 6


def test_focus_past_the_end_with_position_equal_to_width_gives_the_bars_before_it() -> None:
    market = Market(series_with(A, range(10)))
    chart = Chart(request(focus_datetime=T0 + 99 * MINUTE, focus_position=3))
    answer = chart_of(chart.initial_patch(market))
    assert (answer["left_id"], answer["right_id"]) == (7, 9)


def test_default_window_follows_the_right_edge() -> None:
    series = series_with(A, range(10))
    market = Market(series)
    chart = Chart(request())
    chart.initial_patch(market)
    series.on_trade(200.0, 1, T0 + 10 * MINUTE, open_interest=1)
    assert chart.update_patch(market) == {"charts": {"c1": {"left_id": 8, "right_id": 10}}}


def test_update_is_none_while_the_window_stays() -> None:
    series = series_with(A, range(10))
    market = Market(series)
    chart = Chart(request())
    chart.initial_patch(market)
    series.on_trade(200.0, 1, T0 + 9 * MINUTE + S, open_interest=1)
    assert chart.update_patch(market) is None


def test_fixed_left_window_grows_until_full_then_stays() -> None:
    series = series_with(A, range(4))
    market = Market(series)
    chart = Chart(request(left_kline_id=2))
    assert (chart_of(chart.initial_patch(market))["right_id"]) == 3
    series.on_time(T0 + 4 * MINUTE)
    assert chart.update_patch(market) == {"charts": {"c1": {"left_id": 2, "right_id": 4}}}
    series.on_time(T0 + 5 * MINUTE)
    assert chart.update_patch(market) is None


def test_two_symbols_bind_other_bars_by_datetime() -> None:
    main = series_with(A, range(6))
    other = series_with(B, range(2, 6))  # B starts trading two minutes later
    market = Market(main, other)
    patch = Chart(request(ins_list=f"{A},{B}", view_width=10)).initial_patch(market)
    assert bars_of(patch)["binding"] == {B: {"2": 0, "3": 1, "4": 2, "5": 3}}
    assert bars_of(patch, B)["last_id"] == 3
    assert set(bars_of(patch, B)["data"]) == {"0", "1", "2", "3"}


def test_binding_follows_new_bars_of_both_symbols() -> None:
    main = series_with(A, range(3))
    other = series_with(B, range(3))
    market = Market(main, other)
    chart = Chart(request(ins_list=f"{A},{B}", view_width=10))
    chart.initial_patch(market)
    main.on_trade(300.0, 1, T0 + 3 * MINUTE, open_interest=1)
    first = chart.update_patch(market)
    assert first == {"charts": {"c1": {"left_id": 0, "right_id": 3}}}  # B has no bar for minute 3 yet
    other.on_trade(400.0, 1, T0 + 3 * MINUTE + S, open_interest=1)
    assert chart.update_patch(market) == {"klines": {A: {str(MINUTE): {"binding": {B: {"3": 3}}}}}}


def test_tick_chart_windows_the_tick_series() -> None:
    ticks = TickSeries(A)
    for step in range(5):
        ticks.append({"datetime": T0 + step, "last_price": 100.0 + step})
    patch = Chart(request(duration=0, view_width=2)).initial_patch(Market(ticks))
    assert (chart_of(patch)["left_id"], chart_of(patch)["right_id"]) == (3, 4)
    assert set(patch["ticks"][A]["data"]) == {"3", "4"}


def test_series_keys_name_every_series_the_session_needs() -> None:
    assert Chart(request(ins_list=f"{A},{B}")).series_keys() == [(A, MINUTE), (B, MINUTE)]


def test_empty_ins_list_deletes_the_chart() -> None:
    deletion = request(ins_list="")
    assert deletion.is_delete
    assert delete_patch(deletion.chart_id) == {"charts": {"c1": None}}
    with pytest.raises(ValueError):
        Chart(deletion)


def test_view_width_is_capped_at_ten_thousand_but_echoed_as_sent() -> None:
    chart = Chart(request(view_width=20_000))
    assert chart.view_width == 10_000
    assert chart.request.state()["view_width"] == 20_000


@pytest.mark.parametrize(
    "fields",
    [{"view_width": 0}, {"duration": -MINUTE}, {"duration": S // 2}, {"focus_datetime": T0}],
)
def test_malformed_requests_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        request(**fields)
