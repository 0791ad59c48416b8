"""Made-up dissections for the UI: a real frame (Ethernet, IPv4 or IPv6, TCP/UDP/ICMP,
a request with escape sequences in it) and a protocol tree whose byte ranges point
into it, as :func:`netmon.ingest.dissect.parse_pdml` would give.

Pure Python, any thread. :class:`netmon.testing.fake_engine.FakeLink` answers
``dissect`` with it, so the packet screen (tree, hex pane, n/p) is exercised without
tshark. The packet's index shows in the frame (IP identification, TCP sequence), so
two packets of a flow differ in their bytes and their tree.
"""

from __future__ import annotations

from netmon.core.link import Dissection, DissectNode
from netmon.core.values import PROTO_ICMP, PROTO_TCP, FlowView
from netmon.testing.frames import (
    DEFAULT_DST_MAC,
    DEFAULT_SRC_MAC,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ethernet,
    icmp,
    ipv4,
    ipv6,
    tcp,
    udp,
)

#: What the made-up client sends: a terminal escape (clear screen, retitle, bell) in
#: the request line, which must reach the screen escaped, never raw.
REQUEST = b"GET /\x1b[2J\x1b]0;pwned\x07 HTTP/1.1\r\nHost: example.test\r\n\r\n"


def _n(label: str, start: int = -1, length: int = 0,
       *children: DissectNode) -> DissectNode:
    return DissectNode(label, start, length, tuple(children))


def _shown(line: bytes) -> str:
    """A request line as tshark's showname has it: CR LF written as ``\\r\\n``."""
    return line.decode("latin-1").replace("\r", "\\r").replace("\n", "\\n")


def fake_dissection(flow: FlowView, index: int) -> Dissection:
    """Packet ``index`` of ``flow``: its frame and tree (a2b, PSH+ACK for TCP)."""
    src, dst = flow.addr_a, flow.addr_b
    v6 = ":" in src or ":" in dst
    if v6:  # the fake world pairs IPv4 clients with IPv6 servers: map them
        src, dst = (a if ":" in a else f"::ffff:{a}" for a in (src, dst))
    payload = REQUEST
    if flow.proto == PROTO_TCP:
        seq = 1 + index * 100
        l4 = tcp(flow.port_a, flow.port_b, flags=0x018, seq=seq, ack=1, payload=payload)
        hlen = 20
        l4_node = (
            f"Transmission Control Protocol, Src Port: {flow.port_a}, "
            f"Dst Port: {flow.port_b}, Seq: {seq}, Len: {len(payload)}",
            [(f"Source Port: {flow.port_a}", 0, 2),
             (f"Destination Port: {flow.port_b}", 2, 2),
             (f"Sequence Number: {seq}", 4, 4),
             ("Flags: 0x018 (PSH, ACK)", 12, 2),
             (f"TCP payload ({len(payload)} bytes)", hlen, len(payload))])
    elif flow.proto == PROTO_ICMP:
        l4 = icmp(8, 0, index.to_bytes(4, "big") + payload)
        hlen = 8
        l4_node = ("Internet Control Message Protocol",
                   [("Type: 8 (Echo (ping) request)", 0, 1), ("Code: 0", 1, 1),
                    ("Checksum", 2, 2), (f"Sequence Number (BE): {index}", 6, 2)])
    else:
        l4 = udp(flow.port_a, flow.port_b, payload)
        hlen = 8
        l4_node = (f"User Datagram Protocol, Src Port: {flow.port_a}, "
                   f"Dst Port: {flow.port_b}",
                   [(f"Source Port: {flow.port_a}", 0, 2),
                    (f"Destination Port: {flow.port_b}", 2, 2),
                    (f"Length: {len(l4)}", 4, 2)])
    proto = flow.proto if flow.proto != PROTO_ICMP or not v6 else 58
    if v6:
        net = ipv6(src, dst, proto, l4)
        ip_node = _n(f"Internet Protocol Version 6, Src: {src}, Dst: {dst}",
                     14, 40, _n(f"Payload Length: {len(l4)}", 18, 2),
                     _n(f"Next Header: {proto}", 20, 1), _n("Hop Limit: 64", 21, 1),
                     _n(f"Source Address: {src}", 22, 16),
                     _n(f"Destination Address: {dst}", 38, 16))
        frame = ethernet(net, ETHERTYPE_IPV6)
        ethertype = "Type: IPv6 (0x86dd)"
    else:
        net = ipv4(src, dst, proto, l4, ident=index & 0xFFFF, df=True)
        ip_node = _n(f"Internet Protocol Version 4, Src: {src}, Dst: {dst}",
                     14, 20, _n(f"Total Length: {len(net)}", 16, 2),
                     _n(f"Identification: 0x{index & 0xFFFF:04x} ({index & 0xFFFF})", 18, 2),
                     _n("Time to Live: 64", 22, 1), _n(f"Protocol: {proto}", 23, 1),
                     _n(f"Source Address: {src}", 26, 4),
                     _n(f"Destination Address: {dst}", 30, 4))
        frame = ethernet(net, ETHERTYPE_IPV4)
        ethertype = "Type: IPv4 (0x0800)"
    l4_at = len(frame) - len(l4)
    at = len(frame) - len(payload)
    label, fields = l4_node
    transport = _n(label, l4_at, hlen,
                   *(_n(text, l4_at + off, size) for text, off, size in fields))
    lines = []
    for line in payload.split(b"\r\n")[:-1]:
        lines.append(_n(_shown(line + b"\r\n"), at, len(line) + 2))
        at += len(line) + 2
    app_at = len(frame) - len(payload)
    if flow.proto == PROTO_TCP:
        app = _n("Hypertext Transfer Protocol", app_at, len(payload), *lines,
                 _n("[Full request URI: http://example.test/]"))
    else:
        app = _n(f"Data ({len(payload)} bytes)", app_at, len(payload),
                 _n(f"Data: {payload.hex()}", app_at, len(payload)))
    tree = (
        _n(f"Frame {index}: {len(frame)} bytes on wire ({len(frame) * 8} bits), "
           f"{len(frame)} bytes captured", 0, len(frame),
           _n(f"Frame Length: {len(frame)} bytes"), _n("Encapsulation type: Ethernet (1)")),
        _n(f"Ethernet II, Src: {DEFAULT_SRC_MAC}, Dst: {DEFAULT_DST_MAC}", 0, 14,
           _n(f"Destination: {DEFAULT_DST_MAC}", 0, 6),
           _n(f"Source: {DEFAULT_SRC_MAC}", 6, 6), _n(ethertype, 12, 2)),
        ip_node,
        transport,
        app,
    )
    return Dissection(flow.flow_id, index, tree, frame)
