"""Remote capture over SSH: the remote host's own dumpcap or tcpdump, streamed back.

Runs on the reactor thread. ``ssh`` is spawned from an argument list (no local
shell); the one string the remote shell runs is built here with every user value
quoted by :func:`shlex.quote`. The remote side writes a pcap stream to stdout, which
goes through the same decoder as a local capture (this is a :class:`LiveCapture` with
another command). By default the remote filter leaves out the SSH connection that
carries the capture -- read from ``$SSH_CONNECTION`` on the remote side, so it is
exact even through NAT or jump hosts -- or every captured packet would make more.

sshd does not signal a command without a terminal when the connection goes, so a
remote capture on a quiet link could outlive netmon for good. The remote script
therefore runs the capture in the background and watches its own stdin, which
netmon holds open: end of input (netmon stopped or died, the link dropped) kills
the capture there; the capture ending ends the script with its exit status. Each line
netmon writes there meanwhile asks for an ``ss -tunpH`` reading on stderr, which
attributes the flows to the remote processes (:mod:`netmon.sources.sshprocs`).

A connection that drops (network, sshd restart, the remote capture killed) is
reconnected with a doubling backoff and what was counted stays; problems retrying
cannot fix -- login refused, unknown host key, no capture tool or no permission
there -- end the source with one clear line.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
from dataclasses import dataclass

from netmon.core.errors import (
    EXIT_BAD_FILTER,
    EXIT_NO_INTERFACE,
    EXIT_NO_TOOL,
    EXIT_PERMISSION,
    EXIT_SSH,
    EXIT_USAGE,
    SourceError,
)
from netmon.core.text import NAME_MAX, safe_text
from netmon.sources.capture import CaptureSpec, LiveCapture
from netmon.sources.sshprocs import REMOTE_LOOP, SsReadings

#: Interface captured when the spec names none: every interface of the remote host.
DEFAULT_REMOTE_IFACE = "any"
#: Options every connection gets: never prompt (a prompt would hang a monitor), notice
#: a dead peer within ~15 s, no agent or X11 forwarding, no terminal.
SSH_BASE_OPTIONS = ("BatchMode=yes", "ServerAliveInterval=5", "ServerAliveCountMax=3",
                    "ConnectTimeout=10", "ForwardAgent=no", "ForwardX11=no")
_HOST_OK = re.compile(r"^[A-Za-z0-9_.\-:%]+$")
_USER_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")
_IFACE_OK = re.compile(r"^[^\s'\"\\;|&$`]+$")
#: The remote script says this (and exits 127) when the host has no capture tool.
NO_TOOL_MARK = "netmon-remote: no dumpcap or tcpdump"

_REMOTE = """PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
f={bpf}; x=
if [ {exclude} = 1 ] && [ -n "$SSH_CONNECTION" ]; then
  set -- $SSH_CONNECTION
  x="not (tcp and host $1 and port $2 and host $3 and port $4)"
fi
if [ -n "$f" ] && [ -n "$x" ]; then x="($f) and $x"; elif [ -n "$f" ]; then x=$f; fi
if [ -n "$x" ]; then set -- -f "$x"; else set --; fi
if command -v dumpcap >/dev/null 2>&1; then dumpcap -P -i {iface} -w - "$@" &
else
  if [ -n "$x" ]; then set -- "$x"; fi
  if command -v tcpdump >/dev/null 2>&1; then tcpdump -U -n -s 0 -i {iface} -w - "$@" &
  else echo "{no_tool}" >&2; exit 127; fi
fi
p=$!
exec 3<&0
( {readings}; kill $p 2>/dev/null ) & r=$!
wait $p; s=$?
kill $r 2>/dev/null
exit $s"""


@dataclass(frozen=True)
class SshTarget:
    """Where to capture: ``[USER@]HOST[:IFACE]`` (IPv6 hosts in brackets)."""

    host: str
    user: str = ""
    interface: str = DEFAULT_REMOTE_IFACE

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh {host}:{self.interface}"


def parse_ssh_target(spec: str) -> SshTarget:
    """``[USER@]HOST[:IFACE]`` -> SshTarget, or a one-line usage error."""
    text = spec.strip()
    shown = f"'{safe_text(spec, NAME_MAX)}'"  # quoted back in errors: inert and capped
    user, at, rest = text.rpartition("@")
    if not at:
        user, rest = "", text
    iface = ""
    if rest.startswith("["):  # [IPv6] or [IPv6]:IFACE
        host, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise SourceError(f"invalid --ssh {shown}: write [ADDRESS]:IFACE for IPv6",
                              EXIT_USAGE)
        iface = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SourceError(f"invalid --ssh {shown}: '{safe_text(host, NAME_MAX)}' is not "
                              "an IPv6 address", EXIT_USAGE) from None
    else:
        host, _, iface = rest.partition(":")
    problem = ""
    if not host or host.startswith("-") or not _HOST_OK.match(host):
        problem = "HOST must be a host name or address"
    elif user and (user.startswith("-") or not _USER_OK.match(user)):
        problem = "USER may hold letters, digits, '.', '_' and '-'"
    elif iface and not _IFACE_OK.match(iface):
        problem = "IFACE must be an interface name such as eth0 or any"
    if problem:
        raise SourceError(f"invalid --ssh {shown}: {problem} ([USER@]HOST[:IFACE])",
                          EXIT_USAGE)
    return SshTarget(host=host, user=user, interface=iface or DEFAULT_REMOTE_IFACE)


def find_ssh() -> str:
    path = shutil.which("ssh")
    if not path:
        raise SourceError("ssh not found: install it with 'sudo apt-get install -y "
                          "openssh-client'", EXIT_NO_TOOL)
    return path


def remote_command(target: SshTarget, bpf: str = "", *, exclude_ssh: bool = True,
                   ss: str = "ss") -> str:
    """The script the remote shell runs: dumpcap, else tcpdump, writing pcap to stdout;
    ``ss`` readings on stderr when asked (``ss``: its command name)."""
    return _REMOTE.format(bpf=shlex.quote(bpf), exclude=1 if exclude_ssh else 0,
                          iface=shlex.quote(target.interface), no_tool=NO_TOOL_MARK,
                          readings=REMOTE_LOOP.format(ss=shlex.quote(ss)))


def ssh_command(target: SshTarget, bpf: str = "", *, options: tuple[str, ...] = (),
                exclude_ssh: bool = True, ss: str = "ss") -> list[str]:
    """The local argument list: ssh with safe options, the target, the remote script.
    ``options`` are extra ``-o`` options (``Port=2222``, ``IdentityFile=...``)."""
    args = [find_ssh(), "-T", "-e", "none"]
    for opt in (*SSH_BASE_OPTIONS, *options):
        args += ["-o", opt]
    args += [target.destination, remote_command(target, bpf, exclude_ssh=exclude_ssh, ss=ss)]
    setpriv = shutil.which("setpriv")
    if setpriv:  # ssh dies with netmon, whatever kills netmon
        args = [setpriv, "--pdeathsig", "KILL", "--", *args]
    return args


# (pattern in ssh's or the remote tool's stderr, exit code or None = transient, message)
_SSH_PROBLEMS: tuple[tuple[str, int | None, str], ...] = (
    ("permission denied (", EXIT_SSH, "login refused ({line}): check the user name, and that "
     "your key is in the remote ~/.ssh/authorized_keys (ssh-copy-id); netmon never asks "
     "for a password"),
    ("too many authentication failures", EXIT_SSH, "login refused ({line})"),
    ("host key verification failed", EXIT_SSH, "the host key is unknown or has changed: "
     "connect once with 'ssh {dest}' to check it and accept it"),
    ("could not resolve hostname", EXIT_SSH, "cannot resolve the host name ({line})"),
    (NO_TOOL_MARK.lower(), EXIT_NO_TOOL, "neither dumpcap nor tcpdump is installed there: "
     "install one (sudo apt-get install -y tshark, or tcpdump)"),
    ("there is no device named", EXIT_NO_INTERFACE, "no interface {iface!r} there"),
    ("no such device", EXIT_NO_INTERFACE, "no interface {iface!r} there"),
    ("doesn't exist", EXIT_NO_INTERFACE, "no interface {iface!r} there"),
    ("invalid capture filter", EXIT_BAD_FILTER, "invalid capture filter ({line})"),
    ("syntax error in filter", EXIT_BAD_FILTER, "invalid capture filter ({line})"),
    ("can't parse filter", EXIT_BAD_FILTER, "invalid capture filter ({line})"),
    ("permission", EXIT_PERMISSION, "no permission to capture on {iface!r} there: log in as "
     "root, or let that user capture (wireshark group or setcap on dumpcap)"),
    ("operation not permitted", EXIT_PERMISSION, "no permission to capture on {iface!r} "
     "there: log in as root, or let that user capture"),
    ("connection refused", None, "connection refused"),
    ("connection timed out", None, "connection timed out"),
    ("no route to host", None, "no route to host"),
    ("network is unreachable", None, "network unreachable"),
    ("closed by remote host", None, "connection closed by the remote host"),
    ("connection closed by", None, "connection closed"),
    ("connection reset", None, "connection reset"),
    ("broken pipe", None, "connection lost"),
    ("timeout, server", None, "the server stopped answering"),
    ("kex_exchange_identification", None, "connection closed during the handshake"),
)


class SshCapture(LiveCapture):
    """A remote interface captured over SSH, as one named source."""

    kind = "ssh"
    restart_state = "reconnecting"
    close_stdin = False  # the remote script watches it (see the module docstring)
    # Longer runs per decode than a local pipe: a remote stream is already late by a
    # round trip, and with several hosts per-decode overhead adds up per source.
    hold_s = 0.4

    def __init__(self, target: SshTarget, *, bpf: str = "", options: tuple[str, ...] = (),
                 exclude_ssh: bool = True, ss: str = "ss") -> None:
        spec = CaptureSpec(interface=target.interface, bpf=bpf)
        super().__init__(spec, name=target.name,
                         args=ssh_command(target, bpf, options=options,
                                          exclude_ssh=exclude_ssh, ss=ss))
        self.target = target
        #: The remote processes (ss readings in this session's stderr).
        self.processes = SsReadings(self.name)
        if exclude_ssh:
            self.note = f"{target.host}: this SSH session"

    def ask_processes(self) -> None:
        """Ask the remote side for an ``ss`` reading (the engine, every few seconds)."""
        p = self.processes
        if self.state == "running" and self._transport is not None and not (
                p.waiting or p.missing or self._stopping):
            p.waiting = True
            self._transport.write(b"\n")

    def got_stderr(self, data: bytes) -> None:
        rest = self.processes.take(data)
        if rest:
            super().got_stderr(rest)

    def _spawn(self) -> None:
        self.processes.restart()
        super()._spawn()

    def _classify(self, stderr: str) -> tuple[SourceError | None, bool]:
        low = stderr.lower()
        for pattern, code, text in _SSH_PROBLEMS:
            at = low.find(pattern)
            if at < 0:
                continue
            line = stderr[stderr.rfind("\n", 0, at) + 1:].split("\n", 1)[0].strip()
            line = safe_text(line.removeprefix("dumpcap: ").removeprefix("tcpdump: "), 120)
            what = text.format(line=line, dest=self.target.destination,
                               iface=self.target.interface)
            return SourceError(f"{self.name}: {what}", code or 0), code is None
        return None, False
