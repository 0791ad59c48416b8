"""The main screen: header, the live cluster table, the per-cluster rate chart.

UI thread only. The table and the chart change only when a newer snapshot is shown
(paused views keep theirs while the header counts what is pending).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer

from netmon.core.link import ExportRequest, FlowQuery, PacketExportRequest
from netmon.ui.screens._base import NetmonScreen
from netmon.ui.screens.flow_list import FlowsScreen
from netmon.ui.screens.sort_menu import SortMenu
from netmon.ui.widgets import (
    CLUSTER_SORTS,
    UNCLUSTERED,
    ClusterTable,
    FilterBar,
    LiveTable,
    RateChart,
    ViewState,
    chart_clusters,
    line_colors,
)


class MainScreen(NetmonScreen):
    """Clusters and their rates; Enter opens a cluster's flows."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: runs as the key arrives, so keys typed right after it reach the bar
        Binding("slash,f3", "filter", "Filter", priority=True),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("f6,o", "sort_menu", "Sort by…", show=False),
        Binding("w", "write_packets", "Write pcapng", show=False),
    ]
    AUTO_FOCUS = "ClusterTable"

    def __init__(self) -> None:
        super().__init__(id="main")
        self._shown_seq = -1

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield ClusterTable(id="clusters")
        yield RateChart(id="chart")
        yield FilterBar()
        yield Footer(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "back"  # nothing behind the main screen

    def show_view(self, view: ViewState) -> None:
        super().show_view(view)
        snap = view.shown
        if snap is None or snap.seq == self._shown_seq:
            return
        self._shown_seq = snap.seq
        table = self.query_one(ClusterTable)
        # The chart's lines in colours of their own; their rows' IDs in the same ones.
        table.slots = line_colors([c.cluster_id for c in chart_clusters(snap.clusters)])
        table.show_clusters(snap.clusters, snap.unclustered)
        self.query_one(RateChart).show_clusters(snap.clusters, snap.history_times, snap.clock)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        table = self.query_one(ClusterTable)
        cluster = next((c for c in table.clusters if c.cluster_id == event.key), None)
        if cluster is not None:
            self.app.push_screen(FlowsScreen(cluster))
        elif event.key == UNCLUSTERED:
            self.notify("traffic of flows in no cluster shown: the clusterer is still "
                        "learning, or has not placed them yet (/ lists flows by filter)",
                        timeout=4)

    def action_sort(self) -> None:
        name = self.query_one(ClusterTable).cycle_sort()
        self.notify(f"clusters sorted by {name}", timeout=2)

    def on_live_table_header_clicked(self, event: LiveTable.HeaderClicked) -> None:
        if event.key in dict(CLUSTER_SORTS):
            self._sorted(str(event.key))
        else:
            self.notify(f"clusters do not sort by {event.key}", timeout=2)

    def action_sort_menu(self) -> None:
        table = self.query_one(ClusterTable)
        self.app.push_screen(SortMenu(CLUSTER_SORTS, table.sort_key, table.sort_descending),
                             lambda key: self._sorted(key) if key else None)

    def _sorted(self, key: str) -> None:
        self.notify(f"clusters sorted by {self.query_one(ClusterTable).sort_by(key)}",
                    timeout=2)

    def action_reverse(self) -> None:
        table = self.query_one(ClusterTable)
        table.sort_descending = not table.sort_descending
        table.show_clusters(table.clusters, table.unclustered, force=True)
        way = "descending" if table.sort_descending else "ascending"
        self.notify(f"clusters sorted {way}", timeout=2)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open("")

    def on_filter_bar_applied(self, event: FilterBar.Applied) -> None:
        if event.value:
            self.app.push_screen(FlowsScreen(None, event.value))

    def export_request(self) -> ExportRequest:
        selected = self.query_one(ClusterTable).cursor_key
        return ExportRequest(self.netmon.export_dir, FlowQuery(),
                             cluster_id=selected if isinstance(selected, int) else None)

    def packets_request(self) -> PacketExportRequest | str:
        selected = self.query_one(ClusterTable).cursor_key
        if not isinstance(selected, int):
            return "no cluster under the cursor: nothing to write"
        return PacketExportRequest(self.netmon.export_dir, cluster_id=selected)
