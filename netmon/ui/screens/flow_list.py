"""The flows of one cluster (or of all clusters, filtered), with a hosts view.

UI thread only. The rows come from the engine a page at a time (FlowQuery ->
FlowsListed); while the view is live the page is asked for again about once a second,
one question in flight at a time, and answers to superseded questions are ignored.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from netmon.core.link import ExportRequest, FlowQuery, PacketExportRequest
from netmon.core.text import safe_text
from netmon.core.values import ClusterView
from netmon.ui.format import grouped
from netmon.ui.messages import FlowsListed, HostsListed
from netmon.ui.screens._base import NetmonScreen, Refresher
from netmon.ui.screens.flow_detail import FlowScreen
from netmon.ui.screens.sort_menu import SortMenu
from netmon.ui.widgets import (
    FLOW_SORTS,
    HOST_SORTS,
    FilterBar,
    FlowsTable,
    HostsTable,
    LiveTable,
    ViewState,
    next_sort,
    sort_name,
)

#: Flows per page asked of the engine.
PAGE = 200


class FlowsScreen(NetmonScreen):
    """A sortable, filterable page of flows; ``h`` switches to the hosts among them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: runs as the key arrives, so keys typed right after it reach the bar
        Binding("slash,f3", "filter", "Filter", priority=True),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("f6,o", "sort_menu", "Sort by…", show=False),
        Binding("h", "hosts", "Hosts"),
        Binding("w", "write_packets", "Write pcapng", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
    ]

    def __init__(self, cluster: ClusterView | None, filter: str = "") -> None:
        super().__init__()
        self.cluster = cluster
        self.query_spec = FlowQuery(cluster_id=cluster.cluster_id if cluster else None,
                                    filter=filter, limit=PAGE)
        self.hosts_mode = False
        self.total = 0
        self.error = ""
        self._cursor_to = ""  # where the cursor goes on the next page: "top", "bottom"
        self.refresher = Refresher()
        self.context = (f"cluster {cluster.cluster_id} › flows" if cluster else "all flows")

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield Static(id="flows-status", classes="status")
        # Flows seen at several places (SSH hosts, exporters): say where, per row.
        shown = self.netmon.view.shown
        several = shown is not None and (len(shown.sources) > 1 or any(
            s.collector is not None for s in shown.sources))
        yield FlowsTable(id="flows", observers=several, clusters=self.cluster is None)
        yield HostsTable(id="hosts")
        yield FilterBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(HostsTable).display = False
        self.query_one(FlowsTable).focus()
        self._show_status()
        self.ask()

    # ------------------------------------------------------------ engine
    def ask(self) -> None:
        """Ask the engine for the current page (flows or hosts)."""
        self.refresher.asked()
        if self.hosts_mode:
            self.netmon.engine.list_hosts(self.query_spec, self)
        else:
            self.netmon.engine.list_flows(self.query_spec, self)

    def show_view(self, view: ViewState) -> None:
        super().show_view(view)
        if not view.paused and self.refresher.due():
            self.ask()

    def on_flows_listed(self, message: FlowsListed) -> None:
        page = message.page
        if page.query != self.query_spec or self.hosts_mode:
            return  # an answer to a question no longer asked
        self.refresher.answered()
        self.error = page.error
        table = self.query_one(FlowsTable)
        if not page.error:
            self.total = page.total
            table.empty_text = "no flows match" if self.query_spec.filter else "no flows"
            table.show_flows(page.flows)
            if self._cursor_to and table.row_count:  # a page fetched by End, PgDn...
                table.cursor = 0 if self._cursor_to == "top" else table.row_count - 1
                self._cursor_to = ""
        else:  # the question had no answer: say so where the rows would be
            table.empty_text = f"no answer: {safe_text(page.error, 200)}"
        self._show_status()

    def on_hosts_listed(self, message: HostsListed) -> None:
        page = message.page
        if page.query != self.query_spec or not self.hosts_mode:
            return
        self.refresher.answered()
        self.error = page.error
        table = self.query_one(HostsTable)
        if not page.error:
            self.total = page.total
            table.empty_text = "no hosts"
            table.show_hosts(page.hosts)
        else:
            table.empty_text = f"no answer: {safe_text(page.error, 200)}"
        self._show_status()

    def _requery(self, **changes: object) -> None:
        self.query_spec = replace(self.query_spec, **changes)
        self._show_status()
        self.ask()

    # ------------------------------------------------------------ status line
    def _show_status(self) -> None:
        """"cluster 3 · flows 1-200 of 1,234 · by bytes ▼ · filter port 53 · label",
        most useful first, since a narrow terminal cuts the end."""
        q = self.query_spec
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.error:
            line.append(safe_text(self.error), "bold reverse")
            line.append(" · ")
        line.append(f"cluster {self.cluster.cluster_id}" if self.cluster else "all clusters",
                    "bold")
        what = "hosts" if self.hosts_mode else "flows"
        if self.total and not self.hosts_mode and self.total > q.limit:
            last = min(q.offset + q.limit, self.total)
            line.append(f" · {what} {q.offset + 1}-{last} of {grouped(self.total)}")
        else:
            line.append(f" · {grouped(self.total)} {what}")
        table = self._table()
        sorts = HOST_SORTS if self.hosts_mode else FLOW_SORTS
        arrow = "▼" if table.sort_descending else "▲"
        line.append(f" · by {sort_name(sorts, table.sort_key)} {arrow}")
        if q.filter:
            line.append(" · filter ")
            line.append(safe_text(q.filter), "bold")
        if not self.hosts_mode and self.query_one(FlowsTable).collapsed:
            line.append(" · " + self.query_one(FlowsTable).collapsed)
        if self.cluster is not None:
            line.append(" · " + safe_text(self.cluster.label, 40))
        status = self.query_one("#flows-status", Static)
        status.set_class(bool(self.error), "-error")
        status.update(line)

    def _table(self) -> LiveTable:
        return self.query_one(HostsTable) if self.hosts_mode else self.query_one(FlowsTable)

    # ------------------------------------------------------------ keys
    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        if isinstance(event.table, HostsTable):
            host = str(event.key)
            term = f"host {host}"
            current = self.query_spec.filter
            new = term if not current else (current if term in current
                                             else f"{current} and {term}")
            self.action_hosts()
            self._requery(filter=new, offset=0)
            return
        flow = self.query_one(FlowsTable).flows.get(event.key)  # type: ignore[arg-type]
        if flow is not None:
            self.app.push_screen(FlowScreen(flow))

    def action_sort(self) -> None:
        table = self._table()
        self._sort_by(next_sort(HOST_SORTS if self.hosts_mode else FLOW_SORTS,
                                table.sort_key)[0])

    def _sort_by(self, key: str) -> None:
        """Sort by ``key`` (the natural direction: largest, latest first; addresses and
        names from the start); the key already sorted by turns round instead."""
        table = self._table()
        if key == table.sort_key:
            table.sort_descending = not table.sort_descending
        else:
            table.sort_key = key
            table.sort_descending = key not in ("addr_a", "addr_b", "address", "proto",
                                                "port_b", "cluster_id")
        self._resort(sort_name(HOST_SORTS if self.hosts_mode else FLOW_SORTS, key))

    def on_live_table_header_clicked(self, event: LiveTable.HeaderClicked) -> None:
        sorts = dict(HOST_SORTS if self.hosts_mode else FLOW_SORTS)
        if event.key in sorts:
            self._sort_by(str(event.key))
        else:
            self.notify(f"this list does not sort by {str(event.key).replace('_', ' ')}",
                        timeout=2)

    def action_sort_menu(self) -> None:
        table = self._table()
        self.app.push_screen(SortMenu(HOST_SORTS if self.hosts_mode else FLOW_SORTS,
                                      table.sort_key, table.sort_descending),
                             self._sort_chosen)

    def _sort_chosen(self, key: str | None) -> None:
        if key is not None:
            self._sort_by(key)

    def action_reverse(self) -> None:
        table = self._table()
        table.sort_descending = not table.sort_descending
        self._resort(sort_name(HOST_SORTS if self.hosts_mode else FLOW_SORTS, table.sort_key))

    def _resort(self, name: str) -> None:
        table = self._table()
        table.refresh()
        if self.hosts_mode:
            hosts = self.query_one(HostsTable)
            hosts.show_hosts(hosts.hosts)
            self._show_status()
        else:
            self._requery(sort=table.sort_key, descending=table.sort_descending, offset=0)
        arrow = "descending" if table.sort_descending else "ascending"
        self.notify(f"sorted by {name}, {arrow}", timeout=2)

    def action_hosts(self) -> None:
        self.hosts_mode = not self.hosts_mode
        flows, hosts = self.query_one(FlowsTable), self.query_one(HostsTable)
        flows.display = not self.hosts_mode
        hosts.display = self.hosts_mode
        (hosts if self.hosts_mode else flows).focus()
        self.context = ((f"cluster {self.cluster.cluster_id}" if self.cluster else "all flows")
                        + (" › hosts" if self.hosts_mode else " › flows"))
        self.query_one("HeaderBar").set_context(self.context)
        self.total = 0
        self._requery(offset=0)

    def action_page(self, step: int) -> None:
        q = self.query_spec
        offset = q.offset + step * q.limit
        if self.hosts_mode or offset < 0 or (step > 0 and offset >= self.total):
            self.app.bell()
            return
        self._requery(offset=offset)

    def on_flows_table_beyond(self, event: FlowsTable.Beyond) -> None:
        """End, Home, PgDn on the last row, PgUp on the first: across pages, so the
        keys reach the whole list, not only the page held."""
        q, where = self.query_spec, event.where
        last_page = max(self.total - 1, 0) // q.limit * q.limit
        offset = {"first": 0, "last": last_page, "next": q.offset + q.limit,
                  "prev": q.offset - q.limit}[where]
        if offset == q.offset or offset < 0 or offset > last_page:
            return  # on this page already, or no page there: the table moved itself
        self._cursor_to = "top" if where in ("first", "next") else "bottom"
        self._requery(offset=offset)

    def action_filter(self) -> None:
        self.query_one(FilterBar).open(self.query_spec.filter)

    def on_filter_bar_applied(self, event: FilterBar.Applied) -> None:
        if event.value != self.query_spec.filter:
            self._requery(filter=event.value, offset=0)

    def export_request(self) -> ExportRequest:
        return ExportRequest(self.netmon.export_dir, self.query_spec,
                             cluster_id=self.query_spec.cluster_id)

    def packets_request(self) -> PacketExportRequest | str:
        if self.query_spec.cluster_id is None:
            return ("w writes a whole cluster's packets: this list is not one cluster; "
                    "open a flow to write its packets")
        return PacketExportRequest(self.netmon.export_dir, cluster_id=self.query_spec.cluster_id)
