"""ChartFeeds: the charts of every DIFF session of one process, and which series feeds which of them.

One home for the set_chart logic both DIFF processes share: the core's MarketData
(qaex.exchange.market, series of its own MarketState) and a gateway's charts
(qaex.exchange.remote_charts, series mirrored from the core). What differs is behind a
:class:`ChartSource`: how a chart is opened and closed (series started, held, fetched), whether its
series are there yet, and its patches in DIFF form.

* :meth:`ChartFeeds.update` follows a session's ``charts`` (its set_chart messages): a new or changed
  chart is opened (a refusal is an ERROR notify, and the chart leaves the session's view), a deleted
  one closed; a chart whose series are there gets its initial patch at once (bars and ``ready`` in the
  same rtn_data), one whose series are still coming gets it from :meth:`ChartFeeds.series_ready`.
* :meth:`ChartFeeds.push_series` pushes each changed series' shared patch to every session charting
  it, then the charts' own window moves (after the bars, so that a window never points past them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import msgspec

from qaex.core.chart import Chart
from qaex.core.market import ChartRefused, SeriesKey
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.diff import SharedPatch

Patch = dict[str, Any]


class ChartSource(Protocol):
    def open_chart(self, message: Mapping[str, Any]) -> Chart:
        """The chart a set_chart message (as a dict) asks for; ChartRefused if it cannot be served."""
        ...

    def close_chart(self, chart: Chart) -> None: ...

    def chart_ready(self, chart: Chart) -> bool:
        """Whether every series of the chart is here (its initial patch can be built)."""
        ...

    def chart_patch(self, chart: Chart) -> Patch:
        """The chart's whole window in DIFF form (its initial patch, or its part of a resync)."""
        ...

    def chart_moves(self, chart: Chart) -> Patch | None:
        """The chart's window moves and new bindings since its last patch, in DIFF form, or None."""
        ...


def chart_view_size(chart: Chart) -> int:
    """Rough size in keys of a chart's whole window (a session's pending bound must fit it)."""
    return 20 + 12 * chart.view_width * len(chart.symbols)


class ChartFeeds:
    def __init__(self, source: ChartSource, view_size: Callable[[SessionLink], int]) -> None:
        """``view_size``: a session's whole view in keys (quotes and charts), so that a 10,000-bar
        answer fits the session's pending bound (raised before the push)."""
        self.source = source
        self._view_size = view_size
        self._charts: dict[SessionLink, dict[str, Chart]] = {}
        self._messages: dict[SessionLink, dict[str, Any]] = {}  # the SetChart each chart was built from
        self._feeds: dict[SeriesKey, dict[SessionLink, list[Chart]]] = {}  # charts per series, per session
        self._shown: set[Chart] = set()  # charts whose initial patch was pushed

    def keys(self) -> list[SeriesKey]:
        """The series some chart uses."""
        return list(self._feeds)

    def charted(self, key: SeriesKey) -> bool:
        """Whether some chart uses the series."""
        return key in self._feeds

    def charts_of(self, key: SeriesKey) -> list[tuple[SessionLink, Chart]]:
        return [(link, chart) for link, charts in self._feeds.get(key, {}).items() for chart in charts]

    # -- sessions ------------------------------------------------------------------------------------
    def update(self, link: SessionLink, messages: dict[str, Any]) -> None:
        """After a set_chart: open and close charts to match ``messages`` (the session's ``charts``)."""
        charts = self._charts.setdefault(link, {})
        built = self._messages.setdefault(link, {})
        for chart_id in [chart_id for chart_id in charts if chart_id not in messages]:
            self._unfeed(link, charts.pop(chart_id))  # deleted: the session already queued charts/{id}: null
            built.pop(chart_id, None)
        for chart_id, message in list(messages.items()):
            if built.get(chart_id) is message:
                continue
            old = charts.pop(chart_id, None)
            built.pop(chart_id, None)
            try:  # the new chart before the old one closes: a series both use stays (no fetch again)
                chart = self.source.open_chart(msgspec.structs.asdict(message))
            except ChartRefused as refused:
                link.session.notify(refused.code, "ERROR", refused.message)
                del messages[chart_id]  # refused: not part of this session's view any more
                continue
            finally:
                if old is not None:
                    self._unfeed(link, old)
            for key in chart.series_keys():
                self._feeds.setdefault(key, {}).setdefault(link, []).append(chart)
            charts[chart_id] = chart
            built[chart_id] = message
            if self.source.chart_ready(chart):
                self._show(link, chart)
        if not charts:
            self._charts.pop(link, None)
            self._messages.pop(link, None)

    def remove(self, link: SessionLink) -> None:
        for chart in self._charts.pop(link, {}).values():
            self._unfeed(link, chart)
        self._messages.pop(link, None)

    def _show(self, link: SessionLink, chart: Chart) -> None:
        session = link.session
        session.view_size = max(session.view_size, self._view_size(link))
        self._shown.add(chart)
        link.session.push(self.source.chart_patch(chart))

    def _unfeed(self, link: SessionLink, chart: Chart) -> None:
        """Stop feeding ``chart`` to ``link`` and close it in the source."""
        for key in chart.series_keys():
            feeds = self._feeds.get(key)
            if feeds is None:
                continue
            charts = feeds.get(link, [])
            if chart in charts:
                charts.remove(chart)
            if not charts:
                feeds.pop(link, None)
            if not feeds:
                del self._feeds[key]
        self._shown.discard(chart)
        self.source.close_chart(chart)

    def view(self, link: SessionLink) -> list[Patch]:
        """The session's charts with their bars, for a resync (those still waiting for series: none)."""
        return [
            self.source.chart_patch(chart)
            for chart in self._charts.get(link, {}).values()
            if chart in self._shown
        ]

    def view_size(self, link: SessionLink) -> int:
        """The charts' part of the session's view size."""
        return sum(chart_view_size(chart) for chart in self._charts.get(link, {}).values())

    # -- series ----------------------------------------------------------------------------------------
    def push_series(self, changes: Iterable[tuple[SeriesKey, Patch]], woken: dict[SessionLink, None]) -> None:
        """Each changed series' patch (DIFF form, shared) to the sessions charting it, then the moves of
        their charts; the sessions pushed to are added to ``woken``."""
        moved: list[tuple[SessionLink, Chart]] = []
        seen: set[Chart] = set()
        for key, patch in changes:
            feeds = self._feeds.get(key)
            if not feeds:
                continue
            shared = SharedPatch(patch)  # encoded once for every session charting the series
            for link, charts in feeds.items():
                link.session.push_shared(shared)
                woken[link] = None
                for chart in charts:
                    if chart not in seen and chart in self._shown:
                        seen.add(chart)
                        moved.append((link, chart))
        for link, chart in moved:  # after the bars, so that a window never points past them
            update = self.source.chart_moves(chart)
            if update is not None:
                link.session.push(update)

    def series_ready(self, key: SeriesKey, woken: dict[SessionLink, None]) -> None:
        """The series of ``key`` is (again) here whole: every chart on it whose series are all here gets
        its whole window (its initial patch, or again after the series was fetched anew)."""
        for link, chart in self.charts_of(key):
            if self.source.chart_ready(chart):
                self._show(link, chart)
                woken[link] = None

    def refuse(self, key: SeriesKey, refused: ChartRefused, woken: dict[SessionLink, None]) -> None:
        """The series cannot be had (the core refused it): every chart on it is refused, as at open."""
        for link, chart in self.charts_of(key):
            link.session.notify(refused.code, "ERROR", refused.message)
            charts = self._charts.get(link, {})
            charts.pop(chart.chart_id, None)
            self._messages.get(link, {}).pop(chart.chart_id, None)
            link.session.charts.pop(chart.chart_id, None)
            self._unfeed(link, chart)
            woken[link] = None
