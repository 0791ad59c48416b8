"""The drill-down tables: flows of a cluster, hosts among them, packets of a flow.

UI thread only. Each is a LiveTable keyed by the engine's identity for the row (flow
id, address, packet index) so the cursor survives every refresh.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.message import Message

from netmon.core.link import HostRow, PacketInfo
from netmon.core.text import safe_text
from netmon.core.units import duration, human_bytes, si
from netmon.core.values import FlowView, proto_name
from netmon.ui.format import (
    clock,
    end_ellipsis,
    endpoint,
    middle_ellipsis,
)
from netmon.ui.widgets._live_table import Column, LiveTable

#: (FlowQuery sort key, its name), in the order ``s`` cycles through.
FLOW_SORTS: tuple[tuple[str, str], ...] = (
    ("bytes", "bytes"), ("packets", "packets"), ("duration", "duration"),
    ("last_epoch", "last seen"), ("first_epoch", "first seen"), ("outlier", "oddness"),
    ("addr_a", "initiator"), ("addr_b", "responder"), ("port_b", "port"), ("proto", "proto"),
)

#: (HostRow attribute, its name) for the hosts view.
HOST_SORTS: tuple[tuple[str, str], ...] = (
    ("bytes", "bytes"), ("packets", "packets"), ("flows", "flows"), ("peers", "peers"),
    ("ports", "ports"), ("address", "address"),
)


def next_sort(sorts: Sequence[tuple[str, str]], current: str) -> tuple[str, str]:
    keys = [k for k, _ in sorts]
    i = (keys.index(current) + 1) % len(keys) if current in keys else 0
    return sorts[i]


def sort_name(sorts: Sequence[tuple[str, str]], key: str) -> str:
    return dict(sorts).get(key, key)


def short_observer(name: str) -> str:
    """An observation point's name without its kind, for a narrow column:
    "ssh web1:eth0" -> "web1:eth0", "exporter 10.0.0.1/7" -> "10.0.0.1/7"."""
    kind, _, rest = name.partition(" ")
    return rest if rest and kind in ("ssh", "exporter", "live", "collect", "file") else name


def wire_text(text: str, width: int) -> str:
    """Untrusted text in ``width`` cells: escaped, both ends kept ("www.ex…le.com");
    a long text is cut to its ends first, so a 64 KB name costs what a short one does."""
    if len(text) > 4 * width:
        text = text[:2 * width] + text[-2 * width:]
    return middle_ellipsis(safe_text(text), width)


class FlowsTable(LiveTable):
    """One page of flows, keyed by flow id; with ``observers``, a column saying where
    each flow was seen (several SSH hosts, exporters or captures at once)."""

    COLUMNS = (
        Column("proto", "proto", 6),
        Column("addr_a", "initiator", 15, flex=1),
        Column("addr_b", "responder", 15, flex=1),
        Column("server_name", "name", 10, flex=1, max_width=40),
        Column("packets", "pkts", 6, "right"),
        Column("bytes", "bytes", 7, "right"),
        Column("duration", "dur", 6, "right"),
        Column("outlier", "odd", 4, "right"),
    )
    OBSERVER = Column("observer", "seen at", 10, flex=1, max_width=24)
    #: Shown once a flow on the page has a known local process (live capture here).
    PROCESS = Column("process", "process", 8, flex=1, max_width=24)
    #: In place of the name once a flow on the page is a listener connection: what its
    #: first bytes are (class) and the bytes themselves, escaped.
    FIRST_BYTES = Column("first_bytes", "first bytes", 16, flex=2, max_width=60)

    def __init__(self, *, id: str | None = None, observers: bool = False) -> None:
        super().__init__(self._layout(observers, False), id=id)
        self.observers = observers
        self.processes = False
        self.listener = False  # a listener connection was on a page: first bytes shown
        self.flows: dict[int, FlowView] = {}
        self.sort_key = "bytes"
        self.empty_text = "asking the engine…"

    def _layout(self, observers: bool, processes: bool,
                 listener: bool = False) -> tuple[Column, ...]:
        columns = self.COLUMNS
        if listener:
            columns = (*columns[:3], self.FIRST_BYTES, *columns[4:])
        if processes:
            columns = (*columns[:4], self.PROCESS, *columns[4:])
        if observers:
            columns = (*columns[:1], self.OBSERVER, *columns[1:])
        return columns

    class Beyond(Message):
        """A move past the rows this table holds (one page of the list): ``where`` is
        "first", "last", "next" (PgDn on the last row) or "prev" (PgUp on the first);
        the flow list fetches the page it needs."""

        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

    def action_jump(self, where: int) -> None:
        super().action_jump(where)
        self.post_message(self.Beyond("first" if where == 0 else "last"))

    def action_page(self, direction: int) -> None:
        edge = self.cursor == (self.row_count - 1 if direction > 0 else 0)
        super().action_page(direction)
        if edge:
            self.post_message(self.Beyond("next" if direction > 0 else "prev"))

    def show_flows(self, flows: Sequence[FlowView]) -> None:
        if not self.processes and any(f.pid for f in flows):
            self.processes = True
            self.set_columns(self._layout(self.observers, True, self.listener))
        if not self.listener and any(f.listener for f in flows):
            self.listener = True
            self.set_columns(self._layout(self.observers, self.processes, True))
        widths = self._column_widths(self.size.width or 80)
        at = 2 if self.observers else 1  # where the initiator's column is
        wa, wb, wn = widths[at], widths[at + 1], widths[at + 2]
        self.flows = {f.flow_id: f for f in flows}
        rows = []
        for f in flows:
            # Names are wire text: escaped by their parser already, and again here
            # (the last word before the terminal), cut before escaping so a long one
            # costs nothing.
            cells: tuple = (
                proto_name(f.proto),
                middle_ellipsis(endpoint(f.addr_a, f.port_a), wa),
                middle_ellipsis(endpoint(f.addr_b, f.port_b), wb),
                (end_ellipsis(safe_text(f"{f.first_class or '?'}  {f.preview}"[:4 * wn]),
                              wn) if f.listener else wire_text(f.server_name, wn)),
                si(f.packets), human_bytes(f.bytes), duration(f.duration),
                f"{f.outlier:.1f}",
            )
            if self.processes:
                wp = widths[at + 3]
                who = f"{f.process}[{f.pid}]" if f.pid else ""
                cells = (*cells[:4], wire_text(who, wp), *cells[4:])
            if self.observers:
                where = middle_ellipsis(safe_text(short_observer(f.observer)), widths[1])
                cells = (cells[0], where, *cells[1:])
            rows.append((f.flow_id, cells))
        self.set_rows(rows)

    def on_resize(self, event) -> None:
        super().on_resize(event)
        self.show_flows(list(self.flows.values()))


class HostsTable(LiveTable):
    """Hosts among a flow list's flows, keyed by address."""

    COLUMNS = (
        Column("address", "host", 16, flex=1, max_width=46),
        Column("name", "name", 10, flex=1, max_width=40),
        Column("flows", "flows", 6, "right"),
        Column("peers", "peers", 6, "right"),
        Column("ports", "ports", 6, "right"),
        Column("packets", "pkts", 7, "right"),
        Column("bytes", "bytes", 8, "right"),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)
        self.hosts: tuple[HostRow, ...] = ()
        self.sort_key = "bytes"
        self.empty_text = "asking the engine…"

    def show_hosts(self, hosts: Sequence[HostRow]) -> None:
        self.hosts = tuple(hosts)
        key = self.sort_key
        ordered = sorted(self.hosts, key=lambda h: (getattr(h, key), h.address),
                         reverse=self.sort_descending)
        wn = self._column_widths(self.size.width or 80)[1]
        self.set_rows([(h.address, (safe_text(h.address), wire_text(h.name, wn), si(h.flows),
                                    si(h.peers), si(h.ports), si(h.packets),
                                    human_bytes(h.bytes)))
                       for h in ordered])


class PacketsTable(LiveTable):
    """The retained packets of one flow, keyed by packet index."""

    COLUMNS = (
        Column("index", "#", 7, "right"),
        Column("time", "time", 12),
        Column("offset", "+time", 8, "right"),
        Column("direction", "dir", 3),
        Column("size", "size", 6, "right"),
        Column("flags", "flags", 10, flex=1),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)
        self.empty_text = "asking the engine…"

    def show_packets(self, packets: Sequence[PacketInfo], start: float) -> None:
        rows = []
        for p in packets:
            arrow = Text("→" if p.direction > 0 else "←")
            rows.append((p.index, (str(p.index), clock(p.ts), duration(p.ts - start), arrow,
                                   str(p.size), safe_text(p.flags))))
        self.set_rows(rows)
