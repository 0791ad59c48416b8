"""Listening sockets for the sources that serve (the listener's TCP ports, the
collector's UDP port), bound with the reasons a bind fails as one clear line.

Runs on the main thread: the sources bind in their constructors, so "port in use"
fails before anything starts; the reactor thread later adopts the bound sockets.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from netmon.core.errors import EXIT_LISTEN, SourceError

#: Kernel accept queue per port: bursts of connects wait there, not in SYN retries.
BACKLOG = 1024


def _unprivileged_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1024


def bind_listening_socket(host: str, port: int, backlog: int = BACKLOG, *,
                          udp: bool = False) -> socket.socket:
    """A non-blocking listening socket on (host, port) -- TCP, or UDP with ``udp`` --
    or a one-line SourceError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    if udp:
        where = f"udp {where}"
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp:  # (a UDP port must not be shared with another collector)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        sock.bind((host, port))
        if not udp:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use (choose another, or stop what holds it)"
        elif exc.errno == errno.EACCES and 0 < port < _unprivileged_start():
            why = (f"ports below {_unprivileged_start()} need root or CAP_NET_BIND_SERVICE "
                   "(choose a port >= 1024)")
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "no such address on this machine"
        else:
            why = exc.strerror or str(exc)
        raise SourceError(f"cannot listen on {where}: {why}", EXIT_LISTEN) from None
    return sock
