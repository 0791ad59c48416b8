"""The plumbing every traffic behaviour shares: :class:`Behaviour` and :class:`Quiet`.

A behaviour is one class of traffic in its own ``127.0.N.0/24``: it binds its servers
on ``127.0.N.1`` (see :data:`_PORTS` for the ports), runs client loops bound to
``127.0.N.2`` and up between the plan's start for it and the plan's end, and closes
every timer, connection and port it made. The concrete behaviours are in
:mod:`netmon.demo.traffic.tcp`, :mod:`~netmon.demo.traffic.udp` and
:mod:`~netmon.demo.traffic.icmp`.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``).
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error

from netmon.demo.traffic.plan import TrafficPlan, TrafficStats

#: Server ports: (preferred when root, otherwise); a port in use falls back to the
#: other, then to any free port.
_PORTS = {"bulk": (80, 8080), "web": (80, 8080), "dns": (53, 5353), "interactive": (22, 2222),
          "cbr": (5004, 5004)}


class Behaviour:
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


class Quiet:
    """Mixin for factories and protocols: no log line on every start and stop."""

    noisy = False
