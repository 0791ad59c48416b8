"""Which remote process owns each flow of an ``--ssh`` source: ``ss -tunpH`` read on
that host every few seconds, over the capture's own SSH session, as a
:class:`~netmon.names.procs.ProcessTable`.

Runs on the reactor thread (inside :class:`netmon.sources.ssh.SshCapture`). The
remote capture script (:data:`REMOTE_LOOP`) already watches its input to know when
netmon is gone; each line netmon writes there makes it print a reading to stderr:
:data:`BEGIN_MARK`, the ``ss`` lines, :data:`END_MARK`. The session is the one the
capture filter leaves out, so readings add no captured traffic and no second login.
:class:`SsReadings` takes the readings out of the stderr stream (what is left, the
capture tool's and ssh's messages, goes on to the capture's error handling), parses
them (:func:`netmon.names.procs.table_from_ss`; untrusted text, capped) and publishes
each by replacing :attr:`SsReadings.table`.

``ss`` missing on the host, or showing no processes (a user who is not root sees
only its own), leaves the flows without processes and says so once (``warn``).
"""

from __future__ import annotations

from collections.abc import Callable

from netmon.core.text import NAME_MAX, safe_text
from netmon.names.procs import ProcessTable, table_from_ss

#: Seconds between readings.
PERIOD = 3.0
#: Bytes of one reading kept at most (ss of ~100 k sockets); beyond, lines are cut.
READING_MAX = 16 << 20
BEGIN_MARK = "netmon-ss-begin"
END_MARK = "netmon-ss-end"
NO_SS_MARK = "netmon-remote: no ss"

#: The remote loop (a shell fragment; ``{ss}`` is quoted by the caller): a reading
#: per line read from fd 3, to stderr; it ends when netmon's input ends.
REMOTE_LOOP = ("while read -r _ <&3; do echo " + BEGIN_MARK + "; if command -v {ss} "
               ">/dev/null 2>&1; then {ss} -tunpH 2>/dev/null; else echo \"" + NO_SS_MARK
               + "\"; fi; echo " + END_MARK + "; done >&2")

_BEGIN = (BEGIN_MARK + "\n").encode()
_END = END_MARK.encode()
_NO_SS = NO_SS_MARK.encode()


class SsReadings:
    """The ``ss`` readings of one SSH source: split out of its stderr, parsed into
    :attr:`table` (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table = ProcessTable()
        self.readings = 0
        #: Where the one-time notes go (the engine's warnings); set by the engine.
        self.warn: Callable[[str], None] | None = None
        self.missing = False  # no ss there: stop asking
        self.waiting = False  # a reading was asked for and has not come
        self._buf = bytearray()
        self._lines: list[bytes] = []
        self._size = 0
        self._in = False
        self._said: set[str] = set()

    def request_refresh(self) -> None:
        """Readings come every :data:`PERIOD` seconds anyway: asking sooner would
        cost the remote host a full ``ss`` per new flow."""

    def restart(self) -> None:
        """A new session (the capture reconnected): no reading is under way."""
        self._buf.clear()
        self._lines, self._size, self._in, self.waiting = [], 0, False, False

    def take(self, data: bytes) -> bytes:
        """Take the readings out of a piece of the stderr stream; return the rest."""
        buf = self._buf
        buf += data
        out = bytearray()
        while buf:
            if self._in:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                if line == _END:
                    self._done()
                elif line == _NO_SS:
                    self._no_ss()
                elif line.startswith((b"tcp", b"udp")):
                    if self._size < READING_MAX:
                        self._lines.append(line)
                        self._size += len(line) + 1
                else:  # a message of the capture tool between two ss lines
                    out += line + b"\n"
                continue
            at = buf.find(_BEGIN)
            if at < 0:
                keep = _prefix_tail(buf, _BEGIN)
                out += buf[:len(buf) - keep]
                del buf[:len(buf) - keep]
                break
            out += buf[:at]
            del buf[:at + len(_BEGIN)]
            self._in = True
        return bytes(out)

    def _done(self) -> None:
        self._in = False
        self.waiting = False
        text = b"\n".join(self._lines).decode("utf-8", "replace")
        self._lines, self._size = [], 0
        if self.missing:
            return
        self.readings += 1
        self.table = table_from_ss(text, generation=self.readings)
        if self.readings == 1 and not self.table.processes:
            self._say("ss there shows no processes (log in as root to see every "
                      "user's): flows are not attributed to processes")

    def _no_ss(self) -> None:
        self.missing = True
        self._say("no ss there: flows are not attributed to processes")

    def _say(self, text: str) -> None:
        if text not in self._said and self.warn is not None:
            self._said.add(text)
            self.warn(f"{safe_text(self.name, NAME_MAX)}: {text}")


def _prefix_tail(buf: bytearray, mark: bytes) -> int:
    """How many bytes at the end of ``buf`` could be the start of ``mark``."""
    for k in range(min(len(mark) - 1, len(buf)), 0, -1):
        if buf.endswith(mark[:k]):
            return k
    return 0
