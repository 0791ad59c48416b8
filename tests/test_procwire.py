"""Process attribution in the engine, with REAL processes on loopback: an echo server
and clients that name themselves (prctl) exchange bounded traffic on 127.0.0.1 while
the real engine captures ``lo``; the flows in --flows-out carry the clients' pids and
names (and the server's as ``peer_process``), the per-process totals plus "unknown"
add up to the snapshot's totals, and the resolver thread is gone after the engine
stops. The ``--ssh`` path reads ``ss`` over a real OpenSSH login on 127.0.0.1.
Unit tests of the attributor's choices use tables built by hand."""

from __future__ import annotations

import json
import os
import pwd
import queue
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netmon.core.settings import Settings
from netmon.core.values import Snapshot
from netmon.engine.engine import Engine
from netmon.flows.procattr import UNKNOWN_TEXT, ProcessAttributor
from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.names.procs import ProcessInfo, ProcessTable
from netmon.names.proctext import ANY, TCP, local_key, tuple_key
from netmon.sources.capture import CaptureSpec, LiveCapture
from netmon.sources.files import FileSource
from netmon.sources.ssh import SshCapture, parse_ssh_target
from netmon.testing.ports import free_port
from netmon.testing.sockproc import SocketProcess
from tests.conftest import ROOT, captures_dir, need_capture

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LO = bytes(12) + socket.inet_aton("127.0.0.1")
PAYLOAD = 20_000


def procs_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "netmon-procs"]


def wait_running(snaps: queue.SimpleQueue, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = snaps.get(timeout=timeout)
        if snap.sources and all(s.state == "running" for s in snap.sources):
            return
    raise AssertionError("the source never ran")


def last_snapshot(snaps: queue.SimpleQueue) -> Snapshot:
    last = None
    while not snaps.empty():
        last = snaps.get()
    assert last is not None and last.finished
    return last


def exchange(port: int, clients: int) -> tuple[SocketProcess, list[SocketProcess]]:
    """A named echo server and ``clients`` named clients that each sent and got back
    PAYLOAD bytes (the caller closes them)."""
    srv = SocketProcess("nm-echo-srv", "echo", "127.0.0.1", port, env=ENV)
    clis = [SocketProcess("nm-send-cli", "send", "127.0.0.1", port, count=PAYLOAD, env=ENV)
            for _ in range(clients)]
    return srv, clis


def check_totals(snap: Snapshot, flows: list[dict]) -> dict[str, dict]:
    """The per-process entries add up to the snapshot's totals; each process's entry
    is the sum of its flows in --flows-out."""
    t = snap.totals
    entries = {p.name: p for p in snap.processes}
    assert sum(p.packets for p in snap.processes) == t.ip_packets
    assert sum(p.bytes for p in snap.processes) == t.bytes
    assert sum(p.flows for p in snap.processes) == t.flows_seen == len(flows)
    assert snap.processes[-1].kind == "unknown"
    by_name: dict[str, dict] = {}
    for f in flows:
        key = f["process"] if f["pid"] else UNKNOWN_TEXT
        got = by_name.setdefault(key, {"packets": 0, "bytes": 0, "flows": 0})
        got["packets"] += f["pkts_a2b"] + f["pkts_b2a"]
        got["bytes"] += f["bytes_a2b"] + f["bytes_b2a"]
        got["flows"] += 1
    for name, sums in by_name.items():
        e = entries[name]
        assert (e.packets, e.bytes, e.flows) == (sums["packets"], sums["bytes"], sums["flows"])
    return by_name


@pytest.mark.live
def test_live_capture_names_the_real_processes_and_totals_add_up(tmp_path: Path) -> None:
    need_capture()
    port, closed = free_port(), free_port(socket.SOCK_DGRAM)
    flows_out = tmp_path / "flows.jsonl"
    snaps: queue.SimpleQueue = queue.SimpleQueue()
    engine = Engine(Settings(tick=0.25, cluster=False, flows_out=str(flows_out)),
                    [LiveCapture(CaptureSpec("lo", f"tcp port {port} or icmp"))], snaps.put)
    engine.procs.attributor.window = 1.0  # the ICMP flow is given up on sooner
    engine.start()
    try:
        wait_running(snaps)
        assert procs_threads() == ["netmon-procs"]
        srv, clis = exchange(port, 3)
        try:
            # The kernel answers a datagram to a closed port with ICMP: a flow no
            # process owns, the explicit unknown.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"x", ("127.0.0.1", closed))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                snap = snaps.get(timeout=20)
                names = {p.name: p for p in snap.processes}
                given_up = [f for f in snap.top_flows if f.process == UNKNOWN_TEXT]
                if names.get("nm-send-cli") and names["nm-send-cli"].flows == 3 and \
                        names[UNKNOWN_TEXT].flows == 1 and given_up:
                    break
            else:
                raise AssertionError(f"never attributed: {snap.processes}")
            by_port = {c.port: c.pid for c in clis}
        finally:
            for c in clis:
                c.close()
            srv.close()
        time.sleep(0.5)  # the closing packets reach netmon
    finally:
        engine.stop("test over")
        assert engine.join(30)
    assert procs_threads() == []
    assert not engine.procs.resolver._thread.is_alive()
    snap = last_snapshot(snaps)
    flows = [json.loads(line) for line in flows_out.read_text().splitlines()]
    tcp = [f for f in flows if f["proto"] == 6]
    assert len(tcp) == 3
    me = pwd.getpwuid(os.geteuid()).pw_name
    for f in tcp:
        assert f["port_b"] == port and f["port_a"] in by_port
        assert (f["process"], f["pid"], f["user"]) == ("nm-send-cli", by_port[f["port_a"]], me)
        assert f["peer_process"] == "nm-echo-srv"
        assert f["bytes_a2b"] >= PAYLOAD and f["bytes_b2a"] >= PAYLOAD
    (icmp,) = [f for f in flows if f["proto"] == 1]
    assert (icmp["process"], icmp["pid"]) == (UNKNOWN_TEXT, 0)
    sums = check_totals(snap, flows)
    assert sums["nm-send-cli"]["flows"] == 3 and sums[UNKNOWN_TEXT]["flows"] == 1
    assert snap.to_json()["processes"][0]["name"] == "nm-send-cli"
    assert engine.procs.attributor.lookups >= 4 and not engine.result.warnings


def test_a_replay_has_no_process_thread_column_or_totals(tmp_path: Path) -> None:
    path = captures_dir() / "02_tls_firefox.pcap"
    snaps: queue.SimpleQueue = queue.SimpleQueue()
    engine = Engine(Settings(read=str(path), tick=0.1, cluster=False), [FileSource(str(path))],
                    snaps.put)
    assert engine.procs.resolver is None and not engine.procs.active
    engine.start()
    assert engine.join(60)
    snap = last_snapshot(snaps)
    assert snap.processes == () and snap.to_json()["processes"] == []
    assert all(not f.process and not f.pid for f in engine.table.live_views())
    assert procs_threads() == []


@pytest.mark.live
def test_the_resolver_thread_ends_on_every_stop(tmp_path: Path) -> None:
    """Stopped at once, before the capture ran; and a source that fails at start."""
    need_capture()
    for spec in (CaptureSpec("lo", f"udp port {free_port(socket.SOCK_DGRAM)}"),
                 CaptureSpec("nm-no-such-if0", "")):
        engine = Engine(Settings(tick=0.1, cluster=False), [LiveCapture(spec)], lambda s: None)
        engine.start()
        engine.stop("test over")
        assert engine.join(30)
        assert procs_threads() == []


# ------------------------------------------------------------------ the attributor
def flow_table(rows: list[tuple[bytes, int, bytes, int]]) -> FlowTable:
    """A table with one TCP flow per (client addr, port, server addr, port); the
    client sends first (a SYN)."""
    recs = [(1.0 + i, 60, TCP, c[12:], cp, s[12:], sp, 0x02)
            for i, (c, cp, s, sp) in enumerate(rows)]
    table = FlowTable()
    table.add_batch(PacketBatch.from_records(recs))
    return table


class Fixed:
    def __init__(self, table: ProcessTable) -> None:
        self.table = table
        self.asked = 0

    def request_refresh(self) -> None:
        self.asked += 1


def by_port(table: FlowTable, port: int) -> dict:
    (v,) = [v for v in table.live_views() if v.port_a == port]
    return {"process": v.process, "pid": v.pid, "peer": v.peer_process}


def test_attributor_picks_the_local_end_the_client_and_gives_up_in_time() -> None:
    remote = bytes(12) + socket.inet_aton("192.0.2.7")
    here = bytes(12) + socket.inet_aton("10.1.1.1")
    cli, srv, web = ProcessInfo(11, "curl"), ProcessInfo(22, "nginx"), ProcessInfo(33, "web")
    ptable = ProcessTable(
        connected={tuple_key(TCP, LO, 40001, LO, 8080): cli,
                   tuple_key(TCP, LO, 8080, LO, 40001): srv,
                   tuple_key(TCP, here, 40003, remote, 443): cli},
        bound={local_key(TCP, ANY, 443): web, local_key(TCP, LO, 8080): srv},
        generation=1)
    table = flow_table([(LO, 40001, LO, 8080),  # both ends local: the client
                        (LO, 40002, LO, 8080),  # the client's socket not read yet
                        (here, 40003, remote, 443),  # only the local end is known
                        (remote, 40004, here, 443),  # to the wildcard listener here
                        (here, 40005, remote, 443)])  # nginx on *:443 must not claim it
    src = Fixed(ptable)
    attr = ProcessAttributor(table, window=5.0)
    attr.add_source(0, src)
    assert attr.attribute(100.0) == 3
    assert by_port(table, 40001) == {"process": "curl", "pid": 11, "peer": "nginx"}
    assert by_port(table, 40003) == {"process": "curl", "pid": 11, "peer": ""}
    assert by_port(table, 40004) == {"process": "web", "pid": 33, "peer": ""}
    assert by_port(table, 40002)["process"] == by_port(table, 40005)["process"] == ""
    assert src.asked == 1
    # Same generation: nothing is looked up again.
    looked = attr.lookups
    assert attr.attribute(101.0) == 0 and attr.lookups == looked
    # Past the window: one last look, where the listener's answer is taken.
    assert attr.attribute(105.0) == 1
    assert by_port(table, 40002) == {"process": "nginx", "pid": 22, "peer": ""}
    assert by_port(table, 40005) == {"process": UNKNOWN_TEXT, "pid": 0, "peer": ""}
    assert attr.unknown == 1
    totals = {p.name: p for p in attr.totals()}
    assert totals["curl"].flows == 2 and totals["web"].flows == 1
    assert totals["nginx"].flows == 1 and totals[UNKNOWN_TEXT].flows == 1
    assert sum(p.packets for p in totals.values()) == table.packets == 5


def test_attributor_retries_when_the_generation_changes_and_counts_ended_flows() -> None:
    table = flow_table([(LO, 40001, LO, 8080)])
    src = Fixed(ProcessTable(generation=1))
    attr = ProcessAttributor(table, window=5.0)
    attr.add_source(0, src)
    assert attr.attribute(0.0) == 0 and src.asked == 1
    src.table = ProcessTable(connected={tuple_key(TCP, LO, 40001, LO, 8080):
                                        ProcessInfo(5, "late")}, generation=2)
    assert attr.attribute(1.0) == 1
    table.expire(1e9)
    attr.ended(table.finished_columns())
    table.discard_finished()
    (late, unknown) = attr.totals()
    assert (late.name, late.flows, late.packets) == ("late", 1, 1)
    assert unknown.flows == 0 and unknown.packets == 0
    # At the end of a run, a flow still being looked for is unknown at once.
    table.add_batch(PacketBatch.from_records([(9.0, 60, TCP, LO[12:], 40009, LO[12:], 8080,
                                               0x02)]))
    assert attr.attribute(2.0) == 0
    assert attr.attribute(2.5, final=True) == 0
    assert by_port(table, 40009) == {"process": UNKNOWN_TEXT, "pid": 0, "peer": ""}


def test_attributor_totals_stay_bounded() -> None:
    from netmon.flows import procattr

    table = FlowTable()
    attr = ProcessAttributor(table)
    n = procattr.ENDED_MAX + 10
    cols = {"pid": np.ones(n, np.int64), "process": np.array([f"p{i}" for i in range(n)],
                                                                 dtype=object),
            "container": np.array([""] * n, dtype=object),
            "pkts_a2b": np.ones(n, np.int64), "pkts_b2a": np.zeros(n, np.int64),
            "bytes_a2b": np.arange(n, dtype=np.int64), "bytes_b2a": np.zeros(n, np.int64)}
    attr.ended([cols])
    assert len(attr._ended) <= procattr.ENDED_MAX
    out = attr.totals()
    assert len(out) == procattr.TOP + 2 and out[-2].kind == "other"
    assert sum(p.flows for p in out[:-1]) == n


# ------------------------------------------------------------------ ss over ssh
@pytest.fixture
def sshd(tmp_path: Path):
    from netmon.testing.sshd import Sshd, need_sshd

    need_sshd()
    with Sshd(tmp_path) as server:
        yield server


@pytest.mark.live
def test_ssh_sources_get_processes_from_ss_on_the_host(sshd, tmp_path: Path) -> None:
    need_capture()
    port = free_port()
    flows_out = tmp_path / "flows.jsonl"
    target = parse_ssh_target(f"{sshd.user}@{sshd.host}:lo")
    snaps: queue.SimpleQueue = queue.SimpleQueue()
    source = SshCapture(target, bpf=f"tcp port {port}",
                        options=tuple(sshd.client_options(good_key=True)))
    engine = Engine(Settings(tick=0.25, cluster=False, flows_out=str(flows_out)), [source],
                    snaps.put)
    assert engine.procs.resolver is None and engine.procs.remote == [source]
    engine.start()
    try:
        wait_running(snaps, 30)
        srv, clis = exchange(port, 2)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                snap = snaps.get(timeout=30)
                got = {p.name: p.flows for p in snap.processes}
                if got.get("nm-send-cli") == 2:
                    break
            else:
                raise AssertionError(f"never attributed: {snap.processes}")
            pids = {c.port: c.pid for c in clis}
        finally:
            for c in clis:
                c.close()
            srv.close()
    finally:
        engine.stop("test over")
        assert engine.join(30)
    flows = [json.loads(line) for line in flows_out.read_text().splitlines()]
    assert len(flows) == 2
    for f in flows:
        assert (f["process"], f["pid"]) == ("nm-send-cli", pids[f["port_a"]])
        assert f["peer_process"] == "nm-echo-srv" and f["user"] == ""
    check_totals(last_snapshot(snaps), flows)
    assert source.processes.readings >= 1 and not engine.result.warnings
    # Neither login (capture, ss readings) nor anything it started is left there.
    sshd.wait_sessions(0, timeout=10)
    deadline = time.monotonic() + 10
    while sshd.leftover_pids() != [sshd.proc.pid] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sshd.leftover_pids() == [sshd.proc.pid]


@pytest.mark.live
def test_a_host_without_ss_is_said_once_and_left_empty(sshd) -> None:
    need_capture()
    target = parse_ssh_target(f"{sshd.user}@{sshd.host}:lo")
    snaps: queue.SimpleQueue = queue.SimpleQueue()
    source = SshCapture(target, bpf=f"udp port {free_port(socket.SOCK_DGRAM)}",
                        options=tuple(sshd.client_options(good_key=True)), ss="nm-no-such-ss")
    engine = Engine(Settings(tick=0.25, cluster=False), [source], snaps.put)
    engine.start()
    try:
        wait_running(snaps, 30)
        deadline = time.monotonic() + 20
        while not source.processes.missing and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.5)  # another period: still said once, and not asked again
    finally:
        engine.stop("test over")
        assert engine.join(30)
    assert engine.result.warnings == [
        f"{source.name}: no ss there: flows are not attributed to processes"]
    assert source.processes.readings == 0 and source.processes.table.connected == {}
    assert source.state == "finished"


def test_ss_readings_come_out_of_the_stderr_stream_in_any_chunking() -> None:
    from netmon.sources.sshprocs import BEGIN_MARK, END_MARK, NO_SS_MARK, SsReadings

    ss = ('tcp ESTAB 0 0 127.0.0.1:40001 127.0.0.1:8080 users:(("curl",pid=11,fd=3))\n'
          'udp UNCONN 0 0 0.0.0.0:5353 0.0.0.0:* users:(("avahi",pid=7,fd=12))\n')
    stream = (f"Capturing on 'lo'\n{BEGIN_MARK}\n{ss}dumpcap: a message in between\n"
              f"{END_MARK}\nnetmon-ss-be is not a mark\n{BEGIN_MARK}\n{END_MARK}\n"
              f"{BEGIN_MARK}\n{NO_SS_MARK}\n{END_MARK}\ntail").encode()
    want = (b"Capturing on 'lo'\ndumpcap: a message in between\n"
            b"netmon-ss-be is not a mark\ntail")
    for size in (1, 2, 3, 7, 16, len(stream)):
        said: list[str] = []
        r = SsReadings("ssh h:lo")
        r.warn = said.append
        rest = b"".join(r.take(stream[i:i + size]) for i in range(0, len(stream), size))
        assert rest == want
        assert r.readings == 2 and r.missing
        assert said == ["ssh h:lo: no ss there: flows are not attributed to processes"]
        # the empty second reading replaced the first
        assert r.table.generation == 2 and not r.table.connected
    r = SsReadings("x")
    r.take(f"{BEGIN_MARK}\n{ss}{END_MARK}\n".encode())
    assert r.table.lookup(TCP, LO, 40001, LO, 8080) == ProcessInfo(11, "curl")
    assert r.table.bound[local_key(17, ANY, 5353)].name == "avahi"
