"""Headless mode: snapshots printed as a summary line (stderr) and/or JSON (stdout).

Runs on the main thread. The engine's publish callback (reactor thread) only puts
snapshots on a queue; this loop takes them off, prints, and returns when the final
snapshot arrives. Source names in the summary line are made inert and capped
(``netmon.core.text``); the JSON needs nothing, ``json.dumps`` escapes control
characters. Signals are handled here, on the main thread, by asking the
engine to stop, so SIGINT/SIGTERM/SIGHUP still write ``--flows-out`` and reap the
capture process.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import time
from typing import ClassVar, TextIO

from netmon.core.text import NAME_MAX, print_line, safe_text
from netmon.core.units import duration, human_bytes, human_rate, si
from netmon.core.values import Snapshot
from netmon.engine.engine import Engine


def summary_line(snap: Snapshot) -> str:
    """The one-line human summary of a snapshot."""
    t = snap.totals
    srcs = ", ".join(f"{safe_text(s.name, NAME_MAX)} {safe_text(s.state)}"
                     for s in snap.sources) or "no source"
    dropped = sum(s.dropped for s in snap.sources)
    average = f" average over {duration(snap.elapsed)} of capture" if snap.averaged else ""
    return (f"netmon [{srcs}] {si(snap.pkt_rate)} pkt/s "
            f"{human_rate(snap.byte_rate)}{average} | {t.packets} pkts {human_bytes(t.bytes)} | "
            f"flows {t.flows_live} live {t.flows_seen} seen {t.flows_expired} expired "
            f"{t.flows_evicted} evicted | non-IP {t.nonip_frames} skipped {t.skipped} "
            f"dropped {dropped}")


class HeadlessRunner:
    """Print snapshots until the engine finishes; translate signals into stop()."""

    SIGNAL_EXIT: ClassVar[dict[int, int]] = {signal.SIGINT: 0, signal.SIGTERM: 128 + signal.SIGTERM,
                   signal.SIGHUP: 128 + signal.SIGHUP}

    def __init__(self, *, json_out: bool, summary: bool = True, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.json_out = json_out
        self.summary = summary
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.queue: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
        self.signal_code: int | None = None
        self.final: Snapshot | None = None
        self._engine: Engine | None = None

    def publish(self, snap: Snapshot) -> None:
        """Engine callback (reactor thread): never blocks."""
        self.queue.put(snap)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal_code is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop waiting
        self.signal_code = self.SIGNAL_EXIT.get(signum, 1)
        if self._engine is not None:
            self._engine.stop(f"signal {signal.Signals(signum).name}")

    def run(self, engine: Engine) -> Snapshot | None:
        """Start ``engine`` and print until its final snapshot; return that snapshot."""
        self._engine = engine
        for sig in self.SIGNAL_EXIT:
            signal.signal(sig, self._on_signal)
        engine.start()
        last_line = 0.0
        snap = None
        while True:
            try:
                snap = self.queue.get(timeout=0.25)
            except queue.Empty:
                if not engine.join(0):
                    continue
                # The engine may have published its last snapshot between the timeout
                # and its thread's end: take it before giving up.
                try:
                    snap = self.queue.get_nowait()
                except queue.Empty:
                    break
            if self.json_out and not self._print_json(snap, engine):
                continue
            now = time.monotonic()
            if self.summary and (snap.finished or now - last_line >= 1.0):
                print_line(summary_line(snap), self.err)
                last_line = now
            if snap.finished:
                self.final = snap
                break
        engine.join(10.0)
        return self.final

    def _print_json(self, snap: Snapshot, engine: Engine) -> bool:
        try:
            self.out.write(json.dumps(snap.to_json(), separators=(",", ":")) + "\n")
            self.out.flush()
            return True
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, keep what was counted.
            self.json_out = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            engine.stop("output closed")
            return False
