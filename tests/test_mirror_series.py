"""MirrorSeries (a gateway's copy of a core series) answers every question a chart asks exactly as the
series it mirrors, whatever the trades, timer ticks, takes and the moment of the snapshot; and the core's
SeriesHolds (which series it keeps for gateways) lapse and bound as they say."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.chart import Chart, ChartRequest
from qaex.core.kline import KlineSeries, MirrorSeries
from qaex.protocol.broker import SeriesHolds, series_body

S = 1_000_000_000
T0 = 1_763_946_000 * S

Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("trade"), st.integers(0, 30)),  # seconds later
        st.tuples(st.just("time"), st.integers(0, 200)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0)),
    ),
    max_size=60,
)


def same(mirror: MirrorSeries, series: KlineSeries, probes: list[int]) -> None:
    assert (mirror.first_id, mirror.last_id, len(mirror)) == (series.first_id, series.last_id, len(series))
    assert mirror.window(-5, series.last_id + 5) == series.window(-5, series.last_id + 5)
    assert mirror.last_datetime() == series.last_datetime()
    for probe in probes:
        assert mirror.lower_bound(probe) == series.lower_bound(probe)
        assert mirror.find(probe) == series.find(probe)
    for item_id in range(series.first_id - 2, series.last_id + 2):
        assert mirror.get(item_id) == series.get(item_id)


@settings(max_examples=150, deadline=None)
@given(ops=ops, max_len=st.integers(1, 12), duration=st.sampled_from([5, 60]))
def test_a_mirror_fed_a_snapshot_then_the_patches_equals_its_series(
    ops: list[Op], max_len: int, duration: int
) -> None:
    series = KlineSeries("SHFE.cu2601", duration * S, max_len)
    mirror: MirrorSeries | None = None
    now, price = T0, 86000.0
    for op, value in [*ops, ("take", 0), ("snapshot", 0), ("take", 0)]:
        if op == "trade":
            now += value * S
            price += 10.0
            series.on_trade(price, 1, now, 5)
        elif op == "time":
            now += value * S
            series.on_time(now)
        elif op == "take":
            patch = series.take_patch()
            body = None if patch is None else series_body(patch, ("SHFE.cu2601", duration * S))
            if mirror is not None and body is not None:
                mirror.apply(body)
        elif mirror is None:  # the snapshot: it may already hold changes the next take carries again
            mirror = MirrorSeries("SHFE.cu2601", duration * S, series.max_len)
            window = series.window(series.first_id, series.last_id)
            mirror.load(series.last_id, {int(key): bar for key, bar in window.items()})
    assert mirror is not None
    probes = [T0 + step * S for step in range(-10, 400, 7)]
    same(mirror, series, probes)
    # and a chart on either shows the same window
    request = ChartRequest(chart_id="c", ins_list="SHFE.cu2601", duration=duration * S, view_width=4)
    assert Chart(request).initial_patch(lambda s, d: mirror) == Chart(request).initial_patch(
        lambda s, d: series
    )


def test_an_empty_mirror_is_an_empty_series() -> None:
    mirror, series = MirrorSeries("X", 60 * S), KlineSeries("X", 60 * S)
    same(mirror, series, [T0])
    mirror.load(-1, {})
    same(mirror, series, [T0])


def test_a_mirror_keeps_the_items_it_was_given_and_never_changes_them() -> None:
    bar: dict[str, Any] = {"datetime": T0, "close": 1.0}
    mirror = MirrorSeries("X", 60 * S)
    mirror.load(0, {0: bar})
    got = mirror.get(0)
    assert got == bar and got is not bar
    mirror.apply({"last_id": 0, "data": {"0": {"datetime": T0, "close": 2.0}}})
    assert bar["close"] == 1.0 and mirror.get(0) == {"datetime": T0, "close": 2.0}


def test_holds_lapse_are_renewed_and_bounded() -> None:
    holds = SeriesHolds(lapse=60.0, limit=2)
    assert holds.hold(("A", 0), 0.0) is True
    assert holds.hold(("A", 0), 50.0) is False  # renewed until 110
    assert holds.hold(("B", 0), 10.0) is True
    assert holds.hold(("C", 0), 10.0) is None and ("C", 0) not in holds  # the bound
    assert holds.expired(69.9) == []
    assert holds.expired(70.0) == [("B", 0)]
    assert holds.expired(109.0) == [] and ("A", 0) in holds
    assert holds.expired(110.0) == [("A", 0)] and len(holds) == 0


@pytest.mark.parametrize(
    ("patch", "key", "body"),
    [
        ({"klines": {"A": {"60": {"last_id": 1}}}}, ("A", 60), {"last_id": 1}),
        ({"ticks": {"A": {"last_id": 2}}}, ("A", 0), {"last_id": 2}),
        ({"klines": {"A": {"60": {"last_id": 1}}}}, ("A", 0), None),
        ({"quotes": {}}, ("A", 60), None),
    ],
)
def test_series_body_finds_one_series_in_a_patch(
    patch: dict[str, Any], key: tuple[str, int], body: Any
) -> None:
    assert series_body(patch, key) == body
