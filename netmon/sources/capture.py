"""Live capture: dumpcap (or tshark) writing a raw pcap stream into a pipe.

Runs on the reactor thread. The capture tool is spawned with
``reactor.spawnProcess`` from an argument list (never a shell), writes pcap to its
stdout and its messages to stderr; netmon decodes the stream itself, since
dissecting every packet in tshark would cap ingest near 20 k packets/s.

Process hygiene: the child is wrapped in ``setpriv --pdeathsig KILL`` where
available, so even a SIGKILLed netmon leaves no capture process behind; the normal
path sends SIGTERM, then SIGKILL after a grace period, and the engine reaps children
on a timer because the reactor runs without signal handlers off the main thread.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
from dataclasses import dataclass
from typing import Any

from twisted.internet import error as terror
from twisted.internet import protocol

from netmon.core.errors import (
    EXIT_BAD_FILTER,
    EXIT_CAPTURE_FAILED,
    EXIT_NO_INTERFACE,
    EXIT_NO_TOOL,
    EXIT_PERMISSION,
    SourceError,
)
from netmon.core.text import NAME_MAX, safe_text
from netmon.sources.base import PcapFeed, Source

#: pids of capture processes still running, for last-resort cleanup at exit.
LIVE_CHILDREN: set[int] = set()

STOP_GRACE = 2.0
#: A drained capture pipe is left alone this long, so reads come in runs (see
#: LiveCapture.got); decoded at the latest once this many bytes are held.
HOLD_S = 0.05
HOLD_BYTES = 256 << 10
#: Twisted's pipe reads are this big: a shorter read means the pipe is empty.
PIPE_READ = 8192
#: Asked-for pipe size (Linux; capped by /proc/sys/fs/pipe-max-size, 1 MB by default):
#: HOLD_S of a busy capture must fit.
PIPE_SIZE = 1 << 20
#: Restart delays after a capture process dies: doubling from the first to the last;
#: back to the first after RESTART_HEALTHY seconds of running.
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
RESTART_HEALTHY = 60.0
#: What capture tools print on stderr once they capture (dumpcap/tshark, tcpdump).
RUNNING_MARKS = ("Capturing on", "listening on")
_DROPS = re.compile(r"Packets received/dropped on interface '[^']*': (\d+)/(\d+)")
_PERMISSION_FIX = (
    "run netmon as root, or let your user capture: "
    "sudo dpkg-reconfigure wireshark-common (answer yes) && sudo usermod -aG wireshark $USER"
    " (log in again); or sudo setcap cap_net_raw,cap_net_admin=eip $(command -v dumpcap)"
)


def find_capture_tool(preferred: str = "auto") -> tuple[str, str]:
    """Return (kind, path) of the capture tool: dumpcap preferred, tshark fallback.

    ``preferred`` is "auto", "dumpcap", "tshark" or a path. Raises SourceError
    with the install command when nothing usable exists.
    """
    if preferred not in ("auto", "dumpcap", "tshark"):
        if os.path.isfile(preferred) and os.access(preferred, os.X_OK):
            kind = "tshark" if os.path.basename(preferred).startswith("tshark") else "dumpcap"
            return kind, preferred
        raise SourceError(f"capture tool '{safe_text(preferred, NAME_MAX)}' not found or not "
                          "executable", EXIT_NO_TOOL)
    names = ["dumpcap", "tshark"] if preferred == "auto" else [preferred]
    for name in names:
        path = shutil.which(name)
        if path:
            return name, path
    raise SourceError("tshark/dumpcap not found: install it with "
                      "'sudo apt-get install -y tshark' (Debian/Ubuntu)", EXIT_NO_TOOL)


@dataclass(frozen=True)
class CaptureSpec:
    interface: str
    bpf: str = ""
    count: int = 0  # 0 = no limit
    tool: str = "auto"


def capture_command(spec: CaptureSpec) -> list[str]:
    """The argument list that captures ``spec`` as a pcap stream on stdout."""
    kind, path = find_capture_tool(spec.tool)
    args = [path, "-i", spec.interface, "-w", "-"]
    args += ["-P"] if kind == "dumpcap" else ["-F", "pcap", "-Q"]
    if spec.bpf:
        args += ["-f", spec.bpf]
    if spec.count:
        args += ["-c", str(spec.count)]
    setpriv = shutil.which("setpriv")
    if setpriv:
        args = [setpriv, "--pdeathsig", "KILL", "--", *args]
    return args


def classify_stderr(text: str, spec: CaptureSpec) -> SourceError | None:
    """Turn the capture tool's complaint into one clear line (or None if harmless)."""
    low = text.lower()
    if "no device named" in low or "no such device" in low or "doesn't exist" in low:
        return SourceError(f"unknown interface '{safe_text(spec.interface, NAME_MAX)}' "
                           "(list them with 'netmon interfaces')", EXIT_NO_INTERFACE)
    if "invalid capture filter" in low or ("syntax error" in low and "filter" in low):
        return SourceError(f"invalid capture filter '{safe_text(spec.bpf, NAME_MAX)}' "
                           "(libpcap filter syntax, e.g. 'tcp port 443 and host 10.0.0.1')",
                           EXIT_BAD_FILTER)
    if "permission" in low or "operation not permitted" in low:
        return SourceError(f"no permission to capture on "
                           f"'{safe_text(spec.interface, NAME_MAX)}': "
                           + _PERMISSION_FIX, EXIT_PERMISSION)
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("dumpcap:", "tshark:")) and "dangerous" not in line:
            return SourceError(f"capture failed: {safe_text(line, NAME_MAX)}",
                               EXIT_CAPTURE_FAILED)
    return None


class _CaptureProtocol(protocol.ProcessProtocol):
    """Thin protocol: stdout bytes to the decoder, stderr lines to the source."""

    def __init__(self, source: LiveCapture) -> None:
        self.source = source

    def connectionMade(self) -> None:
        if self.source.close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.source.got(data)

    def errReceived(self, data: bytes) -> None:
        self.source.got_stderr(data)

    def outConnectionLost(self) -> None:
        # End of data. processEnded may never come when the reactor runs off the main
        # thread, so this (with processExited) is what ends the source.
        self.source.stream_ended()

    def processExited(self, reason: object) -> None:
        self.source.exited(reason)

    def processEnded(self, reason: object) -> None:
        self.source.exited(reason)


class LiveCapture(Source):
    """Capture from a network interface through dumpcap/tshark."""

    kind = "live"
    #: The state shown while waiting to start the capture again.
    restart_state = "restarting"
    #: Close the child's stdin at once (a local capture tool reads nothing).
    close_stdin = True
    #: How long a drained pipe is left alone (see got).
    hold_s = HOLD_S

    def __init__(self, spec: CaptureSpec, *, name: str = "",
                 args: list[str] | None = None) -> None:
        super().__init__(name or f"live {spec.interface}")
        self.spec = spec
        # (capture_command fails early when no tool exists)
        self.args = args if args is not None else capture_command(spec)
        self.feed = PcapFeed(lambda: self._sink)
        self._stderr = ""
        self._transport = None
        self._reactor = None
        self._stopping = False
        self._stream_done = False
        self._exit: object | None = None
        self._kill_call = None
        self._respawn_call = None
        self.pid: int | None = None
        self.restarts = 0
        self._backoff = RESTART_FIRST
        self._ran = False  # the capture really started (a later death is restarted)
        self._started_at = 0.0
        self._held: list[bytes] = []  # reads not decoded yet (see got)
        self._held_n = 0
        self._resume_call = None

    def _begin(self, reactor: Any) -> None:
        self._reactor = reactor
        self._spawn()

    def _spawn(self) -> None:
        reactor = self._reactor
        self._started_at = reactor.seconds()
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        try:
            self._transport = reactor.spawnProcess(
                _CaptureProtocol(self), self.args[0], self.args, env=env,
                childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as exc:
            self._finish(SourceError(f"cannot start {safe_text(self.args[0], NAME_MAX)}: "
                                     f"{exc.strerror}", EXIT_NO_TOOL))
            return
        self.pid = self._transport.pid
        if self.pid:
            LIVE_CHILDREN.add(self.pid)
        _grow_pipe(self._transport)
        self.detail = "starting capture"

    # ------------------------------------------------------------ data
    def got(self, data: bytes) -> None:
        if self.state in ("starting", self.restart_state):
            self._now_running()
        # A pipe read hands over at most 8 KB, and at modest rates a reactor that
        # wakes for every write reads a packet or two at a time: per-call overhead
        # then costs more than the packets. So once a read drains the pipe, decode
        # what was held as one run and leave the pipe alone for hold_s (it is made
        # big enough to hold that long); a busy pipe (full reads) is never paused.
        self._held.append(data)
        self._held_n += len(data)
        if len(data) < PIPE_READ or self._held_n >= HOLD_BYTES:
            self._decode_held()
            if len(data) < PIPE_READ and self._resume_call is None and not self._stopping:
                self._transport.pauseProducing()
                self._resume_call = self._reactor.callLater(self.hold_s, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume_call = None
        if self._transport is not None:
            self._transport.resumeProducing()

    def _decode_held(self) -> None:
        if not self._held or self._done:
            self._held, self._held_n = [], 0
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held, self._held_n = [], 0
        self.feed.data(data)
        if self.feed.error:
            self._finish(SourceError(f"capture stream unreadable: {self.feed.error}",
                                     EXIT_CAPTURE_FAILED))
            self.stop()

    def got_stderr(self, data: bytes) -> None:
        self._stderr = (self._stderr + data.decode("utf-8", "replace"))[-8192:]
        reports = _DROPS.findall(self._stderr)
        if reports:
            self.dropped = int(reports[-1][1])
        if self.state in ("starting", self.restart_state) and any(
                mark in self._stderr for mark in RUNNING_MARKS):
            self._now_running()

    def _now_running(self) -> None:
        self.state = "running"
        self._ran = True
        self.detail = (f"restarted {self.restarts}x after the capture process died"
                       if self.restarts else "")

    def stream_ended(self) -> None:
        self._stream_done = True
        self._decode_held()
        self.feed.end()
        self._maybe_done()

    def exited(self, reason: object) -> None:
        if self._exit is None:
            self._exit = reason
            if self.pid:
                LIVE_CHILDREN.discard(self.pid)
            if self._kill_call is not None and self._kill_call.active():
                self._kill_call.cancel()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._done or not (self._stream_done and self._exit is not None):
            return
        if self._respawn_call is not None:
            return  # already restarting (processExited and processEnded both report)
        value = getattr(self._exit, "value", None)
        code = getattr(value, "exitCode", 0)
        sig = getattr(value, "signal", None)
        if self._stopping:
            self._finish(None)
            return
        err, transient = self._classify(self._stderr)
        if err is None and (code or sig) and not isinstance(value, terror.ProcessDone):
            how = f"killed by signal {sig}" if sig else f"exit status {code}"
            err = SourceError(f"capture process ended unexpectedly ({how})",
                              EXIT_CAPTURE_FAILED)
            # It had been capturing, so the setup is good: a crash or a stray kill.
            transient = self._ran
        if err is not None and transient:
            # Keep what was counted and start it again, backing off.
            self._schedule_restart(err.message)
            return
        self._finish(err)

    def _classify(self, stderr: str) -> tuple[SourceError | None, bool]:
        """(the error the tool's messages show, or None; whether trying again may help)."""
        return classify_stderr(stderr, self.spec), False

    def _schedule_restart(self, why: str) -> None:
        if self._reactor.seconds() - self._started_at >= RESTART_HEALTHY:
            self._backoff = RESTART_FIRST
        delay = self._backoff
        self._backoff = min(self._backoff * 2, RESTART_MAX)
        self.restarts += 1
        self.state = self.restart_state
        self.detail = f"{why}; {self.restart_state} in {delay:.0f} s"
        self._respawn_call = self._reactor.callLater(delay, self._respawn)

    def _respawn(self) -> None:
        self._respawn_call = None
        if self._stopping:
            return
        self._stderr = ""
        self._stream_done = False
        self._exit = None
        self.feed.restart()
        self._spawn()

    # ------------------------------------------------------------ stopping
    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._respawn_call is not None:
            if self._respawn_call.active():
                self._respawn_call.cancel()  # waiting to restart: nothing is running
            self._respawn_call = None
        if self._exit is not None or self._transport is None:
            self._stream_done = True
            self._maybe_done()
            return
        self._signal("TERM")
        self._kill_call = self._reactor.callLater(STOP_GRACE, self._signal, "KILL")

    def _signal(self, name: str) -> None:
        try:
            self._transport.signalProcess(name)
        except (terror.ProcessExitedAlready, OSError):
            pass


def _grow_pipe(transport: Any) -> None:
    """Enlarge the child's stdout pipe (Linux F_SETPIPE_SZ), best effort."""
    reader = getattr(transport, "pipes", {}).get(1)
    if reader is None:
        return
    for size in (PIPE_SIZE, 256 << 10):
        try:
            fcntl.fcntl(reader.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
            return
        except OSError:
            continue


def kill_leftovers() -> None:
    """Last resort at interpreter exit: SIGKILL capture processes still known alive."""
    for pid in list(LIVE_CHILDREN):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        LIVE_CHILDREN.discard(pid)
