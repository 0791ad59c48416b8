"""The pure parsers of process attribution, on fixed text: /proc/net socket tables
(IPv4 and IPv6, both byte orders), cgroup paths of each container runtime, ``ss -tunp``
output, and hostile text (escape sequences, garbage, huge lines)."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from netmon.flows.keys import KEY_DTYPE
from netmon.names.procs import UNKNOWN, ProcessInfo, ProcessTable, table_from_ss
from netmon.names.proctext import (
    ANY,
    CONTAINER_MAX,
    PROCESS_NAME_MAX,
    TCP,
    UDP,
    cgroup_path,
    container_label,
    key_address,
    parse_proc_net,
    parse_proc_net_line,
    parse_ss,
    parse_ss_line,
    process_name,
    tuple_key,
)

V4 = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
      "timeout inode\n"
      "   0: 0100007F:1F90 0200007F:C350 01 00000000:00000000 00:00000000 00000000  1000"
      "        0 45678 1 0000000000000000 20 4 30 10 -1\n"
      "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
      "        0 1273 1 0000000089fc9a3d 100 0 0 10 0\n"
      "   2: 0100007F:1F90 0300007F:C351 06 00000000:00000000 03:00000F8B 00000000     0"
      "        0 0 3 0000000000000000\n")

V6 = ("  sl  local_address                         remote_address                        st"
      " tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 00000000000000000000000001000000:0050 B80D0120000000000000000001000000:D431 01"
      " 00000000:00000000 00:00000000 00000000   33        0 99 1 0000000000000000 20 4 0 10 -1\n"
      "   1: 0000000000000000FFFF0000010200C0:01BB 0000000000000000FFFF0000020200C0:9C40 01"
      " 00000000:00000000 00:00000000 00000000    0        0 100 1 0000000000000000\n")


def ip(text: str) -> bytes:
    return key_address(socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET,
                                        text))


def test_ipv4_lines_little_endian() -> None:
    rows = parse_proc_net(V4, TCP, "little")
    assert len(rows) == 3  # the header is skipped
    r = rows[0]
    assert (r.proto, r.local, r.lport, r.remote, r.rport) == (
        TCP, ip("127.0.0.1"), 8080, ip("127.0.0.2"), 50000)
    assert (r.state, r.uid, r.inode) == (1, 1000, 45678)
    assert r.local == bytes(12) + b"\x7f\x00\x00\x01"  # the flow keys' IPv4 layout
    assert (rows[1].local, rows[1].lport, rows[1].remote, rows[1].state) == (ANY, 22, ANY, 10)
    assert rows[2].inode == 0  # TIME_WAIT: no owner


def test_ipv4_big_endian_kernel() -> None:
    line = "   0: 7F000001:1F90 7F000002:C350 01 0:0 0:0 0 0 0 7 1"
    r = parse_proc_net_line(line, TCP, "big")
    assert r is not None and (r.local, r.remote, r.inode) == (ip("127.0.0.1"),
                                                              ip("127.0.0.2"), 7)


def test_ipv6_lines_and_v4_mapped() -> None:
    rows = parse_proc_net(V6, TCP, "little")
    assert [(r.local, r.lport, r.remote, r.rport, r.uid, r.inode) for r in rows] == [
        (ip("::1"), 80, ip("2001:db8::1"), 54321, 33, 99),
        # ::ffff:192.0.2.1 (a dual-stack socket) reads as the IPv4 address
        (ip("192.0.2.1"), 443, ip("192.0.2.2"), 40000, 0, 100),
    ]
    big = ("   0: 20010DB8000000000000000000000001:0050 00000000000000000000000000000001:0051"
           " 01 0:0 0:0 0 0 0 5 1")
    r = parse_proc_net_line(big, UDP, "big")
    assert r is not None and (r.proto, r.local, r.remote) == (UDP, ip("2001:db8::1"),
                                                              ip("::1"))


@pytest.mark.parametrize("line", [
    "", "garbage", "   0: 0100007F:1F90", "   0: XYZ0007F:1F90 0200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F:1F9 0200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F1F90 0200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F:1F90 0200007F:C350 ZZ 0:0 0:0 0 0 0 1",
    "   0: 0100007F:1F90 0200007F:C350 01 0:0 0:0 0 x 0 1",
    "   0: 0100007F:1F90 0200007F:C350 01 0:0 0:0 0 0 0 -",
    "   0: 01000:1F90 0200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F:-001 0200007F:C350 01 0:0 0:0 0 0 0 1",  # int(x, 16) takes these
    "   0: 0100007F:+1F9 0200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F:1F90 +200007F:C350 01 0:0 0:0 0 0 0 1",
    "   0: 0100007F:1F90 0200007F0200007F0200007F0200007F00:C350 01 0:0 0:0 0 0 0 1",
    "\x1b[2J\x00\x00 " * 1000,
])
def test_bad_lines_are_skipped(line: str) -> None:
    assert parse_proc_net_line(line, TCP) is None


def test_memo_decodes_only_new_lines() -> None:
    seen: dict = {}
    first = parse_proc_net(V4, TCP, "little", seen=seen)
    # queues, timers and row numbers change between reads; the memo still hits
    again = V4.replace("00000000:00000000 00:00000000", "00000010:00000000 02:000000AB")
    again = again.replace("   1: ", "   7: ")
    memo, seen2 = seen, {}
    second = parse_proc_net(again, TCP, "little", memo=memo, seen=seen2)
    assert second == first and all(a is b for a, b in zip(first, second, strict=True))
    assert seen2.keys() == seen.keys()
    # a changed state or inode is a new line
    third = parse_proc_net(V4.replace(" 01 0000", " 08 0000"), TCP, "little", memo=seen2)
    assert third[0].state == 8 and third[0] is not first[0]


def test_random_garbage_never_raises() -> None:
    rng = random.Random(14)
    good = V4 + V6
    for _ in range(3000):
        text = list(good)
        for _ in range(rng.randint(1, 20)):
            text[rng.randrange(len(text))] = chr(rng.choice([0, 10, 27, 58, 70, 0x202E,
                                                             rng.randrange(0x110000)]))
        if rng.random() < 0.3:
            text = text[:rng.randrange(len(text))]
        for proto in (TCP, UDP):
            for row in parse_proc_net("".join(text), proto):
                assert len(row.local) == len(row.remote) == 16
                assert 0 <= row.lport <= 0xFFFF and 0 <= row.rport <= 0xFFFF
        parse_ss("".join(text))
        cgroup_path("".join(text))


# -- cgroups -------------------------------------------------------------------------

HEX = "3f2a9c0e4b1d" + "0123456789abcdef" * 3 + "0a1b"  # 64 hex digits


@pytest.mark.parametrize(("text", "label"), [
    (f"0::/system.slice/docker-{HEX}.scope\n", "docker:3f2a9c0e4b1d"),
    (f"12:memory:/docker/{HEX}\n1:name=systemd:/docker/{HEX}\n0::/\n", "docker:3f2a9c0e4b1d"),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/"
     f"cri-containerd-{HEX}.scope\n", "containerd:3f2a9c0e4b1d"),
    (f"11:pids:/kubepods/burstable/pod1234-5678/{HEX}\n1:name=systemd:/kubepods/burstable/"
     f"pod1234-5678/{HEX}\n", "containerd:3f2a9c0e4b1d"),
    (f"0::/kubepods.slice/kubepods-pod9.slice/crio-{HEX}.scope\n", "crio:3f2a9c0e4b1d"),
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{HEX}.scope/"
     "container\n", "podman:3f2a9c0e4b1d"),
    (f"0::/machine.slice/libpod-{HEX}.scope\n", "podman:3f2a9c0e4b1d"),
    ("0::/machine.slice/systemd-nspawn@debian.service/payload\n", "nspawn:debian"),
    ("0::/machine.slice/machine-my\\x2dvm.scope\n", "machine:my-vm"),
    ("0::/lxc.payload.web1/system.slice/sshd.service\n", "lxc:web1"),
    ("7:cpu:/lxc/web2\n1:name=systemd:/lxc/web2/init.scope\n0::/\n", "lxc:web2"),
    ("0::/system.slice/sshd.service\n", "sshd.service"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
    ("0::/netmon-test-42\n", "netmon-test-42"),
    ("0::/\n", ""),
    # this machine's hybrid layout: a v1 controller's sandbox cgroup names no container
    ("4:memory:/process_api/6148dcaa16af948b1803d6e07d57b8bf\n1:name=systemd:/\n0::/\n", ""),
    ("", ""),
    ("no colons here\n::\n0:\n", ""),
])
def test_container_labels(text: str, label: str) -> None:
    assert container_label(cgroup_path(text)) == label


def test_hostile_cgroup_names_are_escaped_and_capped() -> None:
    assert container_label("/evil\x1b]0;pwn\x07") == "evil\\x1b]0;pwn\\x07"
    assert container_label("/machine.slice/machine-a\\x1bb.scope") == "machine:a\\x1bb"
    long = container_label("/" + "x" * 100_000)
    assert len(long) == CONTAINER_MAX and long.endswith("…")
    assert container_label(cgroup_path("0::/" + "a/" * 50_000)) == "a"


def test_process_names() -> None:
    assert process_name("sshd\n", "/usr/sbin/sshd") == "sshd"
    # comm is cut to 15 bytes: the executable's name says more
    assert process_name("systemd-resolve\n", "/usr/lib/systemd/systemd-resolved") == (
        "systemd-resolved")
    assert process_name("python3\n", "/usr/bin/python3.11") == "python3"  # not cut
    assert process_name("aaaaaaaaaaaaaaa\n", "/tmp/bbb (deleted)") == "aaaaaaaaaaaaaaa"
    assert process_name("\x1b[31mred\x07\n") == "\\x1b[31mred\\x07"
    assert len(process_name("x" * 15, "/" + "x" * 500)) == PROCESS_NAME_MAX


# -- ss -tunp ------------------------------------------------------------------------

SS = """Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   ESTAB  0      0          127.0.0.1:22       127.0.0.1:51000 users:(("sshd",pid=1240,fd=4),("sshd",pid=1234,fd=4))
udp   UNCONN 0      0      127.0.0.53%lo:53         0.0.0.0:*     users:(("systemd-resolve",pid=600,fd=13))
tcp   LISTEN 0      4096            [::]:22            [::]:*     users:(("sshd",pid=1,fd=3))
tcp   ESTAB  0      0    [::ffff:127.0.0.1]:8080 [::ffff:127.0.0.1]:40000 users:(("py",pid=5,fd=6))
tcp   ESTAB  0      0     [fe80::1%eth0]:22      [fe80::2]:5000
tcp   LISTEN 0      128                *:80               *:*
tcp   ESTAB  0      0                ::1:631            ::1:41000 users:(("cupsd",pid=9,fd=7))
udp   ESTAB  0      0           10.0.0.5:40000   192.0.2.1:443   users:(("\x1b]0;pwn\x07",pid=77,fd=3))
tcp   ESTAB  0      0          127.0.0.1:99999    127.0.0.1:1
bogus
"""  # noqa: E501


def test_ss_output() -> None:
    rows = parse_ss(SS)
    assert [(r.proto, r.local, r.lport, r.remote, r.rport, r.state, r.processes)
            for r in rows] == [
        (TCP, ip("127.0.0.1"), 22, ip("127.0.0.1"), 51000, "ESTAB",
         ((1240, "sshd"), (1234, "sshd"))),
        (UDP, ip("127.0.0.53"), 53, ANY, 0, "UNCONN", ((600, "systemd-resolve"),)),
        (TCP, ANY, 22, ANY, 0, "LISTEN", ((1, "sshd"),)),
        (TCP, ip("127.0.0.1"), 8080, ip("127.0.0.1"), 40000, "ESTAB", ((5, "py"),)),
        (TCP, ip("fe80::1"), 22, ip("fe80::2"), 5000, "ESTAB", ()),
        (TCP, ANY, 80, ANY, 0, "LISTEN", ()),
        (TCP, ip("::1"), 631, ip("::1"), 41000, "ESTAB", ((9, "cupsd"),)),
        (UDP, ip("10.0.0.5"), 40000, ip("192.0.2.1"), 443, "ESTAB",
         ((77, "\\x1b]0;pwn\\x07"),)),
    ]
    assert parse_ss_line("tcp ESTAB 0 0 [::1]:x [::1]:2") is None


def test_table_from_ss_looks_up_like_proc() -> None:
    table = table_from_ss(SS)
    lo = socket.inet_aton("127.0.0.1")
    hit = table.lookup(TCP, lo, 22, lo, 51000)
    assert (hit.pid, hit.name) == (1234, "sshd")  # shared socket: lowest pid
    # a listening socket on the wildcard matches any local address and peer
    assert table.lookup(TCP, socket.inet_aton("192.0.2.9"), 22, lo, 1).pid == 1
    assert table.lookup(UDP, socket.inet_aton("127.0.0.53"), 53, lo, 9).name == (
        "systemd-resolve")
    assert table.lookup(UDP, lo, 53, lo, 9) is UNKNOWN  # bound to another address
    assert table.lookup(TCP, lo, 80, lo, 9) is UNKNOWN  # no process column
    assert table.processes == 6 and table.sockets == 8


def test_lookup_order_and_flow_key_layout() -> None:
    """An exact 4-tuple beats a bound address, which beats the wildcard; the table
    reads both ends straight out of a flow key (netmon.flows.keys layout)."""
    a, b = ip("10.0.0.1"), ip("10.0.0.2")
    exact, bound, wild, cli = (ProcessInfo(i, n) for i, n in
                               ((1, "exact"), (2, "bound"), (3, "wild"), (4, "client")))
    table = ProcessTable(
        connected={tuple_key(TCP, a, 80, b, 5000): exact,
                   tuple_key(TCP, b, 5000, a, 80): cli},
        bound={bytes([TCP]) + a + (80).to_bytes(2, "big"): bound,
               bytes([TCP]) + ANY + (81).to_bytes(2, "big"): wild})
    assert table.lookup(TCP, a[12:], 80, b[12:], 5000) is exact
    assert table.lookup(TCP, a, 80, b, 5001) is bound
    assert table.lookup(TCP, b, 81, a, 1) is wild
    assert table.lookup(UDP, a, 80, b, 5000) is UNKNOWN
    assert not UNKNOWN.known and exact.known
    key = np.zeros(1, KEY_DTYPE)
    key["p"], key["f"] = TCP, 4
    key["a"], key["ap"] = np.frombuffer(a, "V16"), 80
    key["b"], key["bp"] = np.frombuffer(b, "V16"), 5000
    assert table.owners(key.tobytes()) == (exact, cli)
