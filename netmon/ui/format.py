"""Pure formatting helpers for the screen: numbers, times, sparklines, endpoints.

No Textual, no I/O; runs wherever it is called (the UI thread in practice). Every
piece of text that comes from outside netmon (packet dissections, host and interface
names, file names, error messages of tools) goes through
:func:`netmon.core.text.safe_text` before it is drawn, so escape sequences and other
control characters never reach the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from netmon.core.text import safe_text
from netmon.core.values import FlowView, proto_name

#: Eight levels of a unicode sparkline, lowest first.
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def grouped(n: int) -> str:
    """An integer with thousands separators: 1234567 -> "1,234,567"."""
    return f"{n:,}"


def clock(epoch: float) -> str:
    """Local wall-clock time with milliseconds: "14:03:27.123"."""
    if epoch <= 0:
        return "-"
    whole = int(epoch)
    ms = round((epoch - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%H:%M:%S", time.localtime(whole)) + f".{ms:03d}"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as unicode blocks scaled to their own maximum.

    Shorter histories are padded on the left with spaces; an all-zero history is a
    flat line of the lowest block, so an idle cluster still shows that it exists.
    """
    if width <= 0:
        return ""
    tail = list(values[-width:])
    if not tail:
        return " " * width
    top = max(tail)
    last = len(SPARK_BLOCKS) - 1
    if top <= 0:
        body = SPARK_BLOCKS[0] * len(tail)
    else:
        body = "".join(SPARK_BLOCKS[min(last, max(0, int(v / top * last + 0.5)))]
                       for v in tail)
    return body.rjust(width)


def endpoint(addr: str, port: int) -> str:
    """"10.0.0.1:443", "[2001:db8::1]:443", or the bare address when there is no port."""
    a = safe_text(addr)
    if not port:
        return a
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def middle_ellipsis(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters keeping both ends ("2001:db8…:1:443")."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def end_ellipsis(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters keeping its start ("GET /index.h…"): for
    what is read from the front, like a connection's first bytes."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[:width - 1] + "…"


def top_ports(ports: Sequence[tuple[int, int]], limit: int = 4) -> str:
    """The busiest server ports of a cluster: ((443, 10), (80, 2)) -> "443,80"."""
    return ",".join(str(p) for p, _ in ports[:limit]) or "-"


def percent(share: float) -> str:
    """A 0..1 share as a percentage that fits 4 columns: "12%", "0.4%", "100%"."""
    p = max(share, 0.0) * 100
    if 0 < p < 9.95:
        return f"{p:.1f}%"
    return f"{p:.0f}%"


def flow_title(flow: FlowView) -> str:
    """"TCP 10.0.0.1:51234 → 192.0.2.1:443" (initiator first)."""
    return (f"{proto_name(flow.proto)} {endpoint(flow.addr_a, flow.port_a)} → "
            f"{endpoint(flow.addr_b, flow.port_b)}")


def flow_filter(flow: FlowView) -> str:
    """The filter-language expression that selects this flow's endpoints."""
    parts = [f"proto {proto_name(flow.proto).lower()}", f"host {flow.addr_a}",
             f"host {flow.addr_b}"]
    parts += [f"port {p}" for p in sorted({flow.port_a, flow.port_b}) if p]
    return " and ".join(parts)
