"""EngineUILink end to end: a real Engine ingesting a shared capture answers the UI's
questions (flows, hosts, packets, dissection by tshark through pyshark, export) on its
reactor thread while it runs and on the link's own thread after it has stopped; bad
input comes back as one-line errors; no tshark process or temporary file is left."""

from __future__ import annotations

import csv
import errno
import ipaddress
import itertools
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from netmon.core.link import FLOW_SORT_KEYS, ExportRequest, FlowQuery
from netmon.core.settings import Settings
from netmon.core.values import FlowView, Snapshot
from netmon.engine.engine import Engine
from netmon.engine.link import EngineUILink
from netmon.flows.selection import flag_text
from netmon.flows.table import FlowTable
from netmon.sources.files import StdinSource
from tests.conftest import captures_dir
from tests.test_flow_filter import dumpcap_accepts

HTTP_CAPTURE = "01_http_espn.pcapng"


class Snapshots:
    """The engine's publish callback: keeps the latest snapshot, lets a test wait."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None
        self._cond = threading.Condition()

    def __call__(self, snap: Snapshot) -> None:
        with self._cond:
            self.latest = snap
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[Snapshot], bool], timeout: float = 30) -> Snapshot:
        with self._cond:
            assert self._cond.wait_for(lambda: self.latest is not None and pred(self.latest),
                                       timeout), f"no such snapshot: last {self.latest}"
            return self.latest


def ask(method: Callable, *args: object, timeout: float = 60) -> object:
    """Call a link method and wait for its one reply (from whichever thread)."""
    done = threading.Event()
    answers: list = []

    def reply(answer: object) -> None:
        answers.append(answer)
        done.set()

    method(*args, reply)
    assert done.wait(timeout), f"no reply to {method.__name__}{args}"
    time.sleep(0.01)
    assert len(answers) == 1, answers
    return answers[0]


def tshark_children() -> list[int]:
    """Processes named tshark whose parent is this test process."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if name == "tshark" and ppid == os.getpid():
            pids.append(int(entry.name))
    return pids


def dissect_temp_files() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("netmon-dissect-")}


def sort_value(f: FlowView, key: str) -> object:
    if key in ("addr_a", "addr_b"):
        return ipaddress.ip_address(getattr(f, key)).packed.rjust(16, b"\0")
    if key == "cluster_id":
        return -1 if f.cluster_id is None else f.cluster_id
    if key == "outlier":
        return float(np.float32(f.outlier))
    return getattr(f, key)


def check_sorted(flows: tuple[FlowView, ...], key: str, descending: bool) -> None:
    for x, y in itertools.pairwise(flows):
        a, b = sort_value(x, key), sort_value(y, key)
        if descending:
            a, b = b, a
        assert a < b or (a == b and x.flow_id < y.flow_id), (key, descending, x, y)


@pytest.fixture
def running_engine():
    """An engine reading the HTTP capture from a pipe that stays open: it keeps running
    (its reactor answers) until the test closes the pipe."""
    data = (captures_dir() / HTTP_CAPTURE).read_bytes()
    rfd, wfd = os.pipe()
    writer = threading.Thread(target=os.write, args=(wfd, data), daemon=True)
    writer.start()
    snaps = Snapshots()
    engine = Engine(Settings(read="-", tick=0.1), [StdinSource(rfd)], snaps)
    os.close(rfd)  # the source keeps its own copy
    link = EngineUILink(engine)
    engine.start()
    closed = []

    def end_input() -> None:
        writer.join(10)
        if not closed:
            os.close(wfd)
            closed.append(True)

    yield engine, link, snaps, end_input
    end_input()
    link.stop()
    engine.stop()
    assert engine.join(15)


def test_the_link_answers_every_question_about_a_real_capture(running_engine, tmp_path) -> None:
    engine, link, snaps, end_input = running_engine
    before = dissect_temp_files()
    snaps.wait_for(lambda s: s.totals.ip_packets == 956 and s.clusters)
    assert engine.reactor.running

    # -- flows: all of them, paged, sorted any way, filtered
    everything = ask(link.query_flows, FlowQuery(limit=1000))
    assert not everything.error and everything.total == len(everything.flows) == 39
    assert sum(f.packets for f in everything.flows) == 956
    check_sorted(everything.flows, "bytes", True)
    pages = [ask(link.query_flows, FlowQuery(offset=o, limit=10)) for o in range(0, 40, 10)]
    assert [f.flow_id for p in pages for f in p.flows] == [f.flow_id for f in everything.flows]
    for key in FLOW_SORT_KEYS:
        for desc in (True, False):
            page = ask(link.query_flows, FlowQuery(sort=key, descending=desc, limit=1000))
            assert page.total == 39 and not page.error
            check_sorted(page.flows, key, desc)
            top = ask(link.query_flows, FlowQuery(sort=key, descending=desc, limit=3))
            assert top.flows == page.flows[:3]
    web = ask(link.query_flows, FlowQuery(filter="tcp and port 80", limit=1000))
    assert web.total == len(web.flows) > 0
    assert all(f.proto == 6 and 80 in (f.port_a, f.port_b) for f in web.flows)
    http = max(web.flows, key=lambda f: f.bytes)
    assert http.cluster_id is not None and http.cluster_label
    in_cluster = ask(link.query_flows, FlowQuery(cluster_id=http.cluster_id, limit=1000))
    assert http in in_cluster.flows
    assert all(f.cluster_id == http.cluster_id for f in in_cluster.flows)
    both = ask(link.query_flows, FlowQuery(cluster_id=http.cluster_id,
                                           filter=f"host {http.addr_b}", limit=1000))
    assert {f.flow_id for f in both.flows} == {
        f.flow_id for f in in_cluster.flows if http.addr_b in (f.addr_a, f.addr_b)}

    bad = ask(link.query_flows, FlowQuery(filter="port eighty"))
    assert bad.flows == () and bad.error.startswith("filter: unknown port 'eighty'")
    bad = ask(link.query_flows, FlowQuery(sort="speed"))
    assert "cannot sort by 'speed'" in bad.error

    # -- hosts: per address over the query's flows
    hosts = ask(link.query_hosts, FlowQuery(limit=1000))
    assert not hosts.error and hosts.total == len(hosts.hosts)
    for row in hosts.hosts:
        mine = [f for f in everything.flows if row.address in (f.addr_a, f.addr_b)]
        assert row.flows == len(mine)
        assert row.packets == sum(f.packets for f in mine)
        assert row.bytes == sum(f.bytes for f in mine)
        assert row.peers == len({f.addr_b if f.addr_a == row.address else f.addr_a
                                 for f in mine})
        assert row.ports == len({f.port_b for f in mine})
    assert [h.bytes for h in hosts.hosts] == sorted((h.bytes for h in hosts.hosts),
                                                    reverse=True)
    web_hosts = ask(link.query_hosts, FlowQuery(filter="port 80", limit=2))
    assert len(web_hosts.hosts) == 2 and web_hosts.hosts[0].address == "172.16.0.122"
    assert "filter:" in ask(link.query_hosts, FlowQuery(filter="(")).error

    # -- packets of the biggest HTTP flow
    plist = ask(link.query_packets, http.flow_id)
    assert plist.flow == http and plist.dropped_older == 0 and not plist.error
    assert [p.index for p in plist.packets] == list(range(http.packets))
    assert plist.packets[0].flags == "SYN" and plist.packets[0].direction == 1
    assert plist.packets[1].flags == "SYN,ACK" and plist.packets[1].direction == -1
    assert sum(p.size for p in plist.packets if p.direction == 1) == http.bytes_a2b
    request = next(p for p in plist.packets if p.direction == 1 and "PSH" in p.flags)

    # -- dissection of the HTTP request
    d = ask(link.dissect, http.flow_id, request.index)
    assert not d.error, d.error
    assert d.lines[0].startswith("Frame ")
    assert "Hypertext Transfer Protocol" in d.lines
    assert any(line.strip().startswith("GET ") for line in d.lines)
    assert any(line.startswith("    ") for line in d.lines)  # the tree is indented
    missing = ask(link.dissect, http.flow_id, 10_000)
    assert missing.error == f"flow {http.flow_id} has no packet 10000"
    assert "no packet of flow 999999" in ask(link.dissect, 999_999, 0).error

    # -- export: every matching flow, the clusters, the cluster's BPF
    query = FlowQuery(filter="tcp", limit=5)
    result = ask(link.export, ExportRequest(str(tmp_path), query, http.cluster_id))
    assert not result.error, result.error
    names = sorted(os.path.basename(p) for p in result.paths)
    assert [n.split("-", 3)[-1] for n in names] == [
        f"cluster{http.cluster_id}.bpf", "clusters.csv", "clusters.json", "flows.csv",
        "flows.json"]
    assert sorted(os.listdir(tmp_path)) == names  # no temporary files left
    tcp_total = ask(link.query_flows, FlowQuery(filter="tcp")).total
    path = {n.rsplit("-", 1)[-1]: p for n, p in zip(names, sorted(result.paths), strict=True)}
    with open(path["flows.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == tcp_total > 5  # all matching flows, not the page
    assert {int(r["flow_id"]) for r in rows} >= {http.flow_id}
    doc = json.loads(Path(path["flows.json"]).read_text())
    assert doc["filter"] == "tcp" and len(doc["flows"]) == tcp_total
    clusters = json.loads(Path(path["clusters.json"]).read_text())["clusters"]
    assert http.cluster_id in {c["id"] for c in clusters}
    bpf = Path(path[f"cluster{http.cluster_id}.bpf"]).read_text().strip()
    assert bpf == result.bpf and f"port {http.port_b}" in bpf
    assert dumpcap_accepts(bpf)[0]

    # -- the input ends: the engine stops, the link keeps answering from what is left
    end_input()
    snaps.wait_for(lambda s: s.finished)
    assert engine.join(15)
    after = ask(link.query_flows, FlowQuery(limit=1000))
    assert after.total == 39 and not after.error
    d2 = ask(link.dissect, http.flow_id, request.index)
    assert d2.lines == d.lines
    assert ask(link.query_packets, http.flow_id).packets == plist.packets

    assert tshark_children() == []
    assert dissect_temp_files() == before


def test_export_failures_are_one_line_and_leave_nothing(running_engine, tmp_path,
                                                        monkeypatch) -> None:
    _engine, link, snaps, _ = running_engine
    snaps.wait_for(lambda s: s.totals.ip_packets == 956)
    query = FlowQuery()
    r = ask(link.export, ExportRequest(str(tmp_path / "nope"), query))
    assert r.error == f"cannot export to {tmp_path / 'nope'}: no such directory"
    (tmp_path / "file").write_text("x")
    r = ask(link.export, ExportRequest(str(tmp_path / "file"), query))
    assert r.error.endswith("not a directory") and r.paths == ()
    r = ask(link.export, ExportRequest(str(tmp_path), FlowQuery(filter="host x")))
    assert r.error.startswith("nothing exported: filter: 'x'")

    calls = []
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # the third file hits a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr("netmon.export.bundle.os.fsync", full_disk)
    out = tmp_path / "out"
    out.mkdir()
    r = ask(link.export, ExportRequest(str(out), query, cluster_id=0))
    assert "No space left on device" in r.error and "\n" not in r.error
    assert r.error.startswith(f"cannot write {out}/netmon-")
    assert r.paths == () and os.listdir(out) == []


def test_a_dissection_that_times_out_leaves_no_tshark(running_engine) -> None:
    engine, _link, snaps, _ = running_engine
    snaps.wait_for(lambda s: s.totals.ip_packets == 956)
    slow = EngineUILink(engine, dissect_timeout=0.001)
    flows = ask(slow.query_flows, FlowQuery(limit=1))
    d = ask(slow.dissect, flows.flows[0].flow_id, 0)
    assert d.error == "tshark took longer than 0.001 s: dissection abandoned"
    assert tshark_children() == []
    slow.stop()
    assert ask(slow.query_flows, FlowQuery()).error == "netmon is closing"


def test_flag_text() -> None:
    assert flag_text(6, 0x12) == "SYN,ACK"
    assert flag_text(6, 0x11) == "FIN,ACK"
    assert flag_text(6, 0) == ""
    assert flag_text(1, 8) == "echo-request"
    assert flag_text(58, 135) == "neighbor-solicitation"
    assert flag_text(1, 200) == "type 200"
    assert flag_text(17, 5) == ""


def test_a_bug_is_reported_and_raised_not_swallowed(running_engine, monkeypatch,
                                                    caplog) -> None:
    _engine, link, snaps, _ = running_engine
    snaps.wait_for(lambda s: s.totals.ip_packets == 956)

    def broken(*_args: object, **_kw: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(link, "_select", broken)
    page = ask(link.query_flows, FlowQuery())
    assert page.error == "internal error in query_flows: KeyError: 'oops'"
    time.sleep(0.1)
    assert "netmon bug while answering query_flows" in caplog.text


# ------------------------------------------------------------------ latency at 100 k flows
def fill(table: FlowTable, flows: int) -> None:
    """``flows`` flows of a few packets, many hosts and ports, some clustered."""
    rng = np.random.default_rng(7)
    ts = 1_700_000_000.0
    for start in range(0, flows, 20_000):
        n = min(20_000, flows - start)
        i = np.arange(start, start + n)
        recs = [(ts + k * 1e-5, int(size), int(proto), (0x0A000000 + k // 40).to_bytes(4, "big"),
                 1024 + k % 60000, (0xC0A80000 + k % 997).to_bytes(4, "big"), int(port),
                 0x02 if proto == 6 else 0)
                for k, size, proto, port in zip(
                    i.tolist(), rng.integers(60, 1500, n).tolist(),
                    rng.choice([6, 6, 6, 17], n).tolist(),
                    rng.choice([443, 80, 53, 22, 8080], n).tolist(), strict=True)]
        table.add_packets(recs)
    live = table.live_slots()
    table.cluster[live] = rng.integers(-1, 20, len(live))
    table.outlier[live] = rng.random(len(live)).astype(np.float32)


def test_queries_answer_well_under_100_ms_at_100k_live_flows() -> None:
    snaps = Snapshots()
    engine = Engine(Settings(cluster=False, tick=0.5, max_flows=1_000_000), [], snaps)
    link = EngineUILink(engine)
    engine.start()
    try:
        ready = threading.Event()
        engine.call(lambda: (fill(engine.table, 100_000), ready.set()))
        assert ready.wait(120)
        assert len(engine.table) == 100_000
        timings: dict[str, float] = {}
        cases = {
            "bytes": FlowQuery(),
            "addr_b": FlowQuery(sort="addr_b", descending=False),
            "filter": FlowQuery(filter="tcp and (port 443 or port 80) and not host 10.0.0.1",
                                sort="last_epoch"),
            "cluster": FlowQuery(cluster_id=3, sort="duration"),
            "deep page": FlowQuery(sort="packets", offset=50_000),
        }
        for name, query in cases.items():
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                page = ask(link.query_flows, query)
                runs.append(time.perf_counter() - t0)
                assert not page.error and len(page.flows) == 200
            timings[name] = statistics.median(runs)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            hosts = ask(link.query_hosts, FlowQuery())
            runs.append(time.perf_counter() - t0)
        timings["hosts"] = statistics.median(runs)
        assert hosts.total > 2000
        print("query latency at 100k flows (median ms): " +
              ", ".join(f"{k} {v * 1000:.1f}" for k, v in timings.items()))
        assert max(timings.values()) < 0.1, timings
    finally:
        link.stop()
        engine.stop()
        assert engine.join(15)


def test_a_paced_replay_keeps_frames_for_dissection() -> None:
    from netmon.sources.files import FileSource

    path = str(captures_dir() / HTTP_CAPTURE)
    snaps = Snapshots()
    engine = Engine(Settings(read=path, speed=20.0, tick=0.1, cluster=False),
                    [FileSource(path, speed=20.0)], snaps)
    link = EngineUILink(engine)
    engine.start()
    try:
        snaps.wait_for(lambda s: s.finished)
        assert engine.join(15)
        assert len(engine.ring) == 956
        flow = ask(link.query_flows, FlowQuery(filter="port 80", limit=1)).flows[0]
        d = ask(link.dissect, flow.flow_id, 0)
        assert not d.error and any("Transmission Control Protocol" in ln for ln in d.lines)
        # the tree's ranges point into the frame that comes with it
        assert (d.tree[0].start, d.tree[0].length) == (0, len(d.data))
        ip = next(n for n in d.tree if n.label.startswith("Internet Protocol Version 4"))
        src = next(n for n in ip.children if n.label.startswith("Source Address: "))
        assert (src.start, src.length) == (26, 4)
        assert d.data[26:30] == bytes(int(x) for x in src.label.split(": ")[1].split("."))
    finally:
        link.stop()
        engine.stop()
    assert tshark_children() == []
