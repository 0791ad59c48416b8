"""RateChart: bytes/s of the busiest clusters over the last minutes, drawn by plotext.

UI thread only (plotext keeps global state). The chart is built with
``plotext.build()`` and shown as ``Text.from_ansi``, not through PlotextPlot, and at
most once a second (DESIGN "UI cost facts": ~20-30 ms a build); snapshots in between
only mark it stale. Each line has its cluster's palette colour; with ``NO_COLOR`` the
lines are drawn with the last digit of the cluster ID instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import plotext as plt
from rich.text import Text
from textual.widget import Widget

from netmon.core.units import human_rate
from netmon.core.values import ClusterView
from netmon.ui.format import (
    duration,
)
from netmon.ui.themes import PALETTE_SIZE, cluster_colors, plotext_color

#: At most this many clusters (the busiest now) get a line.
MAX_LINES = 6
#: Rates spanning this ratio (busiest / quietest line) are drawn on a log scale.
LOG_RATIO = 100.0
#: Seconds between rebuilds while data keeps arriving.
MIN_INTERVAL = 1.0


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
        self.tick = 0.5
        """Seconds between two history points (the engine's tick)."""
        self.builds = 0
        """How many times the chart has been rebuilt (tests and the benchmark read it)."""
        self._text = Text("")
        self._built_for: tuple[object, ...] = ()
        self._last_build = 0.0
        self._scheduled = False
        self.border_title = "bytes/s by cluster"

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.rebuild())

    def show_clusters(self, clusters: Sequence[ClusterView], tick: float) -> None:
        """New data: rebuild once the rest of the screen is painted if the last build
        is a second old, else a second after it."""
        self.clusters = tuple(clusters)
        self.tick = tick if tick > 0 else 0.5
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
        key = (self.clusters, width, height, self.app.theme, self.tick)
        if key == self._built_for or width < 10 or height < 3:
            return
        self._built_for = key
        self.builds += 1
        self._text = self._build(width, height)
        self.set_class(not self.clusters, "-empty")
        if self.clusters:  # the first data is drawn at once; later data at most 1 Hz
            self._last_build = time.monotonic()
        self.refresh()

    def _build(self, width: int, height: int) -> Text:
        busiest = sorted((c for c in self.clusters if c.history),
                         key=lambda c: (-c.byte_rate, c.cluster_id))[:MAX_LINES]
        if not busiest:
            self.border_title = "bytes/s by cluster"
            return Text("no traffic yet")
        points = min(max(len(c.history) for c in busiest), 2 * width)
        span = (points - 1) * self.tick
        series = [(c, list(c.history[-points:])) for c in busiest]
        top = max(max(ys) for _, ys in series)
        low = min(max(min(ys), 0.0) for _, ys in series)
        log = top > 0 and top / max(low, 1.0) >= LOG_RATIO
        self.border_title = (f"bytes/s of the {len(busiest)} busiest clusters"
                             f"{' (log scale)' if log else ''}, last {duration(span)}")
        colors = cluster_colors(self.app.current_theme)
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        for c, ys in reversed(series):  # the busiest drawn last, on top
            if log:
                ys = [math.log10(max(y, 1.0)) for y in ys]
            xs = [-(len(ys) - 1 - i) * self.tick for i in range(len(ys))]
            marker = str(c.cluster_id)[-1] if self.app.no_color else "hd"
            plt.plot(xs, ys, marker=marker,
                     color=plotext_color(colors[c.cluster_id % PALETTE_SIZE]))
        if log:
            first = max(int(math.log10(max(low, 1.0))), 0)
            last = max(math.ceil(math.log10(top)), first + 1)
            exps = list(range(first, last + 1, max(1, (last - first + 3) // 4)))
            plt.yticks(exps, [human_rate(10.0**e) for e in exps])
            plt.ylim(first, max(exps[-1], last))
        else:
            ticks = nice_ticks(top)
            plt.yticks(ticks, [human_rate(t) for t in ticks])
            plt.ylim(0, max(ticks[-1], 1.0))
        plt.xlim(-span if span > 0 else -self.tick, 0)
        xt = [t for t in nice_ticks(span, 3) if t <= span] if span > 0 else [0.0]
        plt.xticks([-t for t in xt], [ago(t) for t in xt])
        return Text.from_ansi(plt.build(), no_wrap=True, end="")

    def render(self) -> Text:
        return self._text
