"""Start labelled loopback traffic: :func:`start_traffic` and :class:`TrafficHandle`.

Binds the servers and starts the clients of every class in a
:class:`~netmon.demo.traffic.plan.TrafficPlan`. Client counts scale with
:attr:`TrafficPlan.scale`; ``icmp``, ``scan`` and ``cbr`` begin part-way through (new
behaviour for the monitor to notice). Clients start no new work after
:attr:`TrafficPlan.duration` seconds (a run takes about that long) and everything is
torn down at most :attr:`TrafficPlan.grace` seconds later. A class that cannot bind
(``icmp`` without a raw or ping socket) is skipped with a note in
:attr:`TrafficStats.notes`.

Runs on whichever thread runs the Twisted reactor it is given (the main thread in
``netmon.bench.cluster``, the reactor thread in ``netmon demo``).
"""

from __future__ import annotations

import os
import random
from typing import Any

from twisted.internet import defer

from netmon.demo.traffic.behaviour import Behaviour
from netmon.demo.traffic.icmp import ICMP_BEHAVIOURS
from netmon.demo.traffic.plan import TrafficPlan, TrafficStats
from netmon.demo.traffic.tcp import TCP_BEHAVIOURS
from netmon.demo.traffic.udp import UDP_BEHAVIOURS

_BEHAVIOURS: dict[str, type[Behaviour]] = {**TCP_BEHAVIOURS, **UDP_BEHAVIOURS, **ICMP_BEHAVIOURS}


class TrafficHandle:
    """Running traffic: :attr:`done` fires with :class:`TrafficStats` when it is over."""

    def __init__(self, reactor: Any, behaviours: list[Behaviour], stats: TrafficStats,
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
    behaviours: list[Behaviour] = []
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
