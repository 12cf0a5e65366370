"""China time and trading days: the 18:00 roll (against TqSdk), the holiday calendar and its data file."""

from __future__ import annotations

import datetime as dt
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qaex.core import engine, kline
from qaex.core.calendar import (
    CHINA_TZ,
    HolidayCalendar,
    default_holiday_calendar,
    has_night_session,
    is_trading_day,
    next_trading_date,
    next_trading_day,
    nth_trading_day_of_month,
    previous_trading_date,
    roll_forward,
    trading_day_of,
    trading_day_start_ns,
    trading_days_of_month,
)

try:
    from tqsdk import datetime as tqsdk_datetime
except ImportError:  # pragma: no cover - tqsdk is a test dependency
    tqsdk_datetime = None
needs_tqsdk = pytest.mark.skipif(tqsdk_datetime is None, reason="tqsdk is not installed")

S = 1_000_000_000
HOLIDAYS = default_holiday_calendar()
NAMES = {"new_year", "spring_festival", "qingming", "labour_day", "dragon_boat", "mid_autumn", "national_day"}


def cst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).timestamp()) * S


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# -- one home -------------------------------------------------------------------------------------
def test_the_engine_and_the_k_lines_use_the_calendar_module() -> None:
    assert engine.trading_day_of is trading_day_of
    assert engine.next_trading_day is next_trading_day
    assert engine.CHINA_TZ is CHINA_TZ
    assert kline.trading_day_start_ns is trading_day_start_ns


# -- the 18:00 roll, as TqSdk computes it ---------------------------------------------------------

# 2000-01-01 .. 2040-01-01, and moments right at the roll and at midnight.
any_moment = st.integers(min_value=cst(2000, 1, 1), max_value=cst(2040, 1, 1))
near_a_boundary = st.builds(
    lambda day, hour, offset: cst(2026, 1, 1) + day * 86_400 * S + hour * 3600 * S + offset,
    st.integers(0, 3650),
    st.sampled_from([0, 18]),
    st.integers(-2_000, 2_000),
)


@needs_tqsdk
@given(st.one_of(any_moment, near_a_boundary))
def test_the_trading_day_of_a_moment_is_tqsdks(ts: int) -> None:
    expected = tqsdk_datetime._get_trading_day_from_timestamp(ts)
    assert trading_day_start_ns(ts) == expected
    assert trading_day_of(ts) == dt.datetime.fromtimestamp(expected // S, CHINA_TZ).strftime("%Y%m%d")


def test_the_roll_is_exact_to_the_nanosecond() -> None:
    # 2026-11-26 is a Thursday. A float timestamp rounds 17:59:59.9999999 up to 18:00.
    assert trading_day_of(cst(2026, 11, 26, 18) - 1) == "20261126"
    assert trading_day_of(cst(2026, 11, 26, 18)) == "20261127"
    assert trading_day_of(cst(2026, 11, 27, 18)) == "20261130"  # Friday evening -> Monday
    assert trading_day_of(cst(2026, 11, 29, 12)) == "20261130"  # Sunday
    assert next_trading_day("20261127") == "20261130"


def test_with_a_calendar_the_roll_skips_closures() -> None:
    # 2026-02-13 (Friday) evening: the Spring Festival closes 02-16 .. 02-23.
    assert trading_day_of(cst(2026, 2, 13, 20), HOLIDAYS) == "20260224"
    assert trading_day_of(cst(2026, 2, 13, 20)) == "20260216"
    assert trading_day_of(cst(2026, 10, 1, 10), HOLIDAYS) == "20261008"  # inside National Day
    assert trading_day_start_ns(cst(2026, 9, 30, 21), HOLIDAYS) == cst(2026, 10, 8)
    # No closure in the way: the same as without a calendar.
    assert trading_day_start_ns(cst(2026, 11, 26, 21), HOLIDAYS) == cst(2026, 11, 27)
    assert next_trading_day("20260213", HOLIDAYS) == "20260224"
    assert next_trading_day("20260213") == "20260216"


# -- trading days -----------------------------------------------------------------------------------
def test_stepping_over_weekends_and_closures() -> None:
    assert not is_trading_day(d("2026-02-14"), HOLIDAYS)  # a State Council working Saturday: still closed
    assert not is_trading_day(d("2026-02-18"), HOLIDAYS)
    assert is_trading_day(d("2026-02-18"))
    assert roll_forward(d("2026-02-18"), HOLIDAYS) == d("2026-02-24")
    assert roll_forward(d("2026-02-24"), HOLIDAYS) == d("2026-02-24")
    assert next_trading_date(d("2026-09-30"), HOLIDAYS) == d("2026-10-08")
    assert previous_trading_date(d("2026-10-08"), HOLIDAYS) == d("2026-09-30")
    assert previous_trading_date(d("2026-11-30")) == d("2026-11-27")


def test_trading_days_are_counted_within_a_month() -> None:
    february = trading_days_of_month(2026, 2, HOLIDAYS)
    assert len(february) == 14 and february[-1] == d("2026-02-27")
    assert nth_trading_day_of_month(2026, 1, 1, HOLIDAYS) == d("2026-01-05")  # 01-01 and 01-02 closed
    assert nth_trading_day_of_month(2026, 1, 10, HOLIDAYS) == d("2026-01-16")
    assert nth_trading_day_of_month(2026, 1, 10) == d("2026-01-14")
    assert nth_trading_day_of_month(2026, 12, -1, HOLIDAYS) == d("2026-12-31")
    assert nth_trading_day_of_month(2026, 10, -4, HOLIDAYS) == d("2026-10-27")
    for bad in (0, 15, -15):
        with pytest.raises(ValueError, match="14 trading days"):
            nth_trading_day_of_month(2026, 2, bad, HOLIDAYS)


def test_no_night_session_opens_the_first_day_after_a_closure() -> None:
    assert has_night_session(d("2026-11-30"), HOLIDAYS)  # Friday night for Monday
    assert has_night_session(d("2026-12-02"), HOLIDAYS)
    assert not has_night_session(d("2026-02-24"), HOLIDAYS)  # after the Spring Festival
    assert not has_night_session(d("2026-04-07"), HOLIDAYS)  # Qingming closed Monday 04-06
    assert not has_night_session(d("2026-10-08"), HOLIDAYS)
    assert has_night_session(d("2026-10-08"))  # weekends only: every trading day has one


# -- the holiday calendar ---------------------------------------------------------------------------
def test_the_packaged_calendar_covers_2016_onward_and_marks_estimates() -> None:
    assert list(HOLIDAYS.years) == list(range(2016, 2028))
    assert {year for year, status in HOLIDAYS.years.items() if status == "estimated"} == {2027}
    assert HOLIDAYS.status(2026) == "official"
    assert HOLIDAYS.status(2015) is None
    assert HOLIDAYS.covers(2027) and not HOLIDAYS.covers(2028)
    assert HOLIDAYS.uncovered_years(d("2026-12-02"), d("2028-03-01")) == [2028]
    assert HOLIDAYS.uncovered_years(d("2026-12-02"), d("2027-12-31")) == []


def test_every_covered_year_lists_the_seven_holidays() -> None:
    by_year: dict[int, set[str]] = {}
    for day, name in HOLIDAYS.closures.items():
        assert day.weekday() < 5
        by_year.setdefault(day.year, set()).add(name)
    for year in HOLIDAYS.years:
        # 2020: Mid-Autumn fell on National Day (10-01) and is listed under it.
        assert by_year[year] == (NAMES - {"mid_autumn"} if year == 2020 else NAMES), year


def test_known_closures() -> None:
    # New Year's Eve 2024: the exchanges closed on a State Council working day.
    assert HOLIDAYS.closure(d("2024-02-09")) == "spring_festival"
    assert HOLIDAYS.closure(d("2020-01-31")) == "spring_festival"  # the 2020 extension
    assert HOLIDAYS.closure(d("2018-12-31")) == "new_year"
    assert HOLIDAYS.closure(d("2026-10-07")) == "national_day"
    assert HOLIDAYS.closure(d("2026-10-08")) is None
    assert [day for day in HOLIDAYS.closures if day.year == 2026 and day.month == 2] == [
        d("2026-02-16"), d("2026-02-17"), d("2026-02-18"), d("2026-02-19"), d("2026-02-20"), d("2026-02-23"),
    ]  # fmt: skip


def test_a_year_not_covered_falls_back_to_weekends() -> None:
    assert is_trading_day(d("2028-01-03"), HOLIDAYS)  # probably closed, but 2028 is not covered
    assert not is_trading_day(d("2028-01-01"), HOLIDAYS)  # a Saturday
    assert HolidayCalendar.weekends_only().uncovered_years(d("2026-01-01"), d("2026-12-31")) == [2026]


def test_extra_closures_extend_a_calendar_without_changing_it() -> None:
    extended = HOLIDAYS.with_closures(
        {"2028-01-03": "new_year", d("2028-01-31"): "spring_festival"},
        reopened=["2027-02-12"],
        years={2028: "estimated"},
    )
    assert extended.closure(d("2028-01-03")) == "new_year"
    assert not extended.is_trading_day(d("2028-01-31"))
    assert extended.is_trading_day(d("2027-02-12"))
    assert extended.status(2028) == "estimated"
    assert not HOLIDAYS.covers(2028) and not HOLIDAYS.is_trading_day(d("2027-02-12"))
    assert HOLIDAYS.with_closures({}) == HOLIDAYS
    assert not HOLIDAYS.with_closures({"2029-05-01": "labour_day"}).covers(2029)
    with pytest.raises(ValueError, match="weekend"):
        HOLIDAYS.with_closures({"2026-12-05": "x"})
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        HOLIDAYS.with_closures({"12/05/2026": "x"})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"2026": {"new_year": [d("2026-01-01")]}}, "status"),
        ({"2026": {"status": "guessed", "new_year": [d("2026-01-01")]}}, "status"),
        ({"26": {"status": "official"}}, "keyed by year"),
        ({"2026": {"status": "official", "new_year": [d("2027-01-01")]}}, "not in 2026"),
        ({"2026": {"status": "official", "new_year": [d("2026-01-03")]}}, "weekend"),
        ({"2026": {"status": "official", "a": [d("2026-01-01")], "b": [d("2026-01-01")]}}, "already listed"),
        ({"2026": {"status": "official", "new_year": "2026-01-01"}}, "list of dates"),
        ({"2026": {"status": "official", "new_year": ["2026-01-01"]}}, "not a date"),
    ],
)
def test_a_malformed_holiday_file_names_the_problem(document: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HolidayCalendar.from_mapping(document)


def test_a_holiday_file_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text('[2030]\nstatus = "estimated"\nnew_year = [2030-01-01]\n')
    calendar = HolidayCalendar.from_toml(path)
    assert calendar.status(2030) == "estimated" and calendar.closure(d("2030-01-01")) == "new_year"


def test_the_data_file_is_package_data() -> None:
    assert resources.files("qaex").joinpath("data", "holidays.toml").is_file()
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "data/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["qaex"]
