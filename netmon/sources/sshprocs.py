"""Which remote process owns each flow of an ``--ssh`` source: ``ss -tunpH`` read on
that host every few seconds, as a :class:`~netmon.names.procs.ProcessTable`.

Runs on the reactor thread (the engine's process wiring owns one :class:`SsReader`
per SSH source). One ``ssh`` login per source, with the source's own target and
options (:func:`netmon.sources.ssh.ssh_args`), stays open: the remote shell runs a
loop that prints ``ss -tunpH`` and an end mark each time it reads a line, and ends
when its input does, so netmon asks for a reading by writing a newline and a
netmon that stops or dies leaves nothing behind there. The reading is parsed here
(:func:`netmon.names.procs.table_from_ss`, untrusted text, capped), and published
by replacing :attr:`SsReader.table`.

``ss`` missing on the host, or showing no processes (a user who is not root sees
only its own), leaves the flows without processes and says so once (``warn``). The
readings' own SSH connection is traffic the remote capture sees (one small flow to
the SSH port every few seconds); the capture's exclusion covers only its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from twisted.internet import error as terror
from twisted.internet import protocol, task

from netmon.core.text import NAME_MAX, safe_text
from netmon.names.procs import ProcessTable, table_from_ss
from netmon.sources.capture import LIVE_CHILDREN
from netmon.sources.ssh import SshTarget, ssh_args

#: Seconds between readings.
PERIOD = 3.0
#: Seconds before a reader whose ssh ended is started again.
RESPAWN = 15.0
#: Bytes of one reading kept at most (ss of ~100 k sockets); beyond, it is cut.
READING_MAX = 16 << 20
NO_SS_MARK = "netmon-remote: no ss"
END_MARK = "netmon-ss-end"

_REMOTE = """PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if ! command -v {ss} >/dev/null 2>&1; then echo "{no_ss}"; exit 127; fi
while read -r _; do {ss} -tunpH 2>/dev/null; echo "{end}"; done"""


def remote_ss_script(ss: str = "ss") -> str:
    """The remote loop: one ``ss -tunpH`` and an end mark per line read."""
    return _REMOTE.format(ss=shlex.quote(ss), no_ss=NO_SS_MARK, end=END_MARK)


class _Protocol(protocol.ProcessProtocol):
    def __init__(self, reader: SsReader) -> None:
        self.reader = reader

    def outReceived(self, data: bytes) -> None:
        self.reader.got(data)

    def errReceived(self, data: bytes) -> None:
        self.reader.stderr = (self.reader.stderr + data.decode("utf-8", "replace"))[-2048:]

    def processExited(self, reason: object) -> None:
        self.reader.exited(reason)

    def processEnded(self, reason: object) -> None:
        self.reader.exited(reason)


class SsReader:
    """Keeps :attr:`table` fresh from ``ss`` on an SSH host (see the module doc)."""

    def __init__(self, name: str, target: SshTarget, options: tuple[str, ...],
                 warn: Callable[[str], None], *, period: float = PERIOD,
                 ss: str = "ss") -> None:
        self.name = name
        self.args = ssh_args(target, remote_ss_script(ss), options=options)
        self.warn = warn
        self.period = period
        self.table = ProcessTable()
        self.readings = 0
        self.stderr = ""
        self._reactor: Any = None
        self._transport: Any = None
        self._loop: Any = None
        self._buf = bytearray()
        self._waiting = False  # a reading was asked for and has not come
        self._spawned_at = 0.0
        self._said: set[str] = set()
        self._stopping = False

    def start(self, reactor: Any) -> None:
        self._reactor = reactor
        self._spawn()
        self._loop = task.LoopingCall(self._ask)
        self._loop.clock = reactor
        self._loop.start(self.period, now=True)

    def request_refresh(self) -> None:
        """Readings come every :attr:`period` seconds anyway: asking sooner would
        cost the remote host a full ``ss`` per new flow."""

    def _spawn(self) -> None:
        self._spawned_at = self._reactor.seconds()
        self._buf.clear()
        self._waiting = False
        try:
            self._transport = self._reactor.spawnProcess(
                _Protocol(self), self.args[0], self.args,
                childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as exc:
            self._say(f"cannot start ssh for process readings: {exc.strerror}")
            self._transport = None
            return
        if self._transport.pid:
            LIVE_CHILDREN.add(self._transport.pid)

    def _ask(self) -> None:
        if self._transport is None:
            if not self._stopping and "no ss" not in self._said and \
                    self._reactor.seconds() - self._spawned_at >= RESPAWN:
                self._spawn()
            return
        if not self._waiting:
            self._waiting = True
            self._transport.write(b"\n")

    def got(self, data: bytes) -> None:
        self._buf += data
        mark = END_MARK.encode() + b"\n"
        while (at := self._buf.find(mark)) >= 0:
            text = bytes(self._buf[:at]).decode("utf-8", "replace")
            del self._buf[:at + len(mark)]
            self._reading(text)
        if NO_SS_MARK.encode() in self._buf:
            self._said.add("no ss")
            self._say("no ss there: flows are not attributed to processes")
            self._buf.clear()
        elif len(self._buf) > READING_MAX:
            del self._buf[:len(self._buf) - READING_MAX]  # a runaway reading: cut

    def _reading(self, text: str) -> None:
        self._waiting = False
        self.readings += 1
        table = table_from_ss(text, generation=self.readings)
        self.table = table
        if self.readings == 1 and not table.processes:
            self._say("ss there shows no processes (log in as root to see every "
                      "user's): flows are not attributed to processes")

    def exited(self, reason: object) -> None:
        if self._transport is None:
            return
        if self._transport.pid:
            LIVE_CHILDREN.discard(self._transport.pid)
        self._transport = None
        if not self._stopping and "no ss" not in self._said:
            value = getattr(reason, "value", None)
            if not isinstance(value, terror.ProcessDone):
                line = self.stderr.strip().splitlines()[-1:] or [""]
                self._say("process readings stopped"
                          + (f" ({safe_text(line[0], 120)})" if line[0] else "")
                          + f"; retrying every {RESPAWN:.0f} s")

    def _say(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.warn(f"{safe_text(self.name, NAME_MAX)}: {text}")

    def stop(self) -> None:
        """Stop asking; end the ssh (its remote loop ends with its input)."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        t = self._transport
        if t is not None:
            for step in (t.closeStdin, lambda: t.signalProcess("TERM")):
                try:
                    step()
                except (terror.ProcessExitedAlready, OSError):
                    pass
