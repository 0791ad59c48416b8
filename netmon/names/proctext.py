"""Pure parsers for process attribution: ``/proc/net/{tcp,udp}{,6}`` lines, cgroup
paths (which container a process runs in) and ``ss -tunp`` output.

Pure (stdlib only), no state: any thread. The scanner (:mod:`netmon.names.procscan`)
feeds them text it read from ``/proc``; the ``--ssh`` sources feed them what ``ss``
printed on a remote host. Nothing here raises on garbage: a line that does not parse
is skipped (``None``).

Addresses come out as 16 bytes in the layout of the flow keys
(``netmon.flows.keys.KEY_DTYPE``): an IPv6 address as is, an IPv4 address as 12 zero
bytes and its 4 bytes, an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a
dual-stack socket shows in ``tcp6``) as that IPv4 address, so the same connection
matches whichever table listed it. The wildcard (``0.0.0.0``, ``::``) is 16 zeros.

Process names (``comm`` is set by the process itself), executable names and cgroup
paths are untrusted: whatever they return for display is capped and passed through
:func:`netmon.core.text.safe_text`.
"""

from __future__ import annotations

import re
import socket
import struct
import sys
from dataclasses import dataclass

from netmon.core.text import safe_text

#: Characters of a process name shown (comm is 15 bytes, but an executable's name
#: or a name that ``ss`` printed on another host can be anything).
PROCESS_NAME_MAX = 64
#: Characters of a container / cgroup label.
CONTAINER_MAX = 64
#: Hex digits kept of a container id (as ``docker ps`` shows them).
SHORT_ID = 12
#: Bytes of one line considered (a /proc/net line is ~150; ss's process list can be
#: long when many processes share a socket).
LINE_CAP = 4096

#: IP protocol numbers, as in the flow keys.
TCP = 6
UDP = 17
#: The wildcard address in key layout.
ANY = bytes(16)
_MAPPED = bytes(10) + b"\xff\xff"
#: TCP states of /proc/net/tcp ("st" column) with no peer: the socket accepts.
TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class SocketLine:
    """One socket of a /proc/net table: protocol, both endpoints (key layout), the
    kernel's state code, the owning uid, the socket inode (0: no owner, e.g.
    TIME_WAIT), and its look-up key (:func:`tuple_key`)."""

    proto: int
    local: bytes
    lport: int
    remote: bytes
    rport: int
    state: int
    uid: int
    inode: int
    key: bytes

    @property
    def bound(self) -> bool:
        """No peer: a listening TCP or an unconnected UDP socket."""
        return self.rport == 0 and self.remote == ANY


def key_address(raw: bytes) -> bytes:
    """A 4- or 16-byte address in the key layout (see the module docstring)."""
    if len(raw) == 4:
        return bytes(12) + raw
    if raw[:12] == _MAPPED:
        return bytes(12) + raw[12:]
    return raw


def tuple_key(proto: int, local: bytes, lport: int, remote: bytes, rport: int) -> bytes:
    """The look-up key of a connected socket: protocol, local address (4 or 16 bytes)
    and port, remote address and port. Its layout is a flow key's
    (``netmon.flows.keys.KEY_DTYPE``) without the family byte, so a flow key ``k``
    looks up its lo end as ``k[0:1] + k[2:38]``."""
    return (bytes((proto,)) + key_address(local) + lport.to_bytes(2, "big")
            + key_address(remote) + rport.to_bytes(2, "big"))


def local_key(proto: int, local: bytes, lport: int) -> bytes:
    """The look-up key of a listening or unconnected socket (wildcard: 16 zeros):
    the first 19 bytes of a :func:`tuple_key`."""
    return bytes((proto,)) + key_address(local) + lport.to_bytes(2, "big")


def key_address_text(text: str) -> bytes | None:
    """An address written as text (``127.0.0.1``, ``::1``) in the key layout."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return key_address(socket.inet_pton(fam, text))
        except (OSError, ValueError):
            continue
    return None


_BIG_WORDS = struct.Struct(">4I")
_LITTLE_WORDS = struct.Struct("<4I")


def _hex_address(text: str, byteorder: str) -> bytes | None:
    # The kernel prints each 32-bit word of the address with %08X in host byte order,
    # so on a little-endian machine every group of 4 bytes comes out reversed.
    try:
        raw = bytes.fromhex(text)  # hex digits only: int(x, 16) would take "+1_f"
    except ValueError:
        return None
    if len(raw) == 4:
        return bytes(12) + (raw[::-1] if byteorder == "little" else raw)
    if len(raw) != 16:
        return None
    if byteorder == "little":
        raw = _LITTLE_WORDS.pack(*_BIG_WORDS.unpack(raw))
    return bytes(12) + raw[12:] if raw[:12] == _MAPPED else raw


def _endpoint(text: str, byteorder: str) -> bytes | None:
    """An endpoint in key layout: 16 address bytes and 2 port bytes (big-endian)."""
    addr, sep, port = text.partition(":")
    if not sep or len(port) != 4:
        return None
    raw = _hex_address(addr, byteorder)
    try:
        return raw + bytes.fromhex(port) if raw is not None else None
    except ValueError:
        return None


def parse_proc_net_line(line: str, proto: int,
                        byteorder: str = sys.byteorder) -> SocketLine | None:
    """One data line of ``/proc/net/tcp``, ``tcp6``, ``udp`` or ``udp6`` (``proto``:
    6 or 17), or None for the header and anything that does not parse. ``byteorder``
    is the byte order of the kernel that wrote it (this machine's, unless a test says)."""
    f = line[:LINE_CAP].split()
    # sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ...
    if len(f) < 10 or not f[0].endswith(":"):
        return None
    return _socket_line(f, proto, byteorder)


def _socket_line(f: list[str], proto: int, byteorder: str) -> SocketLine | None:
    local = _endpoint(f[1], byteorder)
    remote = _endpoint(f[2], byteorder)
    try:
        state, uid, inode = int(f[3], 16), int(f[7]), int(f[9])
    except ValueError:
        return None
    if local is None or remote is None:
        return None
    return SocketLine(proto, local[:16], int.from_bytes(local[16:], "big"), remote[:16],
                      int.from_bytes(remote[16:], "big"), state, uid, inode,
                      bytes((proto,)) + local + remote)


_MISS = SocketLine(0, ANY, 0, ANY, 0, 0, 0, 0, b"")
#: A memo of parsed lines by their lasting fields (see :func:`parse_proc_net`).
LineMemo = dict[tuple[str, ...], "SocketLine | None"]


def parse_proc_net(text: str, proto: int, byteorder: str = sys.byteorder,
                   memo: LineMemo | None = None, seen: LineMemo | None = None,
                   ) -> list[SocketLine]:
    """Every socket of one /proc/net table's text (the header and bad lines skipped).

    Decoding hex addresses is most of the cost, and a socket's line changes from one
    read to the next only in fields nobody here uses (queues, timers, its row
    number): a caller that reads the table again passes the ``memo`` it got as
    ``seen`` last time (lines keyed by endpoints, state, uid and inode), so only new
    sockets are decoded. ``seen`` gets exactly this read's lines (bounded memory)."""
    out = []
    for line in text.splitlines():
        f = line[:LINE_CAP].split()
        if len(f) < 10 or not f[0].endswith(":"):
            continue
        lasting = (f[1], f[2], f[3], f[7], f[9])
        row = memo.get(lasting, _MISS) if memo is not None else _MISS
        if row is _MISS:
            row = _socket_line(f, proto, byteorder)
        if seen is not None:
            seen[lasting] = row
        if row is not None:
            out.append(row)
    return out


# -- cgroups -------------------------------------------------------------------------

_ID = r"([0-9a-f]{64})"
#: (kind, pattern on one path component): a container runtime's scope or directory.
_CONTAINER_PARTS = [
    ("docker", re.compile(rf"^docker-{_ID}\.scope$")),
    ("podman", re.compile(rf"^libpod-(?:conmon-)?{_ID}(?:\.scope)?$")),
    ("containerd", re.compile(rf"^cri-containerd-{_ID}\.scope$")),
    ("crio", re.compile(rf"^crio-(?:conmon-)?{_ID}\.scope$")),
    ("nspawn", re.compile(r"^systemd-nspawn@(.+)\.service$")),
    ("machine", re.compile(r"^machine-(.+)\.scope$")),
    ("lxc", re.compile(r"^lxc\.payload\.(.+)$")),
]
#: Parent directories whose child is a container: /docker/<id>, /lxc/<name>, ...
_CONTAINER_PARENTS = {"docker": "docker", "lxc": "lxc", "lxc.payload": "lxc",
                      "libpod_parent": "podman"}
_HEX_ID = re.compile(rf"^{_ID}$")


def cgroup_path(text: str) -> str:
    """The cgroup path that says where a process lives, from ``/proc/<pid>/cgroup``:
    the unified (v2) hierarchy's line, else systemd's (v1) line, else a v1
    controller's path that names a container; ``""`` for the root cgroup."""
    unified = systemd = other = ""
    for line in text[: LINE_CAP * 4].splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            unified = path
        elif controllers == "name=systemd":
            systemd = path
        elif not other and container_label(path, containers_only=True):
            other = path
    return unified or systemd or other


def _unescape_unit(name: str) -> str:
    # systemd escapes "-" and other bytes in unit names as \x2d.
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def container_label(path: str, containers_only: bool = False) -> str:
    """A short label for a cgroup path: ``docker:<12 hex>``, ``podman:…``,
    ``containerd:…``, ``crio:…``, ``nspawn:<name>``, ``machine:<name>``,
    ``lxc:<name>`` for containers; otherwise the innermost path component (a systemd
    unit such as ``sshd.service``, or the name of a plain cgroup), unless
    ``containers_only``. ``""`` for the root. Capped and safe for display."""
    parts = [p for p in path.split("/") if p]
    found = ""
    # The innermost container wins (a container inside a Kubernetes pod slice, say).
    for i, part in enumerate(parts):
        for kind, pattern in _CONTAINER_PARTS:
            m = pattern.match(part)
            if m:
                found = f"{kind}:{_short(_unescape_unit(m.group(1)))}"
                break
        else:
            parent = _CONTAINER_PARENTS.get(parts[i - 1]) if i else None
            if parent:
                found = f"{parent}:{_short(part)}"
            elif _HEX_ID.match(part) and any(p.startswith("kubepods") for p in parts[:i]):
                found = f"containerd:{_short(part)}"
    if not found and not containers_only and parts:
        found = _unescape_unit(parts[-1])
    return safe_text(found, CONTAINER_MAX)


def _short(ident: str) -> str:
    return ident[:SHORT_ID] if _HEX_ID.match(ident) else ident


def process_name(comm: str, exe: str = "") -> str:
    """The name shown for a process: its ``comm``, or the executable's base name when
    comm is that name cut to the kernel's 15 bytes; capped and safe for display."""
    comm = comm.rstrip("\n")
    base = exe.rsplit("/", 1)[-1].removesuffix(" (deleted)")
    name = base if len(comm) >= 15 and base.startswith(comm) else comm
    return safe_text(name, PROCESS_NAME_MAX)


# -- ss -tunp ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SsSocket:
    """One socket of ``ss -tunp`` output with its processes, (pid, name) pairs, the
    names capped and safe for display; an empty tuple when ss could not see them."""

    proto: int
    local: bytes
    lport: int
    remote: bytes
    rport: int
    state: str
    processes: tuple[tuple[int, str], ...]


_SS_PROC = re.compile(r'\("(.*?)",pid=(\d+),fd=\d+\)')


def _ss_endpoint(text: str) -> tuple[bytes, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]  # 127.0.0.53%lo, fe80::1%eth0: the interface goes
    addr = ANY if host in ("*", "0.0.0.0", "::") else key_address_text(host)
    if port == "*":
        port = "0"
    if addr is None or not port.isdigit() or int(port) > 0xFFFF:
        return None
    return addr, int(port)


def parse_ss_line(line: str) -> SsSocket | None:
    """One line of ``ss -tunp`` (``-a`` and ``-H`` too): Netid, State, Recv-Q,
    Send-Q, local and peer address:port, then ``users:((…))``; None for the header
    and anything that does not parse."""
    f = line[:LINE_CAP].split(None, 6)
    if len(f) < 6:
        return None
    proto = {"tcp": TCP, "udp": UDP}.get(f[0])
    local, remote = _ss_endpoint(f[4]), _ss_endpoint(f[5])
    if proto is None or local is None or remote is None:
        return None
    procs = []
    if len(f) == 7 and f[6].startswith("users:(("):
        procs = [(int(pid), safe_text(name, PROCESS_NAME_MAX))
                 for name, pid in _SS_PROC.findall(f[6])]
    return SsSocket(proto, local[0], local[1], remote[0], remote[1],
                    safe_text(f[1], 16), tuple(procs))


def parse_ss(text: str) -> list[SsSocket]:
    """Every socket of ``ss -tunp`` output (header and bad lines skipped)."""
    out = []
    for line in text.splitlines():
        row = parse_ss_line(line)
        if row is not None:
            out.append(row)
    return out
