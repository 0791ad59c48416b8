"""``netmon demo``: the sources that drive real loopback traffic of several kinds and
capture it, monitored live.

Runs on the engine's reactor thread. :class:`DemoTraffic` is a source that produces
no records itself: it drives :mod:`netmon.demo.traffic` (bulk downloads, small web
requests, DNS-like UDP, an interactive session, a port scan, ICMP echo where
permitted, a constant-bitrate stream; one 127.0.N.0/24 per kind) round after round
until netmon stops, every round bounded in time and traffic only to 127.0.0.0/8.
What sees the traffic is a real capture of ``lo`` (dumpcap) when capture is
permitted; otherwise the listener source, to which :class:`ListenerClients` then
sends connections of five kinds (bulk uploads, chatty clients, a connect scan,
idle sessions, one-shot requests).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from typing import Any, ClassVar

from twisted.internet import protocol

from netmon.demo.traffic.plan import TrafficPlan
from netmon.demo.traffic.run import start_traffic
from netmon.sources.base import Source

ROUND_SECONDS = 40.0


def capture_permitted(tool: str = "dumpcap") -> bool:
    """Whether this user may capture on lo (asks dumpcap for lo's link types)."""
    path = shutil.which(tool)
    if path is None:
        return False
    try:
        proc = subprocess.run([path, "-i", "lo", "-L"], capture_output=True, text=True,
                              timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class DemoTraffic(Source):
    """Loopback traffic generators, restarted each round until stopped."""

    kind = "demo"

    def __init__(self, plan: TrafficPlan | None = None) -> None:
        super().__init__("demo traffic")
        self.plan = plan or TrafficPlan(duration=ROUND_SECONDS, scale=1.0)
        self.rounds = 0
        self._handle: Any = None
        self._reactor: Any = None
        self._stopping = False

    def _begin(self, reactor: Any) -> None:
        self._reactor = reactor
        self.state = "running"
        # Give the capture a moment to start, so the first flows are seen whole.
        reactor.callLater(1.0, self._round)

    def _round(self) -> None:
        if self._stopping:
            return
        self.rounds += 1
        plan = TrafficPlan(duration=self.plan.duration, scale=self.plan.scale,
                           seed=self.plan.seed + self.rounds, subnet_base=self.plan.subnet_base)
        self._handle = start_traffic(self._reactor, plan)
        notes = self._handle.stats.notes
        self.detail = f"round {self.rounds}" + (f"; {notes[0]}" if notes else "")
        self._handle.done.addCallback(lambda _stats: self._reactor.callLater(0.5, self._round))

    def stop(self) -> None:
        self._stopping = True
        if self._handle is not None:
            self._handle.stop()
        self.detail = ""  # the round counter is news while running, not a warning after
        self._finish(None)


class _OneShot(protocol.Protocol):
    """Sends ``payload`` in ``pieces`` writes ``gap`` seconds apart, then hangs up."""

    def __init__(self, payload: bytes, pieces: int, gap: float, hold: float) -> None:
        self.payload, self.pieces, self.gap, self.hold = payload, pieces, gap, hold

    def connectionMade(self) -> None:
        reactor = self.factory.reactor
        size = max(1, len(self.payload) // self.pieces) if self.payload else 0
        for i in range(self.pieces):
            chunk = self.payload[i * size:(i + 1) * size]
            reactor.callLater(i * self.gap, self._write, chunk)
        reactor.callLater(self.pieces * self.gap + self.hold, self.transport.loseConnection)

    def _write(self, chunk: bytes) -> None:
        if chunk and self.transport.connected:
            self.transport.write(chunk)


class ListenerClients(Source):
    """Demo clients for the listener fallback: connections of five kinds to it."""

    kind = "demo"

    #: name: (payload or its size, writes, gap s, hold s, every s, source address)
    KINDS: ClassVar[dict[str, tuple]] = {
        "bulk upload": (400_000, 40, 0.02, 0.1, 3.0, "127.0.0.21"),
        "chatty": (600, 30, 0.2, 0.0, 2.0, "127.0.0.22"),
        "scan": (0, 0, 0.0, 0.0, 0.05, "127.0.0.23"),
        "idle session": (32, 1, 0.0, 8.0, 5.0, "127.0.0.24"),
        "request": (b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n", 1, 0.0, 0.05, 0.3,
                    "127.0.0.25"),
    }

    def __init__(self, port: int) -> None:
        super().__init__("demo clients")
        self.port = port
        self._reactor: Any = None
        self._calls: list[Any] = []
        self._stopping = False
        self._rng = random.Random(7)

    def _begin(self, reactor: Any) -> None:
        self._reactor = reactor
        self.state = "running"
        for name in self.KINDS:
            self._calls.append(reactor.callLater(0.5, self._connect, name))

    def _connect(self, name: str) -> None:
        if self._stopping:
            return
        payload, pieces, gap, hold, every, source = self.KINDS[name]
        data = payload if isinstance(payload, bytes) else self._rng.randbytes(payload)
        factory = protocol.ClientFactory.forProtocol(lambda: _OneShot(data, pieces, gap, hold))
        factory.reactor = self._reactor
        self._reactor.connectTCP("127.0.0.1", self.port, factory, timeout=5,
                                 bindAddress=(source, 0))
        self._calls.append(self._reactor.callLater(every * self._rng.uniform(0.5, 1.5),
                                                   self._connect, name))
        self._calls = [c for c in self._calls if c.active()]

    def stop(self) -> None:
        self._stopping = True
        for call in self._calls:
            if call.active():
                call.cancel()
        self._finish(None)


def demo_sources(settings: Any) -> list[Source]:
    """The demo's sources: a capture of its loopback traffic when capture is permitted,
    else the listener with clients of its own. Raises SourceError like any source."""
    from netmon.sources.capture import CaptureSpec, LiveCapture

    if settings.read or settings.interface or settings.listen:
        from netmon.core.errors import EXIT_USAGE, SourceError

        raise SourceError("the demo makes its own traffic: no -r, -i or --listen with it",
                          EXIT_USAGE)
    traffic = DemoTraffic(TrafficPlan(duration=ROUND_SECONDS, scale=1.0, seed=settings.seed))
    tool = "dumpcap" if settings.capture_tool in ("auto", "tshark") else settings.capture_tool
    if capture_permitted(tool):
        capture = LiveCapture(CaptureSpec("lo", traffic.plan.bpf(), 0, settings.capture_tool))
        capture.name = "demo: live lo"
        return [capture, traffic]
    from netmon.sources.listener import ListenerSource

    listener = ListenerSource([("127.0.0.1", 0)])
    listener.name = "demo: " + listener.name
    port = int(listener.addresses[0].rsplit(":", 1)[1])
    return [listener, ListenerClients(port)]
