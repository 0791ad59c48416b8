"""UDP traffic behaviours: ``dns`` (request/response, one source port per lookup) and
``cbr`` (constant-bitrate, RTP-like, one way).

:data:`UDP_BEHAVIOURS` maps each class name to its behaviour.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``).
"""

from __future__ import annotations

import random
import struct
from typing import Any

from twisted.internet import defer, protocol

from netmon.demo.traffic.behaviour import Behaviour, Quiet


# --------------------------------------------------------------------------- DNS
def _dns_query(rng: random.Random) -> bytes:
    labels = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
              for _ in range(rng.randint(1, 3))] + [rng.choice(["com", "net", "org", "test"])]
    qname = b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\0"
    qtype = rng.choice([1, 1, 1, 28, 15])
    return struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", qtype, 1)


class _DnsServer(Quiet, protocol.DatagramProtocol):
    """Answers each query after 0-5 ms with 1-4 A records (a well-formed DNS reply)."""

    def __init__(self, owner: Behaviour) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        n = self.owner.rng.randint(1, 4)
        answers = b"".join(struct.pack("!HHHIH4s", 0xC00C, 1, 1, 300, 4,
                                       bytes([10, 0, 0, self.owner.rng.randrange(256)]))
                           for _ in range(n))
        reply = data[:2] + struct.pack("!HHHHH", 0x8180, 1, n, 0, 0) + data[12:] + answers
        self.owner.later(self.owner.rng.uniform(0, 0.005), self._send, reply, addr)

    def _send(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.write(reply, addr)


class _DnsClient(Quiet, protocol.DatagramProtocol):
    """One resolver socket: sends its queries in turn, each after the previous reply."""

    def __init__(self, owner: Behaviour, queries: list[bytes],
                 server: tuple[str, int]) -> None:
        self.owner, self.queries, self.server = owner, queries, server
        self.done: defer.Deferred = defer.Deferred()

    def startProtocol(self) -> None:
        self.owner.later(1.0, self.finish)  # timeout
        self._next()

    def _next(self) -> None:
        if not self.queries:
            self.finish()
        elif self.transport is not None:
            self.transport.write(self.queries.pop(0), self.server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self._next()

    def finish(self) -> None:
        if not self.done.called:
            if self.transport is not None:
                self.transport.stopListening()
            self.done.callback(None)


class _Dns(Behaviour):
    """DNS-like UDP request/response: a fresh source port per lookup, ~8 lookups/s."""

    def start(self) -> None:
        self.port = self.listen(self.reactor.listenUDP, _DnsServer(self))
        self.run_clients(self.n(3), self.lookup, lambda i: self.rng.expovariate(8.0))

    def lookup(self, i: int) -> defer.Deferred:
        q = _dns_query(self.rng)
        queries = [q, q[:-4] + struct.pack("!HH", 28, 1)] if self.rng.random() < 0.3 else [q]
        client = _DnsClient(self, queries, (self.server, self.port))
        self.stats.started[self.name] += 1
        lp = self.reactor.listenUDP(0, client, interface=self.client(i))
        self.track(lp)
        client.done.addBoth(lambda _: self.untrack(lp))
        return client.done


# --------------------------------------------------------------------------- CBR
class _Sink(Quiet, protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass


class _Cbr(Behaviour):
    """RTP-like constant bitrate: 172-byte datagrams every 20 ms, one way, per stream."""

    def start(self) -> None:
        self.port = self.listen(self.reactor.listenUDP, _Sink())
        count = self.n(3)
        self.senders = []
        now = self.reactor.seconds()
        for i in range(count):
            lp = self.reactor.listenUDP(0, _Sink(), interface=self.client(i))
            self._ports.append(lp)
            self.senders.append(lp)
        self.stop_at = [now + self.plan.duration * self.rng.uniform(0.6, 1.0)
                        for _ in range(count)]
        self.rtp_seq = [self.rng.randrange(65536) for _ in range(count)]
        self.stats.started[self.name] += count
        self.run_clients(count, self.send, self.gap)

    def send(self, i: int) -> None:
        self.rtp_seq[i] += 1
        head = struct.pack("!BBHII", 0x80, 0, self.rtp_seq[i] & 0xFFFF,
                           (self.rtp_seq[i] * 160) & 0xFFFFFFFF, 0x1234 + i)
        self.senders[i].write(head + b"\xd5" * 160, (self.server, self.port))

    def gap(self, i: int) -> float | None:
        return 0.02 if self.reactor.seconds() < self.stop_at[i] else None


UDP_BEHAVIOURS: dict[str, type[Behaviour]] = {"dns": _Dns, "cbr": _Cbr}
