"""TCP traffic behaviours: ``bulk`` and ``web`` (HTTP), ``interactive`` (a keystroke
session) and ``scan`` (a connect scan of closed ports).

``bulk`` downloads megabytes, throttled; ``web`` makes many short GETs, some on
keep-alive connections; ``interactive`` types characters that are echoed, with command
output on Enter; ``scan`` probes ports where nothing listens (answered by RST).
:data:`TCP_BEHAVIOURS` maps each class name to its behaviour.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from twisted.internet import defer, protocol, task
from twisted.web import resource, server

from netmon.demo.traffic.behaviour import Behaviour, Quiet


# --------------------------------------------------------------------------- HTTP
class _Files(resource.Resource):
    """``/bulk?size=N&rate=R`` streams N bytes at R bytes/s; ``/page?size=N`` answers at once."""

    isLeaf = True

    def __init__(self, owner: Behaviour) -> None:
        super().__init__()
        self.owner = owner

    def render_GET(self, request: server.Request) -> bytes | int:
        q = parse_qs(urlparse(request.uri.decode()).query)
        size = int(q.get("size", ["1000"])[0])
        request.setHeader(b"content-type", b"application/octet-stream")
        if not request.path.startswith(b"/bulk"):
            return b"x" * size
        request.setHeader(b"content-length", str(size).encode())  # else chunked
        rate = float(q.get("rate", ["4e6"])[0])
        chunk = 32768
        left = [size]

        def send() -> None:
            n = min(chunk, left[0])
            request.write(b"\0" * n)
            left[0] -= n
            if left[0] <= 0:
                loop.stop()
                request.finish()
        loop = task.LoopingCall(send)
        loop.clock = self.owner.reactor
        d = loop.start(chunk / rate)
        d.addErrback(lambda _: None)
        request.notifyFinish().addErrback(lambda _: loop.running and loop.stop())
        return server.NOT_DONE_YET


class _QuietSite(Quiet, server.Site):
    def log(self, request: server.Request) -> None:
        pass


def _site(owner: Behaviour) -> server.Site:
    return _QuietSite(_Files(owner), reactor=owner.reactor)


class _OneShot(Quiet, protocol.ClientFactory):
    """Client factory for one connection; ``done`` fires on close or failure."""

    def __init__(self, owner: Behaviour,
                 make: Callable[[defer.Deferred], protocol.Protocol]) -> None:
        self.owner, self.make = owner, make
        self.done: defer.Deferred = defer.Deferred()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.make(self.done)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)


def _connect(owner: Behaviour, src: str, port: int,
             make: Callable[[defer.Deferred], protocol.Protocol]) -> defer.Deferred:
    f = _OneShot(owner, make)
    owner.reactor.connectTCP(owner.server, port, f, timeout=5, bindAddress=(src, 0))
    return f.done


class _Bulk(Behaviour):
    """Each client downloads 1-12 MB at 1-6 MB/s over HTTP, rests, and downloads again."""

    def start(self) -> None:
        self.port = self.listen(self.reactor.listenTCP, _site(self))
        self.run_clients(self.n(3), self.download, lambda i: self.rng.uniform(0.2, 1.5))

    def download(self, i: int) -> defer.Deferred:
        size = self.rng.randint(1_000_000, 12_000_000)
        rate = self.rng.uniform(1e6, 6e6)
        size = int(min(size, max(200_000, rate * (self.end - self.reactor.seconds()))))
        path = f"/bulk/{self.rng.randrange(10**6)}.bin?size={size}&rate={rate:.0f}"
        self.stats.started[self.name] += 1
        return _connect(self, self.client(i), self.port, lambda d: _HttpClient(self, [path], d))


class _HttpClient(protocol.Protocol):
    """HTTP/1.1 GETs in turn on one connection (keep-alive between them, short pauses);
    bodies are counted, not kept."""

    def __init__(self, owner: Behaviour, paths: list[str], done: defer.Deferred) -> None:
        self.owner, self.paths, self.done = owner, paths, done
        self.head = b""
        self.want = -1  # body bytes still expected; -1 while reading headers

    def connectionMade(self) -> None:
        self.owner.track(self.transport)
        self.request()

    def request(self) -> None:
        path = self.paths.pop(0)
        close = "close" if not self.paths else "keep-alive"
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {self.owner.server}\r\n"
                             f"User-Agent: netmon-trafficgen\r\nConnection: {close}\r\n\r\n"
                             .encode())

    def dataReceived(self, data: bytes) -> None:
        if self.want < 0:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, data = self.head.split(b"\r\n\r\n", 1)
            self.head = b""
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            self.want = int(length.group(1)) if length else 1 << 62  # else: until close
        self.want -= len(data)
        if self.want <= 0:
            self.want = -1
            if self.paths:
                self.owner.later(self.owner.rng.uniform(0.02, 0.3), self.request)

    def connectionLost(self, reason: Any = None) -> None:
        self.owner.untrack(self.transport)
        if not self.done.called:
            self.done.callback(None)


class _Web(Behaviour):
    """Short HTTP GETs of small pages, ~3/s per client: mostly one per connection, some
    keep-alive connections carrying 2-6 requests."""

    def start(self) -> None:
        self.port = self.listen(self.reactor.listenTCP, _site(self))
        self.run_clients(self.n(4), self.get, lambda i: self.rng.expovariate(3.0))

    def page(self) -> str:
        size = int(min(30000, self.rng.lognormvariate(7.5, 0.8)))
        return f"/page/{self.rng.randrange(1000)}.html?size={size}"

    def get(self, i: int) -> defer.Deferred:
        self.stats.started[self.name] += 1
        count = self.rng.randint(2, 6) if self.rng.random() < 0.25 else 1
        paths = [self.page() for _ in range(count)]
        return _connect(self, self.client(i), self.port, lambda d: _HttpClient(self, paths, d))


# --------------------------------------------------------------------------- interactive
class _Shell(protocol.Protocol):
    """Server side of a keystroke session: echo every byte; command output on Enter."""

    def __init__(self, owner: Behaviour) -> None:
        self.owner = owner

    def connectionMade(self) -> None:
        self.owner.track(self.transport)
        self.transport.write(b"Welcome to netmon-trafficgen\r\n$ ")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        if b"\r" in data:
            out = b"o" * int(min(4000, self.owner.rng.lognormvariate(5.5, 1.0))) + b"\r\n$ "
            self.owner.later(self.owner.rng.uniform(0.005, 0.05), self.transport.write, out)

    def connectionLost(self, reason: Any = None) -> None:
        self.owner.untrack(self.transport)


class _Typist(protocol.Protocol):
    """Client side: types commands a key at a time with human gaps, then thinks."""

    def __init__(self, owner: Behaviour, length: float, done: defer.Deferred) -> None:
        self.owner, self.done = owner, done
        self.stop_at = owner.reactor.seconds() + length
        self.line = ""
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True
        self.owner.track(self.transport)
        self.owner.later(self.owner.rng.uniform(0.3, 1.0), self.key)

    def key(self) -> None:
        if not self.connected:
            return
        rng = self.owner.rng
        now = self.owner.reactor.seconds()
        if now >= self.stop_at or now >= self.owner.end:
            self.transport.write(b"exit\r")
            self.owner.later(0.1, self.transport.loseConnection)
            return
        if not self.line:
            self.line = "".join(rng.choice("lscdgrepatmkvi -./") for _ in range(rng.randint(2, 18)))
            self.line += "\r"
        ch, self.line = self.line[0], self.line[1:]
        self.transport.write(ch.encode())
        gap = rng.uniform(0.6, 3.0) if ch == "\r" else min(1.5, rng.lognormvariate(-2.0, 0.5))
        self.owner.later(min(gap, max(0.05, min(self.stop_at, self.owner.end) - now)), self.key)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False
        self.owner.untrack(self.transport)
        if not self.done.called:
            self.done.callback(None)


class _Interactive(Behaviour):
    """Keystroke sessions of 4-12 s, one at a time per client."""

    def start(self) -> None:
        factory = protocol.Factory.forProtocol(lambda: _Shell(self))
        factory.noisy = False
        self.port = self.listen(self.reactor.listenTCP, factory)
        self.run_clients(self.n(4), self.session, lambda i: self.rng.uniform(0.3, 2.0),
                         stagger=3.0)

    def session(self, i: int) -> defer.Deferred:
        length = min(self.rng.uniform(4.0, 12.0), self.end - self.reactor.seconds())
        self.stats.started[self.name] += 1
        return _connect(self, self.client(i), self.port, lambda d: _Typist(self, length, d))


# --------------------------------------------------------------------------- scan
class _Probe(protocol.Protocol):
    """An open port answered a probe: drop the connection at once."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class _Scan(Behaviour):
    """TCP connect scan of 127.0.N.1 (nothing listens: RST): ports 1-1024 then random
    high ports, ~80 probes/s per scanner."""

    def start(self) -> None:
        ports = list(range(1, 1025)) + self.rng.sample(range(1025, 65536), 2000)
        self.order = [ports[:1024], ports[1024:]]
        for part in self.order:
            self.rng.shuffle(part)
        self.order = self.order[0] + self.order[1]
        self.cursor = [self.rng.randrange(len(self.order)) for _ in range(self.n(2))]
        self.run_clients(len(self.cursor), self.probe, lambda i: 4 / 80)

    def probe(self, i: int) -> None:
        for _ in range(4):
            port = self.order[self.cursor[i] % len(self.order)]
            self.cursor[i] += 1
            self.stats.started[self.name] += 1
            f = _OneShot(self, lambda d: _Probe())
            self.reactor.connectTCP(self.server, port, f, timeout=2,
                                    bindAddress=(self.client(i), 0))


TCP_BEHAVIOURS: dict[str, type[Behaviour]] = {
    "bulk": _Bulk, "web": _Web, "interactive": _Interactive, "scan": _Scan,
}
