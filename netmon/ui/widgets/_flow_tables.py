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
from netmon.core.units import duration, human_bytes, human_rate, si
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
    ("bytes", "bytes"), ("rate", "rate"), ("packets", "packets"), ("duration", "duration"),
    ("last_epoch", "last seen"), ("first_epoch", "first seen"), ("outlier", "oddness"),
    ("addr_a", "initiator"), ("addr_b", "responder"), ("port_b", "port"), ("proto", "proto"),
    ("bytes_a2b", "bytes a→b"), ("bytes_b2a", "bytes b→a"), ("cluster_id", "cluster"),
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


#: A flow's state in a few letters: how an ended one ended, what a live TCP one is at.
_ENDED = {"idle-timeout": "idle", "active-timeout": "active", "evicted": "evicted",
          "end-of-capture": "end"}


def flow_state(f: FlowView) -> str:
    """"idle"/"active"/"evicted"/"end" for an ended flow (why it ended); for a live
    TCP one "rst", "fin", "est" (both sides spoke) or "syn"; "live" otherwise."""
    if f.end_reason:
        return _ENDED.get(f.end_reason, f.end_reason[:7])
    if f.proto == 6:
        if f.rst:
            return "rst"
        if f.fin:
            return "fin"
        return "est" if f.pkts_b2a and f.pkts_a2b else "syn" if f.syn else "live"
    return "live"


class FlowsTable(LiveTable):
    """One page of flows, keyed by flow id. Columns come and go with the width (each
    has a priority) and with what the page holds: where flows were seen (several
    SSH hosts, exporters or captures; one place for every row collapses into
    :attr:`collapsed` for the screen's status line), the local process, a listener
    connection's first bytes, the cluster (lists of all clusters)."""

    COLUMNS = (
        Column("proto", "proto", 5),
        Column("observer", "seen at", 10, flex=1, max_width=24, priority=3),
        # 21: "255.255.255.255:65535" whole; longer ones lose their end, never the middle.
        Column("addr_a", "initiator", 21, flex=2, max_width=47),
        Column("addr_b", "responder", 21, flex=2, max_width=47),
        Column("server_name", "name", 16, flex=2, max_width=40, priority=2),
        Column("first_bytes", "first bytes", 17, flex=4, max_width=60, priority=1),
        Column("process", "process", 8, flex=1, max_width=24, priority=3),
        Column("cluster_id", "cluster", 10, flex=1, max_width=28, priority=4),
        Column("packets", "pkts", 5, "right"),
        Column("bytes", "bytes", 6, "right"),
        Column("bytes_a2b", "a→b", 6, "right", priority=6),
        Column("bytes_b2a", "b→a", 6, "right", priority=6),
        Column("rate", "rate", 8, "right", priority=5),
        Column("duration", "dur", 6, "right", priority=2),
        Column("last_epoch", "last seen", 12, priority=7),
        Column("state", "state", 6, priority=5),
        Column("outlier", "odd", 4, "right", priority=8),
    )

    def __init__(self, *, id: str | None = None, observers: bool = False,
                 clusters: bool = False) -> None:
        super().__init__(self.COLUMNS, id=id)
        self.observers = observers
        self.clusters = clusters  # flows of every cluster: say which each is in
        self.processes = False
        self.listener = False  # a listener connection was on a page: first bytes shown
        self.collapsed = ""
        """What a column holding one value on every row says instead ("seen at X")."""
        self.flows: dict[int, FlowView] = {}
        self.sort_key = "bytes"
        self.empty_text = "asking the engine…"

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

    def _hidden_for(self, flows: Sequence[FlowView]) -> frozenset[str]:
        self.processes = self.processes or any(f.pid for f in flows)
        self.listener = self.listener or any(f.listener for f in flows)
        places = {f.observer for f in flows}
        one_place = self.observers and len(places) == 1
        self.collapsed = f"seen at {short_observer(next(iter(places)))}" if one_place else ""
        hidden = {"first_bytes" if not self.listener else "server_name"}
        if not self.observers or one_place:
            hidden.add("observer")
        if not self.processes:
            hidden.add("process")
        if not self.clusters:
            hidden.add("cluster_id")
        return frozenset(hidden)

    def show_flows(self, flows: Sequence[FlowView]) -> None:
        self.hide_columns(self._hidden_for(flows))
        width = dict(zip((c.key for c in self.COLUMNS),
                         self._column_widths(self.size.width or 80), strict=True))
        self.flows = {f.flow_id: f for f in flows}
        rows = []
        for f in flows:
            # Names are wire text: escaped by their parser already, and again here
            # (the last word before the terminal), cut before escaping so a long one
            # costs nothing.
            who = f"{f.process}[{f.pid}]" if f.pid else ""
            cells: list[str | Text] = [
                proto_name(f.proto),
                middle_ellipsis(safe_text(short_observer(f.observer)), width["observer"]),
                end_ellipsis(endpoint(f.addr_a, f.port_a), width["addr_a"]),
                end_ellipsis(endpoint(f.addr_b, f.port_b), width["addr_b"]),
                wire_text(f.server_name, width["server_name"]),
                end_ellipsis(safe_text(f"{f.first_class or '?'}  {f.preview}"
                                       [:4 * width["first_bytes"] + 8]),
                             width["first_bytes"]) if f.listener else "",
                wire_text(who, width["process"]),
                end_ellipsis(f"{f.cluster_id} {safe_text(f.cluster_label, 40)}"
                             if f.cluster_id is not None and f.cluster_id >= 0 else "-",
                             width["cluster_id"]),
                si(f.packets), human_bytes(f.bytes), human_bytes(f.bytes_a2b),
                human_bytes(f.bytes_b2a), human_rate(f.rate), duration(f.duration),
                clock(f.last_epoch), flow_state(f), f"{f.outlier:.1f}",
            ]
            if f.end_reason:  # an ended flow, kept: listed, greyed
                cells = [Text(c, "dim") if isinstance(c, str) else c for c in cells]
            rows.append((f.flow_id, tuple(cells)))
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
