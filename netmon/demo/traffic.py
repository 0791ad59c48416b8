"""Labelled loopback traffic: real Twisted servers and clients, one behaviour per subnet.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``). Every behaviour class
lives in its own ``127.0.N.0/24`` (servers on ``127.0.N.1``, clients bound to
``127.0.N.2`` and up), so a flow's true class is known from either address:
:func:`class_of`. Nothing is ever sent outside 127.0.0.0/8.

Behaviours: ``bulk`` (HTTP downloads of megabytes, throttled), ``web`` (many short HTTP
GETs), ``dns`` (UDP request/response, one source port per query), ``interactive`` (a
keystroke session: typed characters echoed, command output on Enter), ``scan`` (TCP
connect scan of closed ports, answered by RST), ``icmp`` (echo requests on a raw or
ping socket; skipped with a note in :attr:`TrafficStats.notes` when neither is
permitted) and ``cbr`` (constant-bitrate UDP, RTP-like). Client counts scale with
:attr:`TrafficPlan.scale`; ``icmp``, ``scan`` and ``cbr`` begin part-way through (new
behaviour for the monitor to notice). Clients start no new work after
:attr:`TrafficPlan.duration` seconds (a run takes about that long) and everything is
torn down at most :attr:`TrafficPlan.grace` seconds later.

One module on purpose, though long: seven small server/client pairs sharing the
plumbing of :class:`_Behaviour`, and one import for the benchmark and the demo.

Use::

    handle = start_traffic(reactor, TrafficPlan(duration=15))
    handle.done.addCallback(lambda stats: ...)   # fires once, with TrafficStats
    handle.stop()                                 # early stop; ``done`` still fires
"""

from __future__ import annotations

import errno
import os
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from twisted.internet import defer, error, protocol, task
from twisted.web import resource, server

#: Behaviour classes in subnet order: class i uses 127.0.(subnet_base + 1 + i).0/24.
CLASSES = ("bulk", "web", "dns", "interactive", "scan", "icmp", "cbr")

#: Server ports: (preferred when root, otherwise); a port in use falls back to the
#: other, then to any free port.
_PORTS = {"bulk": (80, 8080), "web": (80, 8080), "dns": (53, 5353), "interactive": (22, 2222),
          "cbr": (5004, 5004)}


@dataclass(frozen=True)
class TrafficPlan:
    """What to generate. ``scale`` multiplies client counts (0.5 for a quick CI run);
    ``subnet_base`` N puts class i in 127.0.(N+1+i).0/24."""

    duration: float = 20.0
    scale: float = 1.0
    seed: int = 0
    subnet_base: int = 100
    classes: tuple[str, ...] = CLASSES
    grace: float = 5.0
    well_known_ports: bool | None = None  # None: when running as root
    #: When a class's clients begin, as a fraction of ``duration`` (default 0): new
    #: behaviour appearing mid-run is what a monitor must notice.
    starts: tuple[tuple[str, float], ...] = (("icmp", 0.15), ("scan", 0.3), ("cbr", 0.45))

    def start_of(self, name: str) -> float:
        """Seconds after the start at which class ``name`` begins."""
        return dict(self.starts).get(name, 0.0) * self.duration

    def subnet(self, name: str) -> str:
        """``"127.0.N"`` prefix of a class's /24."""
        return f"127.0.{self.subnet_base + 1 + CLASSES.index(name)}"

    def bpf(self) -> str:
        """A capture filter matching exactly this plan's subnets."""
        return " or ".join(f"net {self.subnet(c)}.0/24" for c in self.classes)


def class_of(addr: str, subnet_base: int = 100) -> str | None:
    """True behaviour class of a flow endpoint address, or None if it is not ours."""
    parts = addr.split(".")
    if len(parts) != 4 or parts[0] != "127" or parts[1] != "0":
        return None
    i = int(parts[2]) - subnet_base - 1
    return CLASSES[i] if 0 <= i < len(CLASSES) else None


@dataclass
class TrafficStats:
    """What the generators did: per class counts of flows started and failures."""

    started: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    ports: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class TrafficHandle:
    """Running traffic: :attr:`done` fires with :class:`TrafficStats` when it is over."""

    def __init__(self, reactor: Any, behaviours: list[_Behaviour], stats: TrafficStats,
                 deadline: float) -> None:
        self.stats = stats
        self._behaviours = behaviours
        self.done: defer.Deferred = defer.Deferred()
        self._stopped = False
        every = defer.DeferredList([b.finished for b in behaviours], consumeErrors=True)
        every.addCallback(lambda _: self.stop())
        self._deadline = reactor.callLater(deadline, self.stop)

    def stop(self) -> None:
        """Stop every client and server now (idempotent); :attr:`done` then fires."""
        if self._stopped:
            return
        self._stopped = True
        if self._deadline.active():
            self._deadline.cancel()
        for b in self._behaviours:
            b.close()
        self.done.callback(self.stats)


def start_traffic(reactor: Any, plan: TrafficPlan) -> TrafficHandle:
    """Bind the servers and start the clients of every class in ``plan`` on ``reactor``."""
    stats = TrafficStats()
    root = plan.well_known_ports if plan.well_known_ports is not None else os.geteuid() == 0
    behaviours: list[_Behaviour] = []
    for i, name in enumerate(plan.classes):
        rng = random.Random(plan.seed * 1000 + i)
        b = _BEHAVIOURS[name](reactor, plan, name, rng, stats, root)
        behaviours.append(b)
        try:
            b.start()
        except OSError as exc:
            stats.notes.append(f"{name}: skipped ({exc.strerror or exc})")
            b.close()
    return TrafficHandle(reactor, behaviours, stats, plan.duration + plan.grace)


# --------------------------------------------------------------------------- plumbing
class _Behaviour:
    """One class: servers, client loops, timers; ``finished`` fires when clients are done."""

    def __init__(self, reactor: Any, plan: TrafficPlan, name: str, rng: random.Random,
                 stats: TrafficStats, root: bool) -> None:
        self.reactor = reactor
        self.plan = plan
        self.name = name
        self.rng = rng
        self.stats = stats
        self.root = root
        self.net = plan.subnet(name)
        self.server = f"{self.net}.1"
        self.end = reactor.seconds() + plan.duration
        self.finished: defer.Deferred = defer.Deferred()
        self._pending = 0  # client loops still running
        self._calls: set = set()
        self._ports: list = []
        self._conns: set = set()
        self._closed = False

    def start(self) -> None:
        """Bind the servers and schedule the clients (each behaviour defines it)."""
        raise TypeError(f"{type(self).__name__} does not define start()")

    def n(self, base: float) -> int:
        """A client count scaled by the plan, at least 1."""
        return max(1, round(base * self.plan.scale))

    def client(self, i: int) -> str:
        return f"{self.net}.{2 + i}"

    def later(self, delay: float, fn: Callable, *args: Any) -> None:
        if self._closed:
            return

        def fire() -> None:
            self._calls.discard(call)
            fn(*args)
        call = self.reactor.callLater(max(0.0, delay), fire)
        self._calls.add(call)

    def listen(self, listen_fn: Callable, arg: Any) -> int:
        """Bind a server on 127.0.N.1 at the class's port (fallbacks: see _PORTS)."""
        first, other = _PORTS[self.name]
        for port in dict.fromkeys((first if self.root else other, other, 0)):
            try:
                lp = listen_fn(port, arg, interface=self.server)
            except error.CannotListenError:
                continue
            self._ports.append(lp)
            self.stats.ports[self.name] = lp.getHost().port
            return lp.getHost().port
        raise OSError(errno.EADDRINUSE, f"cannot bind {self.server}")

    def run_clients(self, count: int, action: Callable[[int], defer.Deferred | None],
                    pause: Callable[[int], float | None], stagger: float = 1.0) -> None:
        """Run ``count`` client loops: ``action(i)`` (waited for when it returns a
        Deferred), then ``pause(i)`` seconds of rest (None: idle until the end)."""
        self._pending += count

        def loop(i: int) -> None:
            if self._closed or self.reactor.seconds() >= self.end:
                self._pending -= 1
                if self._pending == 0 and not self.finished.called:
                    self.finished.callback(None)
                return
            d = action(i)
            if d is None:
                rest(None, i)
            else:
                d.addBoth(rest, i)

        def rest(_: Any, i: int) -> None:
            left = self.end - self.reactor.seconds()
            gap = pause(i)
            self.later(left if gap is None else min(gap, left), loop, i)
        begin = self.plan.start_of(self.name)
        for i in range(count):
            self.later(begin + self.rng.uniform(0, stagger), loop, i)

    def track(self, transport: Any) -> None:
        self._conns.add(transport)

    def untrack(self, transport: Any) -> None:
        self._conns.discard(transport)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        for t in list(self._conns):
            abort = getattr(t, "abortConnection", None)
            (abort or t.loseConnection)()
        for lp in self._ports:
            lp.stopListening()
        if not self.finished.called:
            self.finished.callback(None)


class _Quiet:
    noisy = False


# --------------------------------------------------------------------------- HTTP
class _Files(resource.Resource):
    """``/bulk?size=N&rate=R`` streams N bytes at R bytes/s; ``/page?size=N`` answers at once."""

    isLeaf = True

    def __init__(self, owner: _Behaviour) -> None:
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


class _QuietSite(_Quiet, server.Site):
    def log(self, request: server.Request) -> None:
        pass


def _site(owner: _Behaviour) -> server.Site:
    return _QuietSite(_Files(owner), reactor=owner.reactor)


class _OneShot(_Quiet, protocol.ClientFactory):
    """Client factory for one connection; ``done`` fires on close or failure."""

    def __init__(self, owner: _Behaviour,
                 make: Callable[[defer.Deferred], protocol.Protocol]) -> None:
        self.owner, self.make = owner, make
        self.done: defer.Deferred = defer.Deferred()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.make(self.done)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)


def _connect(owner: _Behaviour, src: str, port: int,
             make: Callable[[defer.Deferred], protocol.Protocol]) -> defer.Deferred:
    f = _OneShot(owner, make)
    owner.reactor.connectTCP(owner.server, port, f, timeout=5, bindAddress=(src, 0))
    return f.done


class _Bulk(_Behaviour):
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

    def __init__(self, owner: _Behaviour, paths: list[str], done: defer.Deferred) -> None:
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


class _Web(_Behaviour):
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


# --------------------------------------------------------------------------- DNS
def _dns_query(rng: random.Random) -> bytes:
    labels = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
              for _ in range(rng.randint(1, 3))] + [rng.choice(["com", "net", "org", "test"])]
    qname = b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\0"
    qtype = rng.choice([1, 1, 1, 28, 15])
    return struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", qtype, 1)


class _DnsServer(_Quiet, protocol.DatagramProtocol):
    """Answers each query after 0-5 ms with 1-4 A records (a well-formed DNS reply)."""

    def __init__(self, owner: _Behaviour) -> None:
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


class _DnsClient(_Quiet, protocol.DatagramProtocol):
    """One resolver socket: sends its queries in turn, each after the previous reply."""

    def __init__(self, owner: _Behaviour, queries: list[bytes],
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


class _Dns(_Behaviour):
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


# --------------------------------------------------------------------------- interactive
class _Shell(protocol.Protocol):
    """Server side of a keystroke session: echo every byte; command output on Enter."""

    def __init__(self, owner: _Behaviour) -> None:
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

    def __init__(self, owner: _Behaviour, length: float, done: defer.Deferred) -> None:
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


class _Interactive(_Behaviour):
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


class _Scan(_Behaviour):
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


# --------------------------------------------------------------------------- ICMP
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


class _Icmp(_Behaviour):
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


# --------------------------------------------------------------------------- CBR
class _Sink(_Quiet, protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass


class _Cbr(_Behaviour):
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


_BEHAVIOURS: dict[str, type[_Behaviour]] = {
    "bulk": _Bulk, "web": _Web, "dns": _Dns, "interactive": _Interactive, "scan": _Scan,
    "icmp": _Icmp, "cbr": _Cbr,
}
