"""set_chart: which bars (or ticks) a chart shows, and the patches that tell the client.

A DIFF chart is a window ``[left_id, right_id]`` on one series (``klines/{symbol}/{duration}`` or, for
duration 0, ``ticks/{symbol}``). The client says how wide (``view_width``) and where:

* neither ``left_kline_id`` nor ``focus_datetime``: the newest ``view_width`` items; the window follows
  the right edge as new bars open (``get_kline_serial`` / ``get_tick_serial``);
* ``left_kline_id``: the window starts there and grows to the right until it is ``view_width`` wide;
* ``focus_datetime`` + ``focus_position``: the first item with ``datetime >= focus_datetime`` (a
  *lower bound*, as TqSdk's backtest and data downloader rely on) sits at offset ``focus_position`` in
  the window, i.e. ``left_id = focus_id - focus_position``; from then on it behaves like a fixed left
  edge. A focus past the newest item counts as ``last_id + 1``, so TqSdk's backtest request
  (``focus_position == view_width``) gets exactly the items before ``focus_datetime``.

Windows are clipped to the items the series still keeps. An empty series answers ``left_id ==
right_id == -1``. Several symbols (``ins_list "A,B"``, K-lines only): the first is the main series; each
other bar with the same ``datetime`` as a main bar is bound to it in
``klines/{main}/{duration}/binding/{other}/{main_id} = other_id`` - TqSdk builds multi-symbol frames
from these bindings alone.

Bar data after the initial answer is not repeated per chart: every session with a chart on a series
also gets that series' shared ``take_patch``. :meth:`Chart.update_patch` only moves the window and adds
new bindings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from qaex.core.quote import Patch

MAX_VIEW_WIDTH = 10_000
"""TqSdk never asks for more (it caps ``data_length``); a larger request is served 10,000 wide."""


class SeriesView(Protocol):
    """What a chart needs from a :class:`~qaex.core.kline.KlineSeries` or a ``TickSeries``."""

    @property
    def first_id(self) -> int: ...

    @property
    def last_id(self) -> int: ...

    def window(self, left_id: int, right_id: int) -> dict[str, dict[str, Any]]: ...

    def get(self, item_id: int) -> dict[str, Any] | None: ...

    def lower_bound(self, datetime_ns: int) -> int: ...

    def find(self, datetime_ns: int) -> int | None: ...

    def last_datetime(self) -> int | None: ...


SeriesLookup = Callable[[str, int], SeriesView]
"""``(symbol, duration_ns) -> series``; duration 0 means ticks. Unknown symbols are the caller's job."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChartRequest:
    """A set_chart message, validated. ``state()`` echoes it the way TqSdk checks it."""

    chart_id: str
    ins_list: str
    duration: int
    view_width: int
    left_kline_id: int | None = None
    focus_datetime: int | None = None
    focus_position: int | None = None

    def __post_init__(self) -> None:
        if not self.chart_id:
            raise ValueError("set_chart needs a chart_id")
        if self.is_delete:
            return
        if self.duration < 0 or self.duration % 1_000_000_000:
            raise ValueError(f"duration must be 0 (ticks) or whole seconds in ns, got {self.duration}")
        if self.view_width < 1:
            raise ValueError(f"view_width must be >= 1, got {self.view_width}")
        if (self.focus_datetime is None) != (self.focus_position is None):
            raise ValueError("focus_datetime and focus_position go together")

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ChartRequest:
        """Build from a decoded set_chart message; raises ValueError/TypeError on bad fields."""

        def optional_int(key: str) -> int | None:
            value = message.get(key)
            return None if value is None else int(value)

        return cls(
            chart_id=str(message["chart_id"]),
            ins_list=str(message.get("ins_list", "")),
            duration=int(message.get("duration", 0)),
            view_width=int(message.get("view_width", 0) or 0),
            left_kline_id=optional_int("left_kline_id"),
            focus_datetime=optional_int("focus_datetime"),
            focus_position=optional_int("focus_position"),
        )

    @property
    def is_delete(self) -> bool:
        """An empty ins_list deletes the chart."""
        return self.ins_list == ""

    @property
    def symbols(self) -> list[str]:
        return [symbol for symbol in self.ins_list.split(",") if symbol]

    def state(self) -> Patch:
        """The request echoed under ``charts/{id}/state``.

        TqSdk checks ``request.items() <= state.items()``, so every key it sent must be there with the
        same value, ``aid`` included. Absent optional keys are sent as ``null`` so that a re-set of the
        same chart id (TqSdk re-sends multi-symbol charts with a smaller ``view_width``; its downloader
        swaps ``focus_datetime`` for ``left_kline_id``) deletes them from the merged state.
        """
        return {
            "aid": "set_chart",
            "chart_id": self.chart_id,
            "ins_list": self.ins_list,
            "duration": self.duration,
            "view_width": self.view_width,
            "left_kline_id": self.left_kline_id,
            "focus_datetime": self.focus_datetime,
            "focus_position": self.focus_position,
        }


def delete_patch(chart_id: str) -> Patch:
    """What a set_chart with an empty ins_list answers."""
    return {"charts": {chart_id: None}}


class Chart:
    """One chart of one session: computes its window and the patches that keep the client in step."""

    def __init__(self, request: ChartRequest) -> None:
        if request.is_delete:
            raise ValueError("an empty ins_list deletes a chart; answer it with delete_patch()")
        self.request = request
        self.chart_id = request.chart_id
        self.duration = request.duration
        # Ticks have no common clock across symbols, so a tick chart shows its first symbol only.
        self.symbols = request.symbols if request.duration else request.symbols[:1]
        self.view_width = min(request.view_width, MAX_VIEW_WIDTH)
        self._fixed_left: int | None = request.left_kline_id
        self._sent_window: tuple[int, int] | None = None
        self._bind_from: dict[str, int] = {}  # per other symbol: first main id whose binding may still come

    def series_keys(self) -> list[tuple[str, int]]:
        """``(symbol, duration_ns)`` of every series whose shared patches this chart's session needs."""
        return [(symbol, self.duration) for symbol in self.symbols]

    # -- the window --------------------------------------------------------------------------------
    def window(self, main: SeriesView) -> tuple[int, int]:
        """``(left_id, right_id)`` of the window on ``main`` now; ``(-1, -1)`` while it is empty.

        An empty window on a non-empty series (a left edge past the newest item) reports
        ``right_id == left_id - 1``.
        """
        last_id = main.last_id
        if last_id < 0:
            return -1, -1
        if self._fixed_left is None and self.request.focus_datetime is not None:
            focus_id = main.lower_bound(self.request.focus_datetime)
            self._fixed_left = focus_id - (self.request.focus_position or 0)
        if self._fixed_left is None:
            left, right = last_id - self.view_width + 1, last_id
        else:
            left, right = self._fixed_left, self._fixed_left + self.view_width - 1
        left = min(max(left, main.first_id), last_id + 1)
        right = max(min(right, last_id), left - 1)
        return left, right

    # -- patches -----------------------------------------------------------------------------------
    def initial_patch(self, lookup: SeriesLookup) -> Patch:
        """The answer to set_chart: the chart (ready, with state), the window's items and bindings."""
        main = lookup(self.symbols[0], self.duration)
        left, right = self.window(main)
        self._sent_window = (left, right)
        patch: Patch = {
            "charts": {
                self.chart_id: {
                    "left_id": left,
                    "right_id": right,
                    "more_data": False,
                    "ready": True,
                    "state": self.request.state(),
                }
            }
        }
        main_body: Patch = {"last_id": main.last_id, "data": main.window(left, right)}
        if not self.duration:
            patch["ticks"] = {self.symbols[0]: main_body}
            return patch
        klines: Patch = {self.symbols[0]: {str(self.duration): main_body}}
        patch["klines"] = klines
        bindings: Patch = {}
        for other_symbol in self.symbols[1:]:
            other = lookup(other_symbol, self.duration)
            self._bind_from[other_symbol] = left
            bound = self._new_bindings(main, other_symbol, other, right)
            bindings[other_symbol] = {str(main_id): other_id for main_id, other_id in bound}
            other_data = {}
            for _, other_id in bound:
                bar = other.get(other_id)
                if bar is not None:
                    other_data[str(other_id)] = bar
            klines[other_symbol] = {str(self.duration): {"last_id": other.last_id, "data": other_data}}
        if bindings:
            main_body["binding"] = bindings
        return patch

    def update_patch(self, lookup: SeriesLookup) -> Patch | None:
        """After series changed: the moved window and any new bindings, or None.

        Call it after the series' timers and trades of the batch, alongside the series' shared
        ``take_patch``; the bars themselves travel in those shared patches.
        """
        main = lookup(self.symbols[0], self.duration)
        patch: Patch = {}
        left, right = self.window(main)
        if (left, right) != self._sent_window:
            self._sent_window = (left, right)
            patch["charts"] = {self.chart_id: {"left_id": left, "right_id": right}}
        bindings: Patch = {}
        for other_symbol in self.symbols[1:]:
            other = lookup(other_symbol, self.duration)
            self._bind_from[other_symbol] = max(self._bind_from.get(other_symbol, left), left)
            bound = self._new_bindings(main, other_symbol, other, right)
            if bound:
                bindings[other_symbol] = {str(main_id): other_id for main_id, other_id in bound}
        if bindings:
            patch["klines"] = {self.symbols[0]: {str(self.duration): {"binding": bindings}}}
        return patch or None

    def _new_bindings(
        self, main: SeriesView, other_symbol: str, other: SeriesView, right: int
    ) -> list[tuple[int, int]]:
        """Bind main ids from the scan mark to ``right`` to the other bar with the same datetime.

        A main bar no later than the other series' newest bar is final: bars are never inserted in the
        past, so if it has no partner now it never will. The scan mark moves past such bars and stops at
        the first main bar newer than the other series, so each update costs only the new bars.
        """
        bound: list[tuple[int, int]] = []
        other_last = other.last_datetime()
        next_mark = right + 1
        for main_id in range(self._bind_from[other_symbol], right + 1):
            bar = main.get(main_id)
            if bar is None:
                continue
            main_datetime: int = bar["datetime"]
            other_id = other.find(main_datetime)
            if other_id is not None:
                bound.append((main_id, other_id))
            elif other_last is None or main_datetime > other_last:
                next_mark = main_id
                break
        self._bind_from[other_symbol] = next_mark
        return bound
