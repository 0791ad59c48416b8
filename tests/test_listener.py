"""The listener source: limits and records under a fake clock, then real clients (curl,
ssh, nc, Twisted, raw sockets) against the engine, the command end to end, and a
bounded loopback load test.

All traffic goes to 127.0.0.1 only, on ephemeral ports, bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from twisted.internet import error as terror
from twisted.internet import protocol, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from netmon.core.errors import EXIT_LISTEN, EXIT_USAGE, SourceError
from netmon.core.settings import Settings, parse_listen
from netmon.core.values import ConnectionRecord, Snapshot
from netmon.engine.engine import Engine
from netmon.flows.table import FlowTable
from netmon.sources.firstbytes import escape
from netmon.sources.listener import ListenerSource, ListenLimits, RecordingProtocol, _Factory
from tests.conftest import ROOT, netmon_cmd, run_netmon

LOCAL = "127.0.0.1"


# ------------------------------------------------------------------ fake clock
@pytest.fixture
def fake() -> Iterator[Callable[..., tuple[ListenerSource, task.Clock, list]]]:
    """A listener driven by hand: a task.Clock, StringTransports, records in a list."""
    made: list[ListenerSource] = []

    def make(**limits: float) -> tuple[ListenerSource, task.Clock, list]:
        src = ListenerSource([(LOCAL, 0)], ListenLimits(**limits))
        clock = task.Clock()
        clock.advance(1_700_000_000.0)
        src.now = clock.seconds
        records: list = []
        src.record_sink = records.extend
        made.append(src)
        return src, clock, records

    yield make
    for src in made:
        src._close_sockets()


def accept(src: ListenerSource, host: str = "10.0.0.5", port: int = 40000
           ) -> tuple[RecordingProtocol, StringTransport]:
    proto = _Factory(src, 8080).buildProtocol(IPv4Address("TCP", host, port))
    tr = StringTransport(peerAddress=IPv4Address("TCP", host, port),
                         hostAddress=IPv4Address("TCP", LOCAL, 8080))
    proto.makeConnection(tr)
    return proto, tr


def gone(proto: RecordingProtocol, tr: StringTransport, how: type | None = None) -> None:
    """Deliver connectionLost as the reactor would."""
    if how is None:
        how = terror.ConnectionAborted if tr.disconnecting else terror.ConnectionDone
    proto.connectionLost(Failure(how()))


def test_chunked_request_is_classified_counted_and_never_answered(fake) -> None:
    src, clock, records = fake()
    proto, tr = accept(src)
    request = b"GET /index.html?q=\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n"
    sizes = []
    for i, size in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9] * 3):
        chunk = request[sum(sizes):sum(sizes) + size]
        if not chunk:
            break
        clock.advance(0.01 * (i + 1))
        proto.dataReceived(chunk)
        sizes.append(len(chunk))
    gone(proto, tr, terror.ConnectionDone)
    src._flush()
    assert tr.value() == b""  # not one byte back
    (rec,) = records
    assert rec.end_reason == "client-closed" and rec.first_class == "http"
    assert rec.bytes_in == len(request) and rec.pkts_in == len(sizes)
    assert rec.bytes_out == 0 and rec.pkts_out == 0
    assert rec.first_sizes == tuple(sizes[:8])
    assert rec.preview == escape(request) and "\x1b" not in rec.preview
    assert rec.peer == bytes([10, 0, 0, 5]) and rec.peer_port == 40000
    assert rec.local == bytes([127, 0, 0, 1]) and rec.local_port == 8080
    gaps = np.diff([0.0, *np.cumsum([0.01 * (i + 1) for i in range(len(sizes))])])[1:]
    assert rec.sizesq == pytest.approx(sum(s * s for s in sizes))
    assert rec.iat_mean == pytest.approx(gaps.mean(), rel=1e-4)  # epoch-sized floats
    assert rec.iat_m2 / len(gaps) == pytest.approx(gaps.var(), rel=1e-4)
    assert rec.end - rec.start == pytest.approx(sum(0.01 * (i + 1) for i in range(len(sizes))))


def test_how_connections_end(fake) -> None:
    src, clock, records = fake(idle_timeout=5, max_lifetime=20, max_bytes=1000)
    reset, tr_reset = accept(src, port=1)
    idle, tr_idle = accept(src, port=2)
    chatty, tr_chatty = accept(src, port=3)
    bulk, tr_bulk = accept(src, port=4)
    reset.dataReceived(b"\x00\x01")
    gone(reset, tr_reset, terror.ConnectionLost)
    bulk.dataReceived(b"x" * 999)
    assert not tr_bulk.disconnecting
    bulk.dataReceived(b"xx")  # over the cap: reset at once
    assert tr_bulk.disconnecting
    bulk.dataReceived(b"more")  # whatever arrives before the close is ignored
    gone(bulk, tr_bulk)
    for _ in range(25):  # chatty keeps talking; idle said nothing
        clock.advance(1)
        chatty.dataReceived(b"ping\n")
        src.sweep()
        for proto, tr in ((idle, tr_idle), (chatty, tr_chatty)):
            if tr.disconnecting and not proto.recorded:
                gone(proto, tr)
    src._flush()
    ends = {r.peer_port: r for r in records if r.end_reason}
    assert ends[1].end_reason == "reset" and ends[1].first_class == "binary"
    assert ends[2].end_reason == "idle-timeout" and ends[2].first_class == "none"
    assert ends[2].end - ends[2].start == pytest.approx(6.0)  # found by the next sweep
    assert ends[3].end_reason == "lifetime-cap" and ends[3].first_class == "text"
    assert ends[4].end_reason == "byte-cap" and ends[4].bytes_in == 1001
    assert all(tr.value() == b"" for tr in (tr_reset, tr_idle, tr_chatty, tr_bulk))
    assert src.open_connections == 0 and not src._per_source
    assert dict(src.ended) == {"reset": 1, "idle-timeout": 1, "lifetime-cap": 1,
                               "byte-cap": 1}


def test_open_connections_are_reported_with_running_totals(fake) -> None:
    src, clock, records = fake()
    proto, tr = accept(src)
    src.sweep()
    assert [(r.bytes_in, r.end_reason) for r in records] == [(0, "")]
    src.sweep()  # nothing changed: nothing reported
    assert len(records) == 1
    clock.advance(1)
    proto.dataReceived(b"SSH-2.0-x\r\n")
    src.sweep()
    assert records[-1].bytes_in == 11 and records[-1].first_class == "ssh"
    assert records[-1].end_reason == "" and records[-1].end == clock.seconds()
    gone(proto, tr)
    src._flush()
    assert records[-1].end_reason == "client-closed" and records[-1].start == records[0].start


def test_caps_refuse_and_count_without_recording_twice(fake) -> None:
    src, _clock, records = fake(max_connections=3, max_per_source=2)
    accept(src, "10.0.0.1", 1)
    accept(src, "10.0.0.1", 2)
    a3, tr3 = accept(src, "10.0.0.1", 3)  # third from one source
    assert tr3.disconnecting and a3.refused == "per-source-cap"
    b1, tr_b1 = accept(src, "10.0.0.2", 1)
    b2, tr_b2 = accept(src, "10.0.0.2", 2)  # fourth overall
    assert tr_b2.disconnecting and b2.refused == "global-cap"
    for proto, tr in ((a3, tr3), (b2, tr_b2)):
        gone(proto, tr)  # the aborts complete
    gone(b1, tr_b1)
    _, tr_c1 = accept(src, "10.0.0.3", 1)  # room again
    assert not tr_c1.disconnecting
    src._flush()
    ends = [(r.peer_port, r.end_reason) for r in records]
    assert sorted(ends) == [(1, "client-closed"), (2, "connection-cap"), (3, "connection-cap")]
    st = src.status()
    assert st.listener.refused == 2 and st.listener.open == 3 and st.listener.accepted == 4
    assert dict(st.listener.refused_reasons) == {"per-source-cap": 1, "global-cap": 1}
    assert st.detail == "3 open, 4 accepted, 2 refused"
    assert json.loads(json.dumps(st.to_json()))["listener"]["refused"] == 2


def test_stop_records_open_connections_once(fake) -> None:
    src, _clock, records = fake()
    src._ports = []
    done = []
    src._on_done = lambda s, err: done.append(err)
    p1, tr1 = accept(src, port=1)
    p1.dataReceived(b"hello")
    src.stop()
    assert tr1.disconnecting and done == [None] and src.state == "finished"
    gone(p1, tr1)  # the abort completes after the stop: no second record
    assert [(r.end_reason, r.first_class, r.bytes_in) for r in records] == [
        ("stopped", "text", 5)]


# ------------------------------------------------------------------ flow table
def record(peer: str, pport: int, start: float, end: float, nbytes: int = 0, reads: int = 0,
           reason: str = "client-closed", local: str = LOCAL, lport: int = 8080,
           sizes: tuple[int, ...] = ()) -> ConnectionRecord:
    fam = socket.AF_INET6 if ":" in peer else socket.AF_INET
    return ConnectionRecord(start, end, socket.inet_pton(fam, peer), pport,
                            socket.inet_pton(fam, local), lport, nbytes, 0, reads, 0, reason,
                            "text" if nbytes else "none", "", float(nbytes * nbytes),
                            0.0, 0.0, sizes)


def test_connections_become_tcp_flows_with_the_peer_initiating() -> None:
    table = FlowTable()
    # 10.x sorts before 127.x and 200.x after it: both key orientations.
    table.add_connections([
        record("10.0.0.9", 5000, 100.0, 101.5, 30, 2, sizes=(10, 20)),
        record("200.0.0.9", 6000, 100.2, 100.3, 0, 0, reason="idle-timeout"),
        record("2001:db8::9", 7000, 100.4, 100.9, 5, 1, local="::1", sizes=(5,)),
    ])
    views = {v.addr_a: v for v in table.live_views()}
    assert set(views) == {"10.0.0.9", "200.0.0.9", "2001:db8::9"}
    a = views["10.0.0.9"]
    assert (a.port_a, a.addr_b, a.port_b, a.proto) == (5000, LOCAL, 8080, 6)
    assert (a.pkts_a2b, a.bytes_a2b, a.pkts_b2a, a.bytes_b2a) == (2, 30, 0, 0)
    assert (a.syn, a.synack, a.fin, a.rst, a.psh) == (1, 1, 1, 0, 2)
    assert (a.first_epoch, a.last_epoch, a.first_sizes) == (100.0, 101.5, (10, 20))
    b = views["200.0.0.9"]
    assert (b.port_a, b.port_b, b.fin, b.rst, b.packets) == (6000, 8080, 0, 1, 0)
    c = views["2001:db8::9"]
    assert (c.addr_b, c.bytes_a2b, c.first_sizes) == ("::1", 5, (5,))
    assert (table.flows_seen, table.packets, table.bytes) == (3, 3, 35)
    assert table.latest_ts == 101.5
    cols = table.columns(table.live_slots())  # what clustering reads
    assert sorted(cols["bytes_a2b"].tolist()) == [0, 5, 30]
    assert (cols["port_b"] == 8080).all() and sorted(cols["port_a"].tolist()) == [5000, 6000, 7000]


def test_reports_update_one_flow_and_reuse_starts_another() -> None:
    table = FlowTable()
    opened = record("10.0.0.9", 5000, 100.0, 100.1, 3, 1, reason="")
    table.add_connections([opened])
    table.add_connections([opened._replace(end=100.5, bytes_in=9, pkts_in=2),
                           opened._replace(end=101.0, bytes_in=12, pkts_in=3,
                                           end_reason="reset")])
    (v,) = table.live_views()
    assert (v.bytes_a2b, v.pkts_a2b, v.rst, v.last_epoch) == (12, 3, 1, 101.0)
    assert (table.flows_seen, table.packets, table.bytes) == (1, 3, 12)
    # The same 5-tuple again: a new connection, a new flow; the old one ends.
    again = record("10.0.0.9", 5000, 102.0, 102.2, 4, 1)
    table.add_connections([again, again._replace(end=102.4, bytes_in=6)])
    ended = table.drain_finished()
    assert [(f.bytes_a2b, f.end_reason) for f in ended] == [(12, "port-reuse")]
    (v,) = table.live_views()
    assert (v.bytes_a2b, v.first_epoch, v.flow_id) == (6, 102.0, 2)
    assert (table.flows_seen, table.bytes) == (2, 18)


def test_two_connections_on_one_five_tuple_in_one_batch() -> None:
    table = FlowTable()
    first = record("10.0.0.9", 5000, 100.0, 100.1, 3, 1, reason="")
    table.add_connections([first])
    table.add_connections([
        first._replace(end=100.2, bytes_in=7, end_reason="client-closed"),
        record("10.0.0.9", 5000, 100.3, 100.4, 1, 1, reason=""),
        record("10.0.0.9", 5000, 100.3, 100.6, 2, 2),
        record("10.0.0.9", 5000, 100.7, 100.8, 5, 1),
    ])
    flows = table.drain_finished() + table.live_views()
    assert [(f.first_epoch, f.bytes_a2b) for f in flows] == [
        (100.0, 7), (100.3, 2), (100.7, 5)]
    assert [f.end_reason for f in flows] == ["port-reuse", "port-reuse", ""]
    assert (table.flows_seen, table.bytes, len(table)) == (3, 14, 1)


def test_connection_flows_expire_and_are_evicted_like_captured_ones() -> None:
    table = FlowTable(idle_timeout=10, max_flows=100)
    table.add_connections([record("10.0.0.9", 1000 + i, 100.0 + i, 100.5 + i)
                           for i in range(150)])
    assert len(table) <= 100 and table.evicted >= 50
    assert table.flows_seen == 150
    table.expire(1000.0)
    assert len(table) == 0


# ------------------------------------------------------------------ addresses
def test_listen_specs() -> None:
    assert parse_listen("8080") == (LOCAL, 8080)  # loopback unless asked
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("[::]:8080") == ("::", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:9") == (LOCAL, 9)
    for bad in ("http", "70000", "::1:80", "example.com:80", "1.2.3.4:", "-1"):
        with pytest.raises(SourceError) as exc:
            parse_listen(bad)
        assert exc.value.exit_code == EXIT_USAGE


def test_port_in_use_is_one_clear_error() -> None:
    holder = socket.socket()
    holder.bind((LOCAL, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(SourceError) as exc:
            ListenerSource([(LOCAL, 0), (LOCAL, port)])
        assert exc.value.exit_code == EXIT_LISTEN
        assert exc.value.message == (f"cannot listen on 127.0.0.1:{port}: the port is already "
                                     "in use (choose another, or stop what holds it)")
    finally:
        holder.close()


def test_ipv6_and_dual_stack() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        src = ListenerSource([("::1", 0)])
    except SourceError as exc:
        pytest.skip(f"no IPv6 loopback: {exc.message}")
    assert src.addresses[0].startswith("[::1]:")
    src._close_sockets()


# ------------------------------------------------------------------ real clients
class Running:
    """A ListenerSource inside a real Engine (its reactor thread), for real clients."""

    def __init__(self, tmp: Path, limits: ListenLimits, **settings: object) -> None:
        self.src = ListenerSource([(LOCAL, 0)], limits)
        self.port = self.src.ports[0]
        self.snaps: list[Snapshot] = []
        self.flows_out = tmp / "flows.jsonl"
        base = {"cluster": False, "flows_out": str(self.flows_out), "tick": 0.2}
        base.update(settings)
        self.engine = Engine(Settings(**base), [self.src], self.snaps.append)

    def ended(self) -> int:
        return sum(self.src.ended.values())

    def wait_ended(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ended() < n:
            assert time.monotonic() < deadline, f"{self.ended()} of {n} connections ended"
            time.sleep(0.02)

    def stop(self) -> list[dict]:
        self.engine.stop()
        assert self.engine.join(15)
        assert self.snaps[-1].finished
        if not self.flows_out.exists():
            return []
        return [json.loads(line) for line in self.flows_out.read_text().splitlines()]


@contextlib.contextmanager
def running(tmp: Path, limits: ListenLimits | None = None, **settings: object
            ) -> Iterator[Running]:
    run = Running(tmp, limits or ListenLimits(idle_timeout=2.0), **settings)
    run.engine.start()
    try:
        yield run
    finally:
        if run.engine.join(0) is False:
            run.engine.stop()
            run.engine.join(15)


def silent_for(sock: socket.socket, seconds: float) -> bool:
    """True when nothing arrives on ``sock`` for ``seconds`` (the listener never talks)."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return True
    except OSError:
        return True  # reset by a limit: still nothing was sent
    return data == b""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install -y {tool})")
    return path


def listener_flows(flows: list[dict], port: int) -> list[dict]:
    return [f for f in flows if f["proto"] == 6 and f["port_b"] == port]


def test_real_clients_are_recorded_as_flows(tmp_path: Path) -> None:
    curl = need("curl")
    ssh = shutil.which("ssh")
    nc = shutil.which("nc")
    with running(tmp_path) as run:
        url = f"127.0.0.1:{run.port}"
        got = subprocess.run([curl, "-s", "-m", "1", "-o", "/dev/null", "-w",
                              "%{size_download}", f"http://{url}/x?y=1"],
                             capture_output=True, text=True, timeout=10)
        assert got.stdout == "0"  # curl gave up: no answer, not a byte
        subprocess.run([curl, "-sk", "-m", "1", f"https://{url}/"], capture_output=True,
                       timeout=10)
        expect = {"http": 1, "tls": 1}
        if ssh:
            proc = subprocess.run([ssh, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                   "-o", "UserKnownHostsFile=/dev/null", "-o",
                                   "ConnectTimeout=5", "-p", str(run.port), LOCAL, "true"],
                                  capture_output=True, text=True, timeout=15)
            assert proc.returncode == 255  # the banner exchange never completes
            expect["ssh"] = 1
        if nc:
            subprocess.run([nc, "-q0", LOCAL, str(run.port)], input=b"hello there\n",
                           capture_output=True, timeout=10)
            subprocess.run([nc, "-z", LOCAL, str(run.port)], capture_output=True, timeout=10)
            expect["text"] = 1
            expect["none"] = 1
        with socket.create_connection((LOCAL, run.port)) as s:
            s.sendall(os.urandom(3000) + b"\x00")
            assert silent_for(s, 0.3)
        expect["binary"] = 1
        run.wait_ended(sum(expect.values()))
        flows = run.stop()
    st = run.snaps[-1].sources[0].listener
    assert dict(st.classes) == expect
    assert st.accepted == sum(expect.values()) and st.refused == 0
    assert "GET /x?y=1 HTTP/1.1" in dict(st.samples)["http"]
    if ssh:
        assert dict(st.samples)["ssh"].startswith("SSH-2.0-OpenSSH")
    mine = listener_flows(flows, run.port)
    assert len(mine) == sum(expect.values())
    for f in mine:
        assert f["addr_a"] == LOCAL and f["addr_b"] == LOCAL and f["port_a"] != run.port
        assert f["syn"] == 1 and f["synack"] == 1 and f["pkts_b2a"] == 0
    assert sorted(f["bytes_a2b"] > 3000 for f in mine).count(True) == 1  # the garbage
    hosts = run.snaps[-1].hosts
    assert [h.addr for h in hosts] == [LOCAL] and hosts[0].flows == len(mine)


class ChunkedClient(protocol.Protocol):
    """A Twisted client that sends its payload in 1-9 byte pieces, then closes."""

    def __init__(self, payload: bytes, clock: object, done: threading.Event) -> None:
        self.payload = payload
        self.clock = clock
        self.done = done
        self.got = b""

    def connectionMade(self) -> None:
        self.send(0)

    def send(self, at: int) -> None:
        if at >= len(self.payload):
            self.transport.loseConnection()
            return
        size = 1 + at % 9
        self.transport.write(self.payload[at:at + size])
        self.clock.callLater(0.002, self.send, at + size)

    def dataReceived(self, data: bytes) -> None:
        self.got += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.set()


def test_twisted_clients_in_small_pieces(tmp_path: Path) -> None:
    payloads = [b"SSH-2.0-TwistedConch_24\r\n" + b"k" * 50,
                b"POST /upload HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                bytes.fromhex("16030100a5010000a10303") + bytes(range(40))]
    with running(tmp_path) as run:
        clients = []
        for payload in payloads:
            done = threading.Event()
            client = ChunkedClient(payload, run.engine.reactor, done)
            clients.append(client)
            factory = protocol.ClientFactory.forProtocol(lambda c=client: c)
            run.engine.call(run.engine.reactor.connectTCP, LOCAL, run.port, factory)
            assert done.wait(10)
        run.wait_ended(3)
        flows = run.stop()
    assert all(c.got == b"" for c in clients)
    st = run.snaps[-1].sources[0].listener
    assert dict(st.classes) == {"ssh": 1, "http": 1, "tls": 1}
    assert dict(st.ended) == {"client-closed": 3}
    sizes = sorted(f["bytes_a2b"] for f in listener_flows(flows, run.port))
    assert sizes == sorted(len(p) for p in payloads)


def test_limits_with_real_sockets(tmp_path: Path) -> None:
    limits = ListenLimits(idle_timeout=1.0, max_bytes=100_000, max_per_source=3,
                          max_lifetime=3.0)
    with running(tmp_path, limits) as run:
        # A slow client held open past the idle timeout: reset by the listener.
        slow = socket.create_connection((LOCAL, run.port))
        slow.sendall(b"G")
        t0 = time.monotonic()
        slow.settimeout(5)
        with pytest.raises(ConnectionResetError):
            slow.recv(1)
        assert 1.0 <= time.monotonic() - t0 < 3.0
        slow.close()
        # A slowloris trickle: active, but over the lifetime cap.
        loris = socket.create_connection((LOCAL, run.port))
        t0 = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - t0 < 6:
                loris.sendall(b"x")
                time.sleep(0.3)
        loris.close()
        # A bulk sender over the byte cap.
        bulk = socket.create_connection((LOCAL, run.port))
        with pytest.raises(OSError):
            for _ in range(200):
                bulk.sendall(b"\x00" * 65536)
        bulk.close()
        # A client that resets.
        rst = socket.create_connection((LOCAL, run.port))
        rst.sendall(b"bye")
        time.sleep(0.1)
        rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.close()
        run.wait_ended(4)
        # Per-source cap: the fourth connection at once is reset at accept.
        held = [socket.create_connection((LOCAL, run.port)) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection((LOCAL, run.port))
        extra.settimeout(5)
        with pytest.raises(ConnectionResetError):
            extra.recv(1)
        extra.close()
        for s in held:
            s.close()
        run.wait_ended(8)
        flows = run.stop()
    st = run.snaps[-1].sources[0].listener
    assert dict(st.ended) == {"idle-timeout": 1, "lifetime-cap": 1, "byte-cap": 1, "reset": 1,
                              "connection-cap": 1, "client-closed": 3}
    assert dict(st.refused_reasons) == {"per-source-cap": 1}
    mine = listener_flows(flows, run.port)
    assert len(mine) == 8
    big = max(f["bytes_a2b"] for f in mine)
    assert 100_000 < big <= 100_000 + 65536 * 2  # stopped within a read or two of the cap
    assert sum(f["rst"] for f in mine) == 5 and sum(f["fin"] for f in mine) == 3


def test_refusals_are_counted_not_logged(tmp_path: Path, caplog) -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    caplog.set_level("DEBUG")
    try:
        with running(tmp_path, ListenLimits(max_connections=1, idle_timeout=5)) as run:
            keep = socket.create_connection((LOCAL, run.port))
            time.sleep(0.2)
            for _ in range(60):
                with contextlib.suppress(OSError), socket.create_connection((LOCAL, run.port)):
                    pass
            run.wait_ended(60)
            keep.close()
            run.wait_ended(61)
            run.stop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert run.snaps[-1].sources[0].listener.refused == 60
    assert len(events) < 10, [e.get("log_format") for e in events][:10]
    assert len(caplog.records) < 5


# ------------------------------------------------------------------ the command
def start_listening(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(netmon_cmd("--json", "--tick", "0.2", *args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stderr.readline().decode()
    assert line.startswith("netmon: listening on "), line
    port = int(line.split(" ")[3].rsplit(":", 1)[1])
    return proc, port


def test_command_end_to_end_is_terminal_safe(tmp_path: Path) -> None:
    flows_out = tmp_path / "flows.jsonl"
    proc, port = start_listening("--listen", "0", "--flows-out", str(flows_out),
                                 "--listen-idle-timeout", "1")
    try:
        evil = b"\x1b]0;pwned\x07\x1b[2J\x1b[31mRED\r\n\x9b2J"
        with socket.create_connection((LOCAL, port)) as s:
            s.sendall(evil)
            assert silent_for(s, 0.3)
        with socket.create_connection((LOCAL, port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"\x1b" not in out and b"\x1b" not in err and b"\x9b" not in out + err
    snaps = [json.loads(line) for line in out.splitlines()]
    final = snaps[-1]
    lis = final["sources"][0]["listener"]
    assert final["finished"] and lis["accepted"] == 2 and lis["open"] == 0
    assert lis["addresses"] == [f"127.0.0.1:{port}"]
    assert lis["samples"]["binary"].startswith("\\x1b]0;pwned\\x07")
    assert final["hosts"][0]["addr"] == LOCAL and final["hosts"][0]["flows"] == 2
    assert final["flows_seen"] == 2
    lines = [json.loads(x) for x in flows_out.read_text().splitlines()]
    assert len(listener_flows(lines, port)) == 2
    assert b"[listen 127.0.0.1:" in err  # the summary line names the source


def test_command_errors_are_one_line() -> None:
    holder = socket.socket()
    holder.bind((LOCAL, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        proc = run_netmon("--headless", "--listen", str(port), timeout=60)
    finally:
        holder.close()
    assert proc.returncode == EXIT_LISTEN
    assert proc.stderr.strip().splitlines()[-1] == (
        f"netmon: cannot listen on 127.0.0.1:{port}: the port is already in use (choose "
        "another, or stop what holds it)")
    for args, needle in ((["--listen", "80x"], "port must be a number"),
                         (["--listen", "8080", "-r", "x.pcap"], "source of its own"),
                         (["--listen", "8080", "-i", "lo"], "source of its own"),
                         (["--listen", "8080", "--listen-max-conns", "0"], "max-conns")):
        proc = run_netmon("--headless", *args, timeout=60)
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr


def test_privileged_port_without_root_is_one_clear_line() -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
           "--inh-caps=-all", *netmon_cmd("--headless", "--listen", "81")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "HOME": "/tmp"})
    if "Permission denied" in proc.stderr and "python" in proc.stderr:
        pytest.skip("the unprivileged user cannot run this Python")
    assert proc.returncode == EXIT_LISTEN, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "netmon: cannot listen on 127.0.0.1:81: ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE (choose a port >= 1024)")


# ------------------------------------------------------------------ load
def load(port: int, total: int, hold: float = 0.07) -> dict:
    """The bounded loopback generator, in its own process (its own GIL): 200 connections
    open at once, each held ``hold`` seconds, so at most 200 / hold per second."""
    code = ("import json, sys; from netmon.bench.listener import generate; "
            f"print(json.dumps(generate({port}, {total}, concurrency=200, "
            f"hold={hold}, deadline=60)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True).stdout
    return json.loads(out)


@pytest.mark.slow
def test_load_every_connection_recorded_exactly_once(tmp_path: Path) -> None:
    n = int(os.environ.get("NETMON_LOAD_CONNECTIONS", "5000"))
    limits = ListenLimits(max_connections=1000, max_per_source=1000, idle_timeout=10)
    me = psutil.Process()
    # The table is capped below two rounds' worth, and keeps fewer ended flows than a
    # round: memory must level off, not grow.
    with running(tmp_path, limits, max_flows=int(n * 1.2), tick=0.5,
                 keep_ended=n // 5) as run:
        first = load(run.port, n)
        run.wait_ended(n, timeout=30)
        rss1 = me.memory_info().rss
        second = load(run.port, n)
        run.wait_ended(2 * n, timeout=30)
        rss2 = me.memory_info().rss
        assert run.src.open_connections == 0 and not run.src._per_source
        flows = run.stop()
    for gen in (first, second):
        assert gen["connected"] == n and gen["failed"] == 0, gen
        assert gen["rate"] >= 2000, gen
        assert gen["peak_open"] == 200, gen
    assert run.src.peak_open >= 150
    st = run.snaps[-1].sources[0].listener
    assert st.accepted == 2 * n and st.refused == 0
    assert dict(st.ended) == {"client-closed": 2 * n}
    assert dict(st.classes) == {"http": 0.4 * n, "ssh": 0.4 * n, "tls": 0.4 * n,
                                "text": 0.4 * n, "none": 0.4 * n}
    mine = listener_flows(flows, run.port)
    assert len(mine) == 2 * n  # every connection exactly once ...
    assert len({(f["port_a"], f["first_epoch"]) for f in mine}) == 2 * n  # ... and distinct
    assert run.snaps[-1].totals.flows_seen == 2 * n
    assert run.snaps[-1].totals.flows_live <= int(n * 1.2)
    assert (rss2 - rss1) / n < 2048, (rss1, rss2)  # bounded: the second round reuses slots
    gaps = np.diff([s.wall_time for s in run.snaps])
    assert gaps.max() < 1.5  # the engine kept ticking through the load
