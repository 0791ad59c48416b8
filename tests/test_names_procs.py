"""Process attribution with REAL processes: servers and clients on loopback that name
themselves (prctl), a UDP socket, IPv6 and dual-stack sockets, a server in its own
network namespace joined to the host by a veth pair, processes moved into other
cgroups, late packets after a process exits, the resolver thread's on-demand refresh,
and ``ss -tunp`` output captured here."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netmon.names.procs import TCP, UDP, UNKNOWN, ProcessResolver, table_from_ss
from netmon.names.procscan import ProcessScanner
from netmon.testing.ports import free_port
from netmon.testing.sockproc import SocketProcess
from tests.conftest import ROOT

LO = socket.inet_aton("127.0.0.1")
LO6 = socket.inet_pton(socket.AF_INET6, "::1")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def netns(pid: int | str) -> int:
    return int(os.readlink(f"/proc/{pid}/ns/net").split("[")[1].rstrip("]"))


def proc(name: str, mode: str, host: str, port: int, **kw) -> SocketProcess:
    return SocketProcess(name, mode, host, port, env=ENV, **kw)


def need_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, veth pairs, cgroups)")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def test_tcp_server_and_client_on_loopback() -> None:
    with proc("nm-srv-tcp", "listen", "127.0.0.1", 0) as srv, \
            proc("nm-cli-tcp", "connect", "127.0.0.1", srv.port) as cli:
        table = ProcessScanner().refresh()
        me = pwd.getpwuid(os.geteuid()).pw_name
        server = table.lookup(TCP, LO, srv.port, LO, cli.port)
        client = table.lookup(TCP, LO, cli.port, LO, srv.port)
        assert (server.pid, server.name, server.user) == (srv.pid, comm(srv.pid), me)
        assert (client.pid, client.name, client.user) == (cli.pid, comm(cli.pid), me)
        assert server.name == "nm-srv-tcp" and client.name == "nm-cli-tcp"
        assert server.netns == client.netns == netns("self")
        # a new peer whose accepted socket is not in the table: the listener answers
        assert table.lookup(TCP, LO, srv.port, LO, 1).pid == srv.pid
        assert table.lookup(TCP, socket.inet_aton("127.0.0.9"), srv.port, LO, 1) is UNKNOWN
        assert table.lookup(TCP, LO, free_port(), LO, 1) is UNKNOWN


def test_udp_and_ipv6_and_dual_stack() -> None:
    with proc("nm-udp", "udp", "127.0.0.1", 0) as udp, \
            proc("nm-srv6", "listen", "::1", 0) as srv6, \
            proc("nm-cli6", "connect", "::1", srv6.port) as cli6, \
            proc("nm-dual", "listen", "::", 0) as dual, \
            proc("nm-cli4", "connect", "127.0.0.1", dual.port) as cli4:
        table = ProcessScanner().refresh()
        assert table.lookup(UDP, LO, udp.port, LO, 5353).name == "nm-udp"
        assert table.lookup(TCP, LO, udp.port, LO, 5353) is UNKNOWN
        assert table.lookup(TCP, LO6, srv6.port, LO6, cli6.port).pid == srv6.pid
        assert table.lookup(TCP, LO6, cli6.port, LO6, srv6.port).pid == cli6.pid
        # the IPv4 connection to a "::" listener is in tcp6 as ::ffff:127.0.0.1
        assert table.lookup(TCP, LO, dual.port, LO, cli4.port).pid == dual.pid
        assert table.lookup(TCP, LO, cli4.port, LO, dual.port).pid == cli4.pid


def test_hostile_process_name_is_escaped() -> None:
    with proc("\x1b]0;pwn\x07\x1b[2J", "udp", "127.0.0.1", 0) as evil:
        hit = ProcessScanner().refresh().lookup(UDP, LO, evil.port, LO, 1)
        assert hit.pid == evil.pid
        assert hit.name == "\\x1b]0;pwn\\x07\\x1b[2J"  # comm keeps 15 bytes
        assert hit.name.isprintable()


def test_sockets_keep_their_owner_for_the_grace_period() -> None:
    now = [100.0]
    scanner = ProcessScanner(grace=5.0, clock=lambda: now[0])
    with proc("nm-srv-gr", "listen", "127.0.0.1", 0) as srv:
        with proc("nm-cli-gr", "connect", "127.0.0.1", srv.port) as cli:
            assert scanner.refresh().lookup(TCP, LO, cli.port, LO, srv.port).pid == cli.pid
        now[0] += 4.0  # the client has exited; its socket lingers or is gone
        late = scanner.refresh().lookup(TCP, LO, cli.port, LO, srv.port)
        assert (late.pid, late.name) == (cli.pid, "nm-cli-gr")
        now[0] += 6.0
        assert scanner.refresh().lookup(TCP, LO, cli.port, LO, srv.port) is UNKNOWN


def test_incremental_refresh_finds_new_sockets_of_known_processes() -> None:
    scanner = ProcessScanner()
    with proc("nm-pairs", "pairs", "127.0.0.1", 0, count=3) as srv:
        first = scanner.refresh()
        assert first.lookup(TCP, LO, srv.port, LO, 1).pid == srv.pid
        with proc("nm-late", "connect", "127.0.0.1", srv.port) as cli:
            table = scanner.refresh()
            assert table.lookup(TCP, LO, srv.port, LO, cli.port).pid == srv.pid
            assert table.lookup(TCP, LO, cli.port, LO, srv.port).pid == cli.pid
            assert table.generation == first.generation + 1


def test_resolver_refreshes_on_demand_for_a_new_process() -> None:
    resolver = ProcessResolver(ProcessScanner().refresh, period=60.0,
                               min_interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while resolver.table.generation == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with proc("nm-late-udp", "udp", "127.0.0.1", 0) as udp:
            first = resolver.lookup(UDP, LO, udp.port, LO, 9)  # unknown: asks for a scan
            assert first is UNKNOWN
            while time.monotonic() < deadline:
                hit = resolver.lookup(UDP, LO, udp.port, LO, 9)
                if hit.known:
                    break
                time.sleep(0.01)
            assert (hit.pid, hit.name) == (udp.pid, "nm-late-udp")
    finally:
        resolver.stop()
    assert not resolver._thread.is_alive()


def test_resolver_stop_raises_what_a_refresh_raised() -> None:
    def broken():
        raise ZeroDivisionError("bug")

    resolver = ProcessResolver(broken).start()
    with pytest.raises(ZeroDivisionError):
        resolver.stop()


# -- other network namespaces ----------------------------------------------------------


def ip_cmd(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=20)


def test_server_in_its_own_network_namespace() -> None:
    """A server inside a namespace, a client outside, joined by a veth pair on a
    link-local /30: each end goes to its own process and namespace."""
    need_root("ip")
    tag = os.getpid() % 100_000
    ns, host_if, ns_if = f"netmon-t{tag}", f"nmv{tag}a", f"nmv{tag}b"
    outer, inner = "169.254.77.1", "169.254.77.2"
    try:
        ip_cmd("netns", "add", ns)
        ip_cmd("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip_cmd("link", "set", ns_if, "netns", ns)
        ip_cmd("addr", "add", f"{outer}/30", "dev", host_if)
        ip_cmd("link", "set", host_if, "up")
        ip_cmd("-n", ns, "addr", "add", f"{inner}/30", "dev", ns_if)
        ip_cmd("-n", ns, "link", "set", ns_if, "up")
        ip_cmd("-n", ns, "link", "set", "lo", "up")
        with proc("nm-inside", "listen", inner, 0, prefix=("ip", "netns", "exec", ns)) as srv, \
                proc("nm-outside", "connect", inner, srv.port) as cli:
            table = ProcessScanner().refresh()
            a, b = socket.inet_aton(inner), socket.inet_aton(outer)
            inside = table.lookup(TCP, a, srv.port, b, cli.port)
            outside = table.lookup(TCP, b, cli.port, a, srv.port)
            assert (inside.pid, inside.name) == (srv.pid, "nm-inside")
            assert inside.netns == netns(srv.pid) != netns("self")
            assert (outside.pid, outside.netns) == (cli.pid, netns("self"))
            assert table.namespaces >= 2
    finally:
        ip_cmd("link", "del", host_if, check=False)
        ip_cmd("netns", "del", ns, check=False)


def test_namespace_without_veth_via_unshare() -> None:
    """The same 127.0.0.1 port bound in netmon's namespace and in another: the
    other namespace's socket is found too, and netmon's own wins the 4-tuple."""
    need_root("unshare")
    port = free_port(socket.SOCK_DGRAM)
    with proc("nm-netns-udp", "udp", "127.0.0.1", port,
              prefix=("unshare", "--net", "--")) as hidden:
        table = ProcessScanner().refresh()
        hit = table.lookup(UDP, LO, port, LO, 9)
        assert (hit.pid, hit.name) == (hidden.pid, "nm-netns-udp")
        assert hit.netns == netns(hidden.pid) != netns("self")
        with proc("nm-host-udp", "udp", "127.0.0.1", port) as mine:
            assert ProcessScanner().refresh().lookup(UDP, LO, port, LO, 9).pid == mine.pid


# -- cgroups -------------------------------------------------------------------------


def cgroup2_root() -> Path:
    """Where the unified cgroup hierarchy is mounted, or skip the test."""
    need_root()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            root = Path(left.split()[4])
            if os.access(root, os.W_OK):
                return root
    pytest.skip("no writable cgroup2 hierarchy mounted (/sys/fs/cgroup)")


def move_to(group: Path, pid: int) -> None:
    (group / "cgroup.procs").write_text(str(pid))


def remove_cgroup(group: Path) -> None:
    # Empty only once the kernel has reaped the killed member: a few retries.
    for _ in range(100):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def test_processes_in_other_cgroups() -> None:
    root = cgroup2_root()
    plain = root / f"netmon-test-{os.getpid()}"
    ident = f"{os.getpid():012x}" + "ab" * 26
    docker = root / f"docker-{ident}.scope"
    try:
        plain.mkdir()
        docker.mkdir()
        with proc("nm-cg-plain", "udp", "127.0.0.1", 0) as a, \
                proc("nm-cg-docker", "udp", "127.0.0.1", 0) as b:
            move_to(plain, a.pid)
            move_to(docker, b.pid)
            table = ProcessScanner().refresh()
            in_plain = table.lookup(UDP, LO, a.port, LO, 9)
            in_docker = table.lookup(UDP, LO, b.port, LO, 9)
            assert (in_plain.pid, in_plain.container) == (a.pid, plain.name)
            assert (in_docker.pid, in_docker.container) == (b.pid, f"docker:{ident[:12]}")
    finally:
        for group in (plain, docker):
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    move_to(root, int(pid))
            remove_cgroup(group)
    assert not plain.exists() and not docker.exists()


# -- ss -tunp --------------------------------------------------------------------------


def test_ss_output_captured_here() -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    with proc("nm-ss-srv", "listen", "127.0.0.1", 0) as srv, \
            proc("nm-ss-cli", "connect", "127.0.0.1", srv.port) as cli, \
            proc("nm-ss-udp", "udp", "127.0.0.1", 0) as udp:
        out = subprocess.run(["ss", "-tunpH"], capture_output=True, text=True,
                             check=True).stdout
        table = table_from_ss(out)
        assert table.lookup(TCP, LO, srv.port, LO, cli.port).pid == srv.pid
        hit = table.lookup(TCP, LO, cli.port, LO, srv.port)
        assert (hit.pid, hit.name) == (cli.pid, comm(cli.pid))
        # -a adds listening and unconnected sockets; the header line is skipped
        everything = subprocess.run(["ss", "-tunap"], capture_output=True, text=True,
                                    check=True).stdout
        table = table_from_ss(everything)
        assert table.lookup(TCP, LO, srv.port, LO, 1).name == "nm-ss-srv"
        assert table.lookup(UDP, LO, udp.port, LO, 1).pid == udp.pid
        assert table.lookup(UDP, LO, free_port(socket.SOCK_DGRAM), LO, 1) is UNKNOWN
