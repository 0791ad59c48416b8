"""ClusterTable: the main screen's live table of behaviour clusters.

UI thread only. One row per cluster, keyed by its stable cluster ID, so the cursor
stays on a cluster while the rows are re-sorted or updated each tick. The ID is drawn
in the cluster's palette colour, the same colour as its line in the rate chart. A last
row, keyed :data:`UNCLUSTERED`, holds the traffic in no cluster (the clusterer's
warm-up, flows not placed), so the rows add up to the header's rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text

from netmon.core.text import safe_text
from netmon.core.units import human_rate, si
from netmon.core.values import ClusterView, Unclustered
from netmon.ui.format import (
    percent,
    sparkline,
    top_ports,
)
from netmon.ui.themes import PALETTE_SIZE, cluster_colors
from netmon.ui.widgets._live_table import Column, LiveTable

#: (sort key, what the footer calls it), in the order ``s`` cycles through.
CLUSTER_SORTS: tuple[tuple[str, str], ...] = (
    ("byte_rate", "bytes/s"), ("pkt_rate", "pkt/s"), ("flows", "flows"),
    ("hosts", "hosts"), ("share", "share"), ("flows_total", "flows seen"),
    ("last_active", "last active"), ("cluster_id", "ID"),
)

COLUMNS = (
    Column("cluster_id", "ID", 4, "right"),
    Column("label", "behaviour", 18, flex=3),
    Column("flows", "flows", 5, "right"),
    Column("hosts", "hosts", 5, "right"),
    Column("pkt_rate", "pkt/s", 5, "right"),
    Column("byte_rate", "bytes/s", 9, "right"),
    Column("share", "share", 5, "right"),
    Column("ports", "ports", 6, flex=1, max_width=24),
    Column("history", "history", 8, flex=2, max_width=60),
)


#: The key of the row of traffic in no cluster (not an int: no cluster is under it).
UNCLUSTERED = "unclustered"


def sort_clusters(clusters: Sequence[ClusterView], key: str,
                  descending: bool = True) -> list[ClusterView]:
    """Clusters ordered by ``key`` (ties by ID, so the order is stable tick to tick)."""
    return sorted(clusters, key=lambda c: (getattr(c, key), -c.cluster_id if descending
                                           else c.cluster_id), reverse=descending)


class ClusterTable(LiveTable):
    """Behaviour clusters, one row each, updated in place by cluster ID."""

    DEFAULT_CSS = """
    ClusterTable > .cluster-table--new { color: $accent; text-style: bold; }
    ClusterTable > .cluster-table--odd { color: $warning; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        *LiveTable.COMPONENT_CLASSES, "cluster-table--new", "cluster-table--odd",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.sort_key = "byte_rate"
        self.clusters: tuple[ClusterView, ...] = ()
        self.unclustered = Unclustered()
        self._palette: list[Style] = []
        #: Palette slots of the clusters the chart draws (distinct there); others use
        #: their ID modulo the palette.
        self.slots: dict[int, int] = {}
        self.empty_text = "no clusters yet (/ lists flows by filter)"

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def _restyle(self) -> None:
        self._palette = []
        self.show_clusters(self.clusters, self.unclustered, force=True)

    def palette(self) -> list[Style]:
        """Bold text styles in the theme's cluster colours."""
        if not self._palette:
            colors = cluster_colors(self.app.current_theme)
            self._palette = [Style(color=c.rich_color, bold=True) for c in colors]
        return self._palette

    def cycle_sort(self) -> str:
        """Sort by the next column of :data:`CLUSTER_SORTS`; returns its name."""
        keys = [k for k, _ in CLUSTER_SORTS]
        i = (keys.index(self.sort_key) + 1) % len(keys) if self.sort_key in keys else 0
        return self.sort_by(keys[i])

    def sort_by(self, key: str) -> str:
        """Sort by ``key`` (busiest first; IDs from the lowest); the key already sorted
        by turns round. Returns its name and direction."""
        if key == self.sort_key:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_key = key
            self.sort_descending = key != "cluster_id"
        self.show_clusters(self.clusters, self.unclustered, force=True)
        way = "descending" if self.sort_descending else "ascending"
        return f"{dict(CLUSTER_SORTS)[key]}, {way}"

    def show_clusters(self, clusters: Sequence[ClusterView],
                      unclustered: Unclustered | None = None, force: bool = False) -> None:
        """Show ``clusters`` (one snapshot's), re-sorted, and the traffic in none of
        them last (when there is any); unchanged rows keep their cached lines."""
        self.clusters = tuple(clusters)
        self.unclustered = u = unclustered or Unclustered()
        palette = self.palette()
        new_style = self.get_component_rich_style("cluster-table--new")
        odd_style = self.get_component_rich_style("cluster-table--odd")
        dim = self.get_component_rich_style("live-table--empty")  # muted
        width = self.size.width or 80
        spark_w = self._column_widths(width)[-1] if self._columns else 10
        rows = []
        for c in sort_clusters(self.clusters, self.sort_key, self.sort_descending):
            idle = not c.flows and not c.pkt_rate  # its flows all ended: kept, greyed
            label = Text(safe_text(c.label) or "…", dim if idle else "")
            if idle:
                label.append(f" · idle, {c.flows_total:,} flows", dim)
            if c.new:
                label.append(" new", new_style)
            if c.outliers:
                label.append(f" {c.outliers} odd", odd_style)
            color = palette[self.slots.get(c.cluster_id, c.cluster_id % PALETTE_SIZE)]
            cells = (
                Text(str(c.cluster_id), color),
                label,
                si(c.flows),
                si(c.hosts),
                si(c.pkt_rate),
                human_rate(c.byte_rate),
                percent(c.share),
                top_ports(c.top_ports),
                Text(sparkline(c.history, spark_w), color),
            )
            rows.append((c.cluster_id, cells))
        if u.flows or u.pkt_rate:
            rows.append((UNCLUSTERED, (
                Text("·", dim), Text("not in a cluster (yet)", dim), si(u.flows), Text(""),
                si(u.pkt_rate), human_rate(u.byte_rate), Text(""), Text(""), Text(""))))
        changed = self.set_rows(rows)
        if force and not changed:
            self._cache.clear()
            self.refresh()

    def on_resize(self, event) -> None:
        super().on_resize(event)
        self.show_clusters(self.clusters, self.unclustered)
