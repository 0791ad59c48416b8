"""RateChart: bytes/s of the busiest clusters over the last minutes, drawn by plotext.

UI thread only (plotext keeps global state). The chart is built with
``plotext.build()`` and shown as ``Text.from_ansi``, not through PlotextPlot, and at
most once a second (DESIGN "UI cost facts": ~20-30 ms a build); snapshots in between
only mark it stale. Each history point is drawn as a step over the interval it
averages, on the snapshot's clock (a replay's capture time: one point of a replay read
in a blink still spans the whole capture). Every line shown has a colour of its own
(:func:`line_colors`, which the cluster table uses for the same clusters) and a legend
row names them; with ``NO_COLOR`` the lines are drawn with the last digit of the
cluster ID instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import plotext as plt
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from netmon.core.text import safe_text
from netmon.core.units import duration, human_rate
from netmon.core.values import ClusterView
from netmon.ui.themes import PALETTE_SIZE, cluster_colors, plotext_color

#: At most this many clusters (the busiest now) get a line.
MAX_LINES = 6
#: Rates spanning this ratio (busiest / quietest line) are drawn on a log scale.
LOG_RATIO = 100.0
#: Seconds between rebuilds while data keeps arriving.
MIN_INTERVAL = 1.0


def chart_clusters(clusters: Sequence[ClusterView]) -> list[ClusterView]:
    """The clusters that get a line: the busiest now, those with a history."""
    return sorted((c for c in clusters if c.history),
                  key=lambda c: (-c.byte_rate, c.cluster_id))[:MAX_LINES]


def line_colors(ids: Sequence[int]) -> dict[int, int]:
    """A palette slot for each of ``ids`` (at most :data:`PALETTE_SIZE`), all different:
    a cluster keeps its own (ID modulo the palette) unless an earlier one took it, and
    then gets the next free one."""
    taken: dict[int, int] = {}
    used: set[int] = set()
    for cid in ids[:PALETTE_SIZE]:
        slot = cid % PALETTE_SIZE
        while slot in used:
            slot = (slot + 1) % PALETTE_SIZE
        taken[cid] = slot
        used.add(slot)
    return taken


def step_points(history: Sequence[float], times: Sequence[float],
                ) -> tuple[list[float], list[float]]:
    """The (x, y) of a history drawn as steps: each value held over the interval it
    covers; x in seconds before the last time (<= 0). ``times`` holds the interval
    boundaries, aligned with the end of ``history`` (one more than it)."""
    n = min(len(history), len(times) - 1)
    end = times[-1]
    xs: list[float] = []
    ys: list[float] = []
    for y, t0, t1 in zip(history[-n:], times[-n - 1:-1], times[-n:], strict=True):
        xs += [t0 - end, t1 - end]
        ys += [y, y]
    return xs, ys


def nice_ticks(top: float, count: int = 3) -> list[float]:
    """Round tick values 0, step, 2*step, ... with the last one >= ``top``
    (at most ``count`` + 1 of them)."""
    if top <= 0:
        return [0.0]
    raw = top / count
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def ago(seconds: float) -> str:
    """An x-axis label: 0 -> "now", 30 -> "-30s", 120 -> "-2m"."""
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return f"-{seconds:.0f}s"
    return f"-{seconds / 60:.3g}m"


class RateChart(Widget):
    """Per-cluster rate lines for the busiest clusters."""

    DEFAULT_CSS = """
    RateChart {
        height: 1fr;
        min-height: 5;
        background: $surface;
        color: $text-muted;
        border-top: solid $panel;
        border-title-color: $text-muted;
        border-title-align: left;
    }
    RateChart.-empty { content-align: center middle; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clusters: tuple[ClusterView, ...] = ()
        self.times: tuple[float, ...] = ()
        """The history points' interval boundaries (see Snapshot.history_times)."""
        self.clock = "wall"
        self.builds = 0
        """How many times the chart has been rebuilt (tests and the benchmark read it)."""
        self._text = Text("")
        self._built_for: tuple[object, ...] = ()
        self._last_build = 0.0
        self._scheduled = False
        self.border_title = "bytes/s by cluster"

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.rebuild())

    def show_clusters(self, clusters: Sequence[ClusterView], times: Sequence[float],
                      clock: str = "wall") -> None:
        """New data (``times``: the snapshot's history_times, on ``clock``): rebuild
        once the rest of the screen is painted if the last build is a second old,
        else a second after it."""
        self.clusters = tuple(clusters)
        self.times = tuple(times)
        self.clock = clock
        if self._scheduled:
            return  # a rebuild is already on its way and will use these clusters
        self._scheduled = True
        wait = MIN_INTERVAL - (time.monotonic() - self._last_build)
        if wait > 0:
            self.set_timer(wait, self._rebuild_later, name="chart-throttle")
        else:
            self.call_after_refresh(self._rebuild_later)

    def _rebuild_later(self) -> None:
        self._scheduled = False
        self.rebuild()

    def on_resize(self) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        """Draw the chart for the current data and size (skipped when nothing changed)."""
        width, height = self.content_size
        key = (self.clusters, width, height, self.app.theme, self.times)
        if key == self._built_for or width < 10 or height < 4:
            return
        self._built_for = key
        self.builds += 1
        self._text = self._build(width, height)
        self.set_class(not self.clusters, "-empty")
        if self.clusters:  # the first data is drawn at once; later data at most 1 Hz
            self._last_build = time.monotonic()
        self.refresh()

    def _build(self, width: int, height: int) -> Text:
        busiest = chart_clusters(self.clusters)
        if not busiest or len(self.times) < 2:
            self.border_title = "bytes/s by cluster"
            return Text("no traffic yet")
        # One step per column at most: older points would not show anyway.
        points = min(max(len(c.history) for c in busiest), width, len(self.times) - 1)
        times = self.times[-points - 1:]
        span = times[-1] - times[0]
        series = [(c, step_points(c.history[-points:], times)) for c in busiest]
        top = max(max(ys) for _, (_, ys) in series)
        low = min(max(min(ys), 0.0) for _, (_, ys) in series)
        log = top > 0 and top / max(low, 1.0) >= LOG_RATIO
        of = " of capture time" if self.clock == "capture" else ""
        self.border_title = (f"bytes/s of the {len(busiest)} busiest clusters"
                             f"{' (log scale)' if log else ''}, last {duration(span)}{of}")
        palette = cluster_colors(self.app.current_theme)
        slots = line_colors([c.cluster_id for c in busiest])
        plt.clear_figure()
        plt.limitsize(False, False)  # the widget's size, not the terminal's plotext sees
        plt.plotsize(width, height - 1)  # the last row is the legend
        plt.theme("clear")
        for c, (xs, ys) in reversed(series):  # the busiest drawn last, on top
            if log:
                ys = [math.log10(max(y, 1.0)) for y in ys]
            marker = str(c.cluster_id)[-1] if self.app.no_color else "hd"
            plt.plot(xs, ys, marker=marker, color=plotext_color(palette[slots[c.cluster_id]]))
        if log:
            self._log_axis(low, top)
        else:
            ticks = nice_ticks(top)
            plt.yticks(ticks, [human_rate(t) for t in ticks])
            plt.ylim(0, max(ticks[-1], 1.0))
        plt.xlim(-span if span > 0 else -1.0, 0)
        xt = [t for t in nice_ticks(span, 3) if t <= span] if span > 0 else [0.0]
        plt.xticks([-t for t in xt], [ago(t) for t in xt])
        chart = Text.from_ansi(plt.build().rstrip("\n"), no_wrap=True, end="")
        chart.append("\n")
        chart.append_text(self._legend(busiest, slots, palette, width))
        return chart

    @staticmethod
    def _log_axis(low: float, top: float) -> None:
        """A log axis fitted to the data: powers of ten inside it, and the peak."""
        first = max(int(math.log10(max(low, 1.0))), 0)
        peak = math.log10(top)
        exps: list[float] = [float(e) for e in range(first, math.floor(peak) + 1)]
        step = max(1, (len(exps) + 2) // 3)
        exps = exps[::step]
        if not exps or peak - exps[-1] > 0.3:  # room for the peak's own label
            exps.append(peak)
        plt.yticks(exps, [human_rate(10.0**e) for e in exps])
        plt.ylim(first, peak + 0.02 * max(peak - first, 1.0))

    def _legend(self, busiest: Sequence[ClusterView], slots: dict[int, int],
                palette: Sequence[Color], width: int) -> Text:
        """One row: each line's mark in its colour, its cluster ID and label."""
        legend = Text(no_wrap=True, overflow="ellipsis", end="")
        room = max((width - 2) // max(len(busiest), 1) - 4, 6)
        for c in busiest:
            mark = str(c.cluster_id)[-1] if self.app.no_color else "━"
            color = None if self.app.no_color else palette[slots[c.cluster_id]].rich_color
            legend.append(f" {mark}", style=Style(color=color, bold=True))
            legend.append(f" {c.cluster_id} {safe_text(c.label, room)}".rstrip()[:room + 4])
        legend.truncate(width, overflow="ellipsis")
        return legend

    def render(self) -> Text:
        return self._text
