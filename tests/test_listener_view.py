"""A listener connection's flow view says it is one and carries what the listener
knows of its first bytes (class, escaped preview); a captured flow that later takes
the same table slot does not inherit them."""

from __future__ import annotations

import ipaddress

from netmon.core.link import no_packets_reason
from netmon.core.values import PROTO_TCP, ConnectionRecord
from netmon.flows.table import FlowTable


def record(port: int, start: float, cls: str, preview: str) -> ConnectionRecord:
    return ConnectionRecord(start=start, end=start + 1, peer=ipaddress.ip_address(
        "10.0.0.9").packed, peer_port=port, local=ipaddress.ip_address("10.0.0.1").packed,
        local_port=8080, bytes_in=20, bytes_out=0, pkts_in=2, pkts_out=0,
        end_reason="client-closed", first_class=cls, preview=preview)


def test_listener_flows_carry_class_and_preview_and_slots_forget_them() -> None:
    t = FlowTable(idle_timeout=5)
    t.add_connections([record(50000, 100.0, "http", "GET / HTTP/1.1\\r\\n"),
                       record(50001, 100.0, "binary", "\\x00\\x01")])
    views = {v.port_a: v for v in t.views(t.live_slots())}
    assert views[50000].listener and views[50000].first_class == "http"
    assert views[50000].preview == "GET / HTTP/1.1\\r\\n"
    assert views[50001].first_class == "binary"
    assert "listener" in no_packets_reason(views[50000])
    # The flows end; a captured flow reuses a slot and is not a listener flow.
    t.expire(1000.0)
    t.add_packets([(1001.0, 60, PROTO_TCP, ipaddress.ip_address("10.0.0.5").packed, 1234,
                    ipaddress.ip_address("10.0.0.6").packed, 80, 0x02)])
    (view,) = t.views(t.live_slots())
    assert not view.listener and view.first_class == "" and not no_packets_reason(view)
