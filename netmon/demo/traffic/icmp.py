"""ICMP traffic behaviour: ``icmp``, echo requests like ``ping -i``.

Sent on a raw ICMP socket (root or CAP_NET_RAW) or else an unprivileged ping socket;
when neither is permitted :meth:`_Icmp.start` raises OSError and
:func:`~netmon.demo.traffic.run.start_traffic` skips the class with a note in
:attr:`TrafficStats.notes`. :data:`ICMP_BEHAVIOURS` maps the class name to it.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from netmon.demo.traffic.behaviour import Behaviour


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class _RawReader:
    """Drains a raw ICMP socket (the kernel answers the echoes; replies are not needed)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        try:
            while True:
                self.sock.recv(65536)
        except OSError:
            pass

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "icmp"


def _icmp_socket() -> socket.socket:
    """A raw ICMP socket (root or CAP_NET_RAW), else an unprivileged ping socket (allowed
    when net.ipv4.ping_group_range covers our group); OSError when neither is."""
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)


class _Icmp(Behaviour):
    """Echo requests like ``ping -i``, from raw ICMP sockets or ping sockets."""

    def start(self) -> None:
        self.socks: list[socket.socket] = []
        count = self.n(3)
        for i in range(count):
            sock = _icmp_socket()
            self.socks.append(sock)
            sock.setblocking(False)
            sock.bind((self.client(i), 0))
            reader = _RawReader(sock)
            self.reactor.addReader(reader)
            self._conns.add(reader)
        self.interval = [self.rng.choice([0.2, 0.5, 1.0]) for _ in range(count)]
        self.seq = [0] * count
        self.stats.started[self.name] += count
        self.run_clients(count, self.echo, lambda i: self.interval[i])

    def echo(self, i: int) -> None:
        self.seq[i] += 1
        payload = struct.pack("!d", self.reactor.seconds()) + bytes(range(48))
        head = struct.pack("!BBHHH", 8, 0, 0, 0x4E00 + i, self.seq[i] & 0xFFFF)
        csum = _icmp_checksum(head + payload)
        packet = head[:2] + struct.pack("!H", csum) + head[4:] + payload
        targets = [self.server, f"{self.net}.10"] if i == 0 else [self.server]
        for target in targets:
            try:
                self.socks[i].sendto(packet, (target, 0))
            except OSError:
                self.stats.failed[self.name] += 1

    def close(self) -> None:
        for reader in [c for c in self._conns if isinstance(c, _RawReader)]:
            self.reactor.removeReader(reader)
            self._conns.discard(reader)
        for sock in getattr(self, "socks", []):
            sock.close()
        super().close()


ICMP_BEHAVIOURS: dict[str, type[Behaviour]] = {"icmp": _Icmp}
