"""``--flows-out`` and the other temporary files netmon writes: the bulk writer's lines
are byte for byte what ``json.dumps(FlowView.to_json())`` gives (real captures and
edge cases), and a netmon killed with SIGKILL leaves no temporary file behind (the
files, captured payload included, are 0600 while they exist)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon.export.atomic import remove_stale
from netmon.export.flowlines import CHUNK, render
from netmon.export.flowsout import BATCH, FlowsOutWriter
from netmon.flows.table import FlowTable
from netmon.flows.views import views_from_columns
from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.ingest.pcapwrite import PcapWriter
from netmon.testing.frames import ethernet, ipv4, udp
from netmon.testing.synth import synthetic_flow_columns
from tests.conftest import ROOT, capture_files, captures_dir, netmon_cmd, run_netmon

LABELS = {0: 'web "a"\\ é', 1: "\x1b[31mred", 2: "", 7: "z" * 300}
OBSERVERS = ["live eth0", 'file "x" \x07é', "exporter 10.0.0.1/3"]


def per_flow_lines(cols: dict, keys: list[bytes], reason: str, labels: dict,
                   observers: list[str]) -> bytes:
    """The oracle: what the writer wrote before, one FlowView and json.dumps a flow."""
    return "".join(json.dumps(v.to_json(), separators=(",", ":")) + "\n"
                   for v in views_from_columns(cols, keys, reason, labels, observers)
                   ).encode()


@pytest.mark.parametrize("name", capture_files() or ["(none)"])
def test_bulk_lines_are_json_dumps_on_real_captures(name: str) -> None:
    data = (captures_dir() / name).read_bytes()
    table = FlowTable(idle_timeout=5, active_timeout=60)
    for obs in OBSERVERS:
        table.observer_id(obs)
    table.add_batch(PcapStreamDecoder().feed_batch(data).observed_at(1))
    table.cluster[:] = table.flow_id % 9 - 1  # some unclustered, some labelled
    table.expire(float(table.last.max()) + 10)  # idle-timeout / active-timeout ends
    table.end_live()
    total = 0
    for cols, keys, reason in table.take_finished():
        bulk = b"".join(render(cols, keys, reason, LABELS, table.observers))
        assert bulk == per_flow_lines(cols, keys, reason, LABELS, table.observers)
        total += len(keys)
    assert total == int(table.flow_id.max())


@pytest.mark.parametrize("seed", [1, 2])
def test_bulk_lines_are_json_dumps_on_edge_cases(seed: int) -> None:
    """NaN, infinities, -0.0, tiny and huge floats, exact rounding ties, IPv6,
    exported flows, null clusters, labels needing escapes; across a chunk boundary."""
    cols, keys = synthetic_flow_columns(CHUNK + 777, seed=seed, edge_cases=True)
    bulk = b"".join(render(cols, keys, "port-reuse", LABELS, OBSERVERS))
    old = per_flow_lines(cols, keys, "port-reuse", LABELS, OBSERVERS)
    assert bulk == old
    first = json.loads(bulk.split(b"\n", 1)[0], parse_constant=str)
    assert first["size_mean"] == "NaN" and first["cluster_id"] is None
    assert list(render(cols, [], "x")) == []


def test_the_writer_batches_small_writes_into_the_same_lines(tmp_path: Path) -> None:
    """Ended flows come a few at a time, each batch with its reason and the cluster
    names of its moment (a label can change between batches)."""
    cols, keys = synthetic_flow_columns(3 * BATCH + 5, seed=3)
    out = tmp_path / "f.jsonl"
    writer = FlowsOutWriter(str(out))
    expected = []
    at, step = 0, 1
    while at < len(keys):
        part = {k: v[at:at + step] for k, v in cols.items()}
        reason = ["idle-timeout", "evicted", "end-of-capture"][step % 3]
        labels = {0: f"cluster zero, version {step}", 3: "three"}
        writer.write(part, keys[at:at + step], reason, labels, OBSERVERS)
        expected.append(per_flow_lines(part, keys[at:at + step], reason, labels, OBSERVERS))
        at += step
        step = step * 3 % 4001
    assert writer.commit() == len(keys)
    assert out.read_bytes() == b"".join(expected)


WRITE_PAST_LIMIT = """
import resource, signal, sys, threading
from netmon.export.flowsout import BATCH, FlowsOutWriter
from netmon.testing.synth import synthetic_flow_columns

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
cols, keys = synthetic_flow_columns(4 * BATCH, seed=5)
writer = FlowsOutWriter(sys.argv[1])
try:
    for at in range(0, len(keys), BATCH):
        writer.write({k: v[at:at + BATCH] for k, v in cols.items()}, keys[at:at + BATCH],
                     "idle-timeout")
    writer.commit()
except OSError as exc:
    print("error", exc.errno)
    writer.abort()
print("threads", sorted(t.name for t in threading.enumerate()))
"""


def test_a_failed_write_on_the_writer_thread_reaches_the_caller(tmp_path: Path) -> None:
    """The file is written on a thread: its error (here EFBIG, past RLIMIT_FSIZE) is
    raised to the caller by a later call, the file is dropped and the thread ends."""
    import errno

    target = tmp_path / "f.jsonl"
    done = subprocess.run([sys.executable, "-c", WRITE_PAST_LIMIT, str(target)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"error {errno.EFBIG}", "threads ['MainThread']"]
    assert list(tmp_path.iterdir()) == []


def test_the_writer_thread_ends_with_commit_and_keeps_the_order(tmp_path: Path) -> None:
    import threading

    cols, keys = synthetic_flow_columns(3 * CHUNK + 5, seed=4)
    writer = FlowsOutWriter(str(tmp_path / "f.jsonl"))
    writer.write(cols, keys, "evicted", LABELS, OBSERVERS)  # many chunks queued at once
    assert "netmon-flows-out" in [t.name for t in threading.enumerate()]
    assert writer.commit() == len(keys)
    assert "netmon-flows-out" not in [t.name for t in threading.enumerate()]
    assert (tmp_path / "f.jsonl").read_bytes() == per_flow_lines(cols, keys, "evicted", LABELS,
                                                                 OBSERVERS)


# ------------------------------------------------------------------ temporary files
def _pcap_header_and_packets(n: int, flows: int = 7) -> bytes:
    import io

    buf = io.BytesIO()
    w = PcapWriter(buf, LINKTYPE_ETHERNET)
    for i in range(n):
        w.write(1_700_000_000 + i * 0.001,
                ethernet(ipv4("10.0.0.1", "10.0.0.2", 17,
                              udp(1024 + i % flows, 53, b"x" * 9)), 0x0800))
    return buf.getvalue()


def _open_files_in(pid: int, directory: Path) -> list[tuple[str, os.stat_result]]:
    """(link text, stat) of the process's descriptors on files in ``directory``."""
    out = []
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(directory) + "/"):
                out.append((target, os.stat(fd)))
        except OSError:
            continue
    return out


def _wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_killed_netmon_leaves_no_flows_out_file(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "flows.jsonl"
    proc = subprocess.Popen(netmon_cmd("--headless", "-r", "-", "--flows-out", str(target),
                                       "--idle-timeout", "0.001", "--tick", "0.1"),
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert proc.stdin is not None
        # More ended flows than one batch, so some are appended to the file mid-run.
        proc.stdin.write(_pcap_header_and_packets(2 * BATCH, flows=2 * BATCH))
        proc.stdin.flush()
        held = _wait_for(lambda: [(t, st) for t, st in _open_files_in(proc.pid, out_dir)
                                  if st.st_size > 0])
        (link, st), = held
        assert "(deleted)" in link and st.st_nlink == 0  # no name in the directory
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert list(out_dir.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert list(out_dir.iterdir()) == []
    # The next run writes the file, mode as open() gives, and nothing else.
    pcap = tmp_path / "t.pcap"
    pcap.write_bytes(_pcap_header_and_packets(50))
    done = run_netmon("--headless", "-r", str(pcap), "--flows-out", str(target))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out_dir.iterdir()] == ["flows.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert len(target.read_text().splitlines()) == 7


def test_named_leftovers_of_dead_processes_go_at_the_next_start(tmp_path: Path) -> None:
    """Where O_TMPFILE is missing the file is named after netmon's pid: a later netmon
    removes those whose process is gone, and no other file."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = tmp_path / f".netmon-flows-{dead.pid}-0a1b2c3d.tmp"
        other = tmp_path / f".netmon-export-{alive.pid}-0a1b2c3d.tmp"
        mine = tmp_path / "notes.tmp"
        for p in (stale, other, mine):
            p.write_text("captured\n")
        pcap = tmp_path / "t.pcap"
        pcap.write_bytes(_pcap_header_and_packets(5))
        done = run_netmon("--headless", "-r", str(pcap), "--flows-out",
                          str(tmp_path / "f.jsonl"))
        assert done.returncode == 0, done.stderr
        assert not stale.exists() and other.exists() and mine.exists()
        assert remove_stale(str(tmp_path)) == []
    finally:
        alive.kill()
        alive.wait()


DISSECT_AND_HOLD = """
import os, sys, time
from netmon.ingest.dissect import dissect_frames
from netmon.ingest.keptpackets import RingFrame
from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.testing.frames import ethernet, ipv4, udp

frame = ethernet(ipv4("127.0.0.1", "127.0.0.2", 17, udp(5000, 53, b"secret" * 100)), 0x0800)
frames = [RingFrame(i, 1_700_000_000 + i, len(frame), LINKTYPE_ETHERNET, frame)
          for i in range(50)]

def hold(loop, task):  # the capture is written; tshark is about to read it
    print("holding", flush=True)
    time.sleep(60)

dissect_frames(frames, on_start=hold)
"""


def test_killed_dissection_leaves_no_capture_file(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", DISSECT_AND_HOLD], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        (link, st), = _open_files_in(proc.pid, tmp)
        assert "(deleted)" in link and st.st_nlink == 0
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size > 50 * 600
        assert list(tmp.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert list(tmp.iterdir()) == []
