"""The weekday closures of the Chinese futures exchanges: which dates are not trading days.

Weekends are always closed and are never listed. A :class:`HolidayCalendar` knows, for each year it
covers, every weekday on which the exchanges (SHFE, INE, DCE, CZCE, CFFEX, GFEX: one schedule, set each
year by the CSRC from the State Council's holiday notice) do not trade, and whether that year's list was
announced (``official``) or worked out from the holiday rules ahead of the notice (``estimated``). For a
year it does not cover it knows nothing and answers "weekends only"; :meth:`HolidayCalendar.covers` and
:meth:`HolidayCalendar.uncovered_years` let the caller notice and warn.

The packaged data is ``qaex/data/holidays.toml`` (docs/calendar.md describes it). A calendar is
immutable; :meth:`HolidayCalendar.with_closures` returns a new one with closures (and reopenings) added,
which is how a configuration extends it.
"""

from __future__ import annotations

import datetime as dt
import functools
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

YearStatus = Literal["official", "estimated"]
YEAR_STATUSES: tuple[YearStatus, ...] = ("official", "estimated")
_RESERVED_KEYS = frozenset({"status", "note"})


class HolidayCalendar:
    """Weekday closures by date (each with the holiday's name) and the years whose list is complete."""

    __slots__ = ("_closures", "_years")

    def __init__(
        self,
        closures: Mapping[dt.date, str] | None = None,
        years: Mapping[int, YearStatus] | None = None,
    ) -> None:
        closures = dict(closures or {})
        for day in closures:
            if day.weekday() >= 5:
                raise ValueError(f"{day} is a weekend day: weekends are always closed and are not listed")
        for year, status in (years or {}).items():
            if status not in YEAR_STATUSES:
                raise ValueError(f"year {year}: status must be one of {YEAR_STATUSES}, got {status!r}")
        self._closures: Mapping[dt.date, str] = MappingProxyType(dict(sorted(closures.items())))
        self._years: Mapping[int, YearStatus] = MappingProxyType(dict(sorted((years or {}).items())))

    @classmethod
    def weekends_only(cls) -> HolidayCalendar:
        """A calendar with no closures and no covered year: every weekday trades."""
        return cls()

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> HolidayCalendar:
        """Build from the data file's shape: ``{"2026": {"status": ..., "<holiday>": [dates]}, ...}``.

        Raises ValueError naming the year and key of anything malformed: a date outside its year's
        table, a weekend date, a date listed twice, an unknown status.
        """
        closures: dict[dt.date, str] = {}
        years: dict[int, YearStatus] = {}
        for year_key, table in document.items():
            if not (isinstance(year_key, str) and year_key.isdigit() and len(year_key) == 4):
                raise ValueError(f"holiday tables are keyed by year (e.g. [2026]), got {year_key!r}")
            year = int(year_key)
            if not isinstance(table, Mapping):
                raise ValueError(f"[{year}] must be a table")
            status = table.get("status")
            if status not in YEAR_STATUSES:
                raise ValueError(f"[{year}] status must be one of {YEAR_STATUSES}, got {status!r}")
            years[year] = cast(YearStatus, status)
            for name, days in table.items():
                if name in _RESERVED_KEYS:
                    continue
                if not isinstance(days, list):
                    raise ValueError(f"[{year}] {name} must be a list of dates")
                for day in days:
                    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
                        raise ValueError(f"[{year}] {name}: {day!r} is not a date")
                    if day.year != year:
                        raise ValueError(f"[{year}] {name}: {day} is not in {year}")
                    if day.weekday() >= 5:
                        raise ValueError(f"[{year}] {name}: {day} is a weekend day")
                    if day in closures:
                        raise ValueError(f"[{year}] {name}: {day} is already listed as {closures[day]}")
                    closures[day] = name
        return cls(closures, years)

    @classmethod
    def from_toml(cls, path: str | Path) -> HolidayCalendar:
        """Load a holiday file (the packaged one's format) from ``path``."""
        with open(path, "rb") as f:
            return cls.from_mapping(tomllib.load(f))

    # -- questions --------------------------------------------------------------------------------
    def is_trading_day(self, day: dt.date) -> bool:
        """A weekday that is not a listed closure (a year not covered: every weekday)."""
        return day.weekday() < 5 and day not in self._closures

    def closure(self, day: dt.date) -> str | None:
        """The name of the holiday closing a weekday (``"spring_festival"``), or None."""
        return self._closures.get(day)

    def covers(self, year: int) -> bool:
        """Whether the calendar has the year's closures (official or estimated)."""
        return year in self._years

    def status(self, year: int) -> YearStatus | None:
        """``"official"``, ``"estimated"``, or None for a year not covered."""
        return self._years.get(year)

    def uncovered_years(self, first: dt.date, last: dt.date) -> list[int]:
        """The years from ``first`` to ``last`` (inclusive) the calendar does not cover: for them it
        falls back to weekends only, which a caller should log once."""
        return [year for year in range(first.year, last.year + 1) if year not in self._years]

    @property
    def years(self) -> Mapping[int, YearStatus]:
        """Covered years and their status, oldest first."""
        return self._years

    @property
    def closures(self) -> Mapping[dt.date, str]:
        """Every listed closure, by date, oldest first."""
        return self._closures

    # -- extending --------------------------------------------------------------------------------
    def with_closures(
        self,
        extra: Mapping[dt.date, str] | Mapping[str, str],
        *,
        reopened: Iterable[dt.date | str] = (),
        years: Mapping[int, YearStatus] | None = None,
    ) -> HolidayCalendar:
        """A new calendar: these closures added (date or ISO ``"2027-02-05"`` -> holiday name), the
        ``reopened`` dates removed, and ``years`` marked covered with their status (adding closures to
        a year does not by itself mark it covered)."""
        closures = dict(self._closures)
        for day in reopened:
            closures.pop(_as_date(day), None)
        for day, name in extra.items():
            closures[_as_date(day)] = name
        return HolidayCalendar(closures, {**self._years, **(years or {})})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HolidayCalendar):
            return NotImplemented
        return self._closures == other._closures and self._years == other._years

    def __hash__(self) -> int:
        return hash((tuple(self._closures.items()), tuple(self._years.items())))

    def __repr__(self) -> str:
        span = f"{min(self._years)}-{max(self._years)}" if self._years else "no years"
        return f"HolidayCalendar({span}, {len(self._closures)} closures)"


def _as_date(day: dt.date | str) -> dt.date:
    if isinstance(day, dt.date):
        return day
    try:
        return dt.date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {day!r}") from None


@functools.cache
def default_holiday_calendar() -> HolidayCalendar:
    """The packaged calendar (``qaex/data/holidays.toml``), read once."""
    text = resources.files("qaex").joinpath("data", "holidays.toml").read_text(encoding="utf-8")
    return HolidayCalendar.from_mapping(tomllib.loads(text))
