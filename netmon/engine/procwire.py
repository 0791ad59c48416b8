"""The engine's process attribution: which sources get it, the threads and remote
readers behind it, and their lifecycle.

Reactor thread, except the ``netmon-procs`` thread :class:`ProcessWiring` starts and
joins: a :class:`~netmon.names.procs.ProcessResolver` scanning ``/proc`` (every 2 s,
sooner when a new flow found no owner), made only when a source captures on this
machine (kind "live": ``-i``, and the demo's capture of ``lo``). ``--ssh`` sources
are asked every few seconds for an ``ss`` reading on that host, over their own
session (:mod:`netmon.sources.sshprocs`). Replays, the listener and collectors get
nothing: their flows keep an empty process column, and the screen shows none.

Each tick the engine calls :meth:`ProcessWiring.tick` after counting and before
expiry (every flow gets looked up before it can end), :meth:`ProcessWiring.ended`
before ended flows are handed on, and :meth:`ProcessWiring.stop` when it finalises
(and, as a last resort, when its reactor thread ends): no thread or ssh outlives it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from twisted.internet import task

from netmon.core.values import ProcessTotal
from netmon.flows.procattr import ProcessAttributor
from netmon.flows.table import FlowTable
from netmon.names.procs import ProcessResolver
from netmon.names.procscan import ProcessScanner
from netmon.sources.base import Source
from netmon.sources.ssh import SshCapture
from netmon.sources.sshprocs import PERIOD

#: Source kinds that capture on this machine (their local sockets are in /proc).
LOCAL_KINDS = ("live",)


class ProcessWiring:
    """Process attribution for an engine's sources (see the module docstring)."""

    def __init__(self, table: FlowTable, sources: Sequence[Source], reactor: Any,
                 warnings: list[str]) -> None:
        self.table = table
        self.reactor = reactor
        self.warnings = warnings
        self.attributor = ProcessAttributor(table)
        self.resolver: ProcessResolver | None = None
        self.remote: list[SshCapture] = []  # asked for ss readings
        self._asking: task.LoopingCall | None = None
        #: Seconds the last tick's attribution took (the benchmark reads it).
        self.last_cost = 0.0
        self._stopped = False
        for src in sources:
            if src.kind in LOCAL_KINDS:
                if self.resolver is None:
                    self.resolver = ProcessResolver(ProcessScanner().refresh)
                self.attributor.add_source(src.obs, self.resolver)
            elif isinstance(src, SshCapture):
                src.processes.warn = self._warn
                self.remote.append(src)
                self.attributor.add_source(src.obs, src.processes)

    @property
    def active(self) -> bool:
        return bool(self.attributor.sources)

    def start(self) -> None:
        if self.resolver is not None:
            self.resolver.start()
        if self.remote:
            self._asking = task.LoopingCall(self._ask)
            self._asking.clock = self.reactor
            self._asking.start(PERIOD, now=False)

    def _ask(self) -> None:
        for src in self.remote:
            src.ask_processes()

    def tick(self, final: bool = False) -> None:
        """Attribute new flows (``final``: at the end of the run; what is still
        unknown stays so)."""
        if self._stopped or not self.active:
            return
        t0 = time.perf_counter()
        self.attributor.attribute(time.monotonic(), final)
        self.last_cost = time.perf_counter() - t0

    def ended(self) -> None:
        if self.active:
            self.attributor.ended(self.table.finished_columns())

    def totals(self) -> tuple[ProcessTotal, ...]:
        return self.attributor.totals() if self.active else ()

    def stop(self) -> None:
        """Stop the resolver thread (joined) and the ssh readers; safe to repeat."""
        if self._stopped:
            return
        self._stopped = True
        if self._asking is not None and self._asking.running:
            self._asking.stop()
        if self.resolver is not None:
            try:
                self.resolver.stop()
            except Exception as exc:  # a bug in a refresh: say it, the run's data stands
                self._warn(f"process attribution failed: {type(exc).__name__}: {exc}")

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
