"""The on-disk packet ring (--keep-packets): the cap holds, segments are pcapng that
capinfos and tshark read, a flow's frames come back byte for byte (against tshark on a
real capture), write errors give one message while counting goes on, the writer
thread always ends, a replay waits for the writer (nothing lost) while a live capture
never waits (drops, counted), and `netmon packets` lists and exports."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netmon.core.errors import EXIT_USAGE, SourceError
from netmon.core.settings import Settings, load_settings, parse_setting, parse_size
from netmon.engine.engine import Engine
from netmon.engine.link import EngineUILink
from netmon.flows.table import FlowTable
from netmon.ingest.diskindex import (
    FLOWS_MAGIC,
    DiskReader,
    list_segments,
    read_flow_lines,
    read_index,
)
from netmon.ingest.diskring import DiskRing
from netmon.ingest.keptpackets import RingFrame
from netmon.sources.files import FileSource, StdinSource
from netmon.testing.replay import counted_batches
from netmon.testing.synth import synthetic_pcap
from tests.conftest import ROOT, captures_dir, run_netmon
from tests.test_engine_link import HTTP_CAPTURE, Snapshots, ask

CAPINFOS = shutil.which("capinfos")
TSHARK = shutil.which("tshark")


def dir_bytes(path: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def keep_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "netmon-keep"]


class Watched(DiskRing):
    """A ring that measures its directory after every write and every rotation."""

    most = 0

    def _write_piece(self, it, sl) -> None:  # type: ignore[no-untyped-def]
        super()._write_piece(it, sl)
        self.most = max(self.most, dir_bytes(self.directory))

    def _close_segment(self) -> None:
        super()._close_segment()
        self.most = max(self.most, dir_bytes(self.directory))


class AllFrames:
    """Every frame fed, by flow: the reference the disk ring is compared with."""

    def __init__(self) -> None:
        self.by_flow: dict[int, dict[int, RingFrame]] = {}

    def append(self, batch, fid, a2b, seq) -> None:
        for i, (f, q) in enumerate(zip(fid.tolist(), seq.tolist(), strict=True)):
            c = int(batch.raw_chunk[i])
            if c < 0:
                continue
            off, ln = int(batch.raw_off[i]), int(batch.raw_len[i])
            self.by_flow.setdefault(f, {})[q] = RingFrame(
                q, float(batch.ts[i]), int(batch.wirelen[i]), batch.linktypes[c],
                batch.bufs[c][off:off + ln])

    def flows(self) -> np.ndarray:
        return np.array(sorted(self.by_flow), dtype=np.int64)

    def frames_of(self, fid: int) -> list[RingFrame]:
        return [self.by_flow[fid][q] for q in sorted(self.by_flow.get(fid, {}))]


def feed(ring: DiskRing, memory: AllFrames, path: str, chunk: int = 1 << 16) -> int:
    """Decode ``path`` in chunks into a flow table, the disk ring and every frame."""
    n = 0
    for batch, fid, a2b, seq in counted_batches(path, chunk, FlowTable(idle_timeout=1e9)):
        memory.append(batch, fid, a2b, seq)
        ring.append(batch, fid, a2b, seq)
        n += len(batch)
    return n


def check_segments(directory: str) -> int:
    """Every segment passes capinfos and tshark reads it; returns the packets in all."""
    total = 0
    for seg in list_segments(directory):
        path = os.path.join(directory, f"{seg.stem}.pcapng")
        if CAPINFOS:
            done = subprocess.run([CAPINFOS, "-c", "-M", path], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        if TSHARK:
            done = subprocess.run([TSHARK, "-r", path, "-T", "fields", "-e", "frame.number"],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            total += len(done.stdout.split())
    return total


# --------------------------------------------------------------------- the ring itself
def test_a_tiny_cap_holds_over_many_packets_and_segments_stay_valid(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    info = synthetic_pcap(src, 20_000, 400, seed=3)
    keep = str(tmp_path / "ring")
    cap = 1 << 20
    ring = Watched(keep, cap, segment_bytes=128 << 10, queue_bytes=1 << 30)
    memory = AllFrames()
    ring.start()
    assert feed(ring, memory, src, chunk=48 << 10) == info["packets"]
    ring.close()
    assert not ring.alive and not keep_threads() and not ring.error
    assert ring.not_written == 0 and ring.written == info["packets"]
    assert info["bytes"] > 10 * cap  # the ring wrapped many times
    assert 0 < ring.most <= cap and dir_bytes(keep) <= cap
    segs = list_segments(keep)
    assert len(segs) >= 4
    assert all(sorted(s.files) == ["clus", "fidx", "flows", "pcapng"] for s in segs)
    assert stat.S_IMODE(os.stat(keep).st_mode) == 0o700
    assert {stat.S_IMODE(e.stat().st_mode) for e in os.scandir(keep)} == {0o600}
    reader = ring.reader()
    on_disk = 0
    for fid in memory.flows().tolist():
        pk = reader.packets_of(fid)
        assert ring.holds(fid) == bool(len(pk))  # the index forgets deleted segments
        if not len(pk):
            continue
        on_disk += len(pk)
        disk = {f.seq: f for f in reader.frames_of(fid)}
        mem = {f.seq: f for f in memory.frames_of(fid)}
        assert pk.seq.tolist() == sorted(disk) and set(disk) <= set(mem)
        for seq, fr in disk.items():  # whole frames, byte for byte, with their times
            m = mem[seq]
            assert (fr.data, fr.wirelen, fr.linktype) == (m.data, m.wirelen, m.linktype)
            assert abs(fr.ts - m.ts) < 1e-6
        last = reader.frames_of(fid, upto_seq=int(pk.seq[-1]) - 1, limit=2)
        assert [f.seq for f in last] == pk.seq[-3:-1].tolist()
    assert check_segments(keep) == on_disk if TSHARK else on_disk


def test_old_runs_go_first_and_a_new_run_gets_its_own_id(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    synthetic_pcap(src, 6000, 100, seed=4)
    keep = str(tmp_path / "ring")
    runs = []
    for _ in range(2):
        ring = DiskRing(keep, 1 << 20, segment_bytes=128 << 10, queue_bytes=1 << 30)
        ring.start()
        feed(ring, AllFrames(), src)
        ring.close()
        runs.append(ring.run)
        assert dir_bytes(keep) <= 1 << 20
    assert runs[0] != runs[1]
    left = [s.run for s in list_segments(keep)]
    # The second run wrote more than the cap: every first-run segment went first.
    assert set(left) == {runs[1]}


def test_a_second_writer_and_a_bad_directory_are_refused(tmp_path: Path) -> None:
    ring = DiskRing(str(tmp_path), 1 << 24)
    with pytest.raises(SourceError, match="another netmon is keeping packets there"):
        DiskRing(str(tmp_path), 1 << 24)
    ring.close()
    DiskRing(str(tmp_path), 1 << 24).close()  # the lock went with the first
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SourceError, match="not a directory") as exc:
        DiskRing(str(afile), 1 << 24)
    assert exc.value.exit_code == EXIT_USAGE


def test_a_writer_behind_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    synthetic_pcap(src, 3000, 50, seed=5)
    ring = DiskRing(str(tmp_path / "ring"), 1 << 24, queue_bytes=1)
    # Not started: the first batch waits in the queue, the others find no room.
    n = feed(ring, AllFrames(), src, chunk=32 << 10)
    first = ring._items[0]
    ring.start()
    ring.close()
    assert ring.written == len(first.ts) and ring.dropped == n - ring.written > 0
    assert not keep_threads()


def test_the_open_segment_is_searched_in_memory_and_matches_its_files(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    info = synthetic_pcap(src, 40_000, 120, seed=8)  # the rows grow past 16 k twice
    keep = str(tmp_path / "ring")
    ring = DiskRing(keep, 1 << 30, queue_bytes=1 << 30)  # one segment, open throughout
    memory = AllFrames()
    ring.start()
    feed(ring, memory, src)
    deadline = time.time() + 30
    while ring.queued and time.time() < deadline:
        time.sleep(0.01)
    stem, rows, flow = ring.open_index
    idx = os.path.join(keep, f"{stem}.idx")
    assert rows.tobytes() == Path(idx).read_bytes() and len(rows) == info["packets"]
    assert flow.tolist() == rows["flow"].tolist() and flow.flags.c_contiguous
    files = DiskReader(keep, ring.run)  # as another process reads: the files only
    flows = memory.flows().tolist()
    for fid in flows[:20]:
        mine, theirs = ring.reader().packets_of(fid), files.packets_of(fid)
        assert mine.seq.tolist() == theirs.seq.tolist() == sorted(memory.by_flow[fid])
        assert [f.data for f in ring.reader().frames_of(fid)] == [
            f.data for f in memory.frames_of(fid)]
    # Without the file, the ring's reader still answers (from memory); a files-only
    # reader does not: the index is not read from disk at each question.
    os.rename(idx, idx + ".away")
    try:
        assert len(ring.reader().packets_of(flows[0])) == len(memory.by_flow[flows[0]])
        assert len(files.packets_of(flows[0])) == 0
        assert sum(f.packets for f in ring.reader().flows()) == info["packets"]
    finally:
        os.rename(idx + ".away", idx)
    ring.close()  # sorted from memory: the same rows, by flow then seq
    assert ring.open_index is None and not os.path.exists(idx)
    fidx = read_index(os.path.join(keep, f"{stem}.fidx"))
    assert sorted(fidx.tolist(), key=lambda r: (r[0], r[1])) == fidx.tolist()
    assert sorted(fidx.tolist()) == sorted(rows.tolist())
    for fid in flows[:20]:
        assert files.packets_of(fid).seq.tolist() == sorted(memory.by_flow[fid])


def test_flows_files_are_binary_and_older_text_ones_still_read(tmp_path: Path) -> None:
    src = str(captures_dir() / "03_ipv6_tls_reddit.pcap")
    keep = str(tmp_path / "ring")
    ring = DiskRing(keep, 1 << 30, queue_bytes=1 << 30)
    ring.start()
    feed(ring, AllFrames(), src)
    ring.close()
    (seg,) = list_segments(keep)
    path = os.path.join(keep, f"{seg.stem}.flows")
    assert Path(path).read_bytes().startswith(FLOWS_MAGIC)
    tuples = read_flow_lines(path)
    assert tuples and any(":" in t[1] for t in tuples.values())  # IPv6, formatted
    old = tmp_path / "old.flows"  # what an earlier netmon wrote: text lines
    old.write_text("".join(f"{f}\t{p}\t{a}\t{pa}\t{b}\t{pb}\n"
                           for f, (p, a, pa, b, pb) in tuples.items()) + "7\tcut")
    assert read_flow_lines(str(old)) == tuples
    cut = tmp_path / "cut.flows"  # a crash mid-row: whole rows only
    cut.write_bytes(Path(path).read_bytes()[:-5])
    assert read_flow_lines(str(cut)) == dict(list(tuples.items())[:-1])


# --------------------------------------------------------------------- in the engine
def run_engine(settings: Settings, source) -> tuple[Engine, Snapshots]:  # type: ignore[no-untyped-def]
    snaps = Snapshots()
    engine = Engine(settings, [source], snaps)
    engine.start()
    return engine, snaps


def tshark_frames(path: Path, display_filter: str) -> list[bytes]:
    """The frames tshark shows for a filter, as bytes (written as pcap, then parsed)."""
    out = subprocess.run([TSHARK, "-r", str(path), "-Y", display_filter, "-F", "pcap",
                          "-w", "-"], capture_output=True, check=True).stdout
    frames, at = [], 24
    while at < len(out):
        caplen = struct.unpack_from("<I", out, at + 8)[0]
        frames.append(out[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return frames


class LiveLike(FileSource):
    """A recording fed as a live capture is: it must never be made to wait."""

    kind = "live"


def slow_writer(engine: Engine, pauses: list[str], delay: float = 0.03) -> None:
    """A disk writer slower than ingest (a small queue, ``delay`` s more per batch) and
    sources that record every pause and resume."""
    ring = engine.disk
    ring.queue_bytes = 256 << 10
    write = ring._write_item

    def slow(item) -> None:  # type: ignore[no-untyped-def]
        time.sleep(delay)
        write(item)

    ring._write_item = slow  # type: ignore[method-assign]

    def recorded(name: str, orig):  # type: ignore[no-untyped-def]
        def record() -> None:
            pauses.append(name)
            orig()
        return record

    for src in engine.sources:
        for name in ("pause", "resume"):
            setattr(src, name, recorded(name, getattr(src, name)))


@pytest.mark.parametrize("how", ["file", "paced", "stdin"])
def test_a_replay_waits_for_the_disk_writer_and_loses_nothing(tmp_path: Path,
                                                               how: str) -> None:
    src = str(tmp_path / "in.pcap")
    info = synthetic_pcap(src, 60_000, 300, seed=7)
    keep = str(tmp_path / "ring")
    settings = Settings(read=src, keep_packets=keep, tick=0.1, cluster=False)
    if how == "stdin":
        fd = os.open(src, os.O_RDONLY)
        rfd, wfd = os.pipe()
        source = StdinSource(rfd)
    else:
        # Paced far faster than the writer keeps up (the file spans minutes).
        source = FileSource(src, speed=1000 if how == "paced" else None)
    snaps, pauses = Snapshots(), []
    engine = Engine(settings, [source], snaps)
    slow_writer(engine, pauses)
    engine.start()
    if how == "stdin":
        os.close(rfd)
        with open(wfd, "wb") as pipe, os.fdopen(fd, "rb") as f:
            shutil.copyfileobj(f, pipe)
    assert engine.join(120)
    ring = engine.disk
    assert snaps.latest.totals.ip_packets == info["packets"]
    assert ring.dropped == 0 and ring.written == info["packets"] and not ring.error
    assert pauses.count("pause") >= 3 and pauses.count("resume") >= 2, pauses
    assert not [w for w in engine.result.warnings if "--keep-packets" in w]
    assert sum(len(ring.reader().packets_of(f)) for f in ring.present) == info["packets"]
    assert not keep_threads()


def test_a_live_source_is_never_paused_the_ring_drops_and_says_so(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    info = synthetic_pcap(src, 60_000, 300, seed=7)
    keep = str(tmp_path / "ring")
    snaps, pauses = Snapshots(), []
    engine = Engine(Settings(read=src, keep_packets=keep, tick=0.1, cluster=False),
                    [LiveLike(src)], snaps)
    # A batch counted every 8 k packets; 0.2 s per batch is slower than ingest on
    # any machine, however loaded, so batches find the queue full.
    slow_writer(engine, pauses, 0.2)
    engine.start()
    assert engine.join(120)
    ring = engine.disk
    assert pauses == [] and snaps.latest.totals.ip_packets == info["packets"]
    assert ring.dropped > 0 and ring.written + ring.dropped == info["packets"]
    mine = [w for w in engine.result.warnings if "--keep-packets" in w]
    assert mine == [f"--keep-packets: {ring.dropped} packets were not written (the disk "
                    "writer fell behind)"]
    assert not keep_threads()


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_a_replay_keeps_every_flows_frames_as_tshark_shows_them(tmp_path: Path) -> None:
    path = captures_dir() / HTTP_CAPTURE
    keep = str(tmp_path / "ring")
    engine, snaps = run_engine(Settings(read=str(path), keep_packets=keep, tick=0.1),
                               FileSource(str(path)))
    assert engine.join(60)
    assert not keep_threads() and not engine.disk.alive
    assert snaps.latest.totals.ip_packets == 956 and not engine.result.warnings
    link = EngineUILink(engine)  # the engine has stopped: the link's own thread reads
    flows = engine.table.live_views()
    assert sum(len(engine.disk.reader().packets_of(f.flow_id)) for f in flows) == 956
    for flow in sorted(flows, key=lambda f: -f.packets)[:4]:
        proto = "tcp" if flow.proto == 6 else "udp"
        want = tshark_frames(path, f"ip.addr=={flow.addr_a} && ip.addr=={flow.addr_b} && "
                             f"{proto}.port=={flow.port_a} && {proto}.port=={flow.port_b}")
        got = engine.disk.reader().frames_of(flow.flow_id)
        assert [f.data for f in got] == want and len(want) == flow.packets
        plist = ask(link.query_packets, flow.flow_id)
        assert plist.tier == "disk" and len(plist.packets) == flow.packets
    http = max(flows, key=lambda f: f.packets)
    dis = ask(link.dissect, http.flow_id, 3)
    assert not dis.error and any("Hypertext" in line or "Transmission Control" in line
                                 for line in dis.lines)
    link.stop()
    assert check_segments(keep) == 956


def test_stopping_mid_write_ends_the_writer_thread(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    synthetic_pcap(src, 200_000, 2000, seed=6)
    keep = str(tmp_path / "ring")
    engine, snaps = run_engine(Settings(read=src, keep_packets=keep, keep_size=64 << 20,
                                        tick=0.1, cluster=False), FileSource(src))
    snaps.wait_for(lambda s: s.totals.ip_packets > 0)
    while not engine.disk.written:
        time.sleep(0.01)
    engine.stop()
    assert engine.join(60)
    assert not keep_threads() and not engine.disk.alive
    assert dir_bytes(keep) <= 64 << 20
    if TSHARK:
        check_segments(keep)


def test_a_removed_directory_gives_one_message_and_counting_goes_on(tmp_path: Path) -> None:
    data = (captures_dir() / HTTP_CAPTURE).read_bytes()
    keep = str(tmp_path / "ring")
    rfd, wfd = os.pipe()
    engine, snaps = run_engine(Settings(read="-", keep_packets=keep, tick=0.1),
                               StdinSource(rfd))
    os.close(rfd)
    half = len(data) // 2
    os.write(wfd, data[:half])
    deadline = time.time() + 30
    while not engine.disk.written and time.time() < deadline:
        time.sleep(0.02)
    assert engine.disk.written
    shutil.rmtree(keep)
    for at in range(half, len(data), 4096):  # several batches after the removal
        os.write(wfd, data[at:at + 4096])
        time.sleep(0.005)
    os.close(wfd)
    assert engine.join(60)
    assert snaps.latest.totals.ip_packets == 956
    mine = [w for w in engine.result.warnings if "--keep-packets" in w]
    assert len(mine) == 1 and "removed" in mine[0] and "monitoring goes on" in mine[0]
    assert not keep_threads()


FULL_DISK = """
import resource, signal, sys
from netmon.app.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_gives_one_message_and_the_run_finishes(tmp_path: Path) -> None:
    path = captures_dir() / HTTP_CAPTURE
    keep = tmp_path / "ring"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, "--headless", "-r", str(path),
                           "--keep-packets", str(keep)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "--keep-packets" in ln]
    assert len(lines) == 1 and "past the size limit" in lines[0], done.stderr
    assert "956 pkts" in done.stderr
    for seg in list_segments(str(keep)):  # cut back to whole frames: still pcapng
        assert os.path.getsize(keep / f"{seg.stem}.pcapng") <= 200_000
    if CAPINFOS:
        check_segments(str(keep))


# --------------------------------------------------------------------- command line
def test_cli_keeps_lists_and_exports_round_trip(tmp_path: Path) -> None:
    path = captures_dir() / HTTP_CAPTURE
    keep = tmp_path / "ring"
    done = run_netmon("--headless", "-r", str(path), "--keep-packets", str(keep),
                      "--keep-size", "20M")
    assert done.returncode == 0, done.stderr
    listing = run_netmon("packets", str(keep))
    assert listing.returncode == 0, listing.stderr
    rows = [ln.split() for ln in listing.stdout.splitlines()[2:]]
    assert len(rows) == 39 and sum(int(r[5]) for r in rows) == 956
    biggest = max(rows, key=lambda r: int(r[5]))
    out = tmp_path / "one.pcapng"
    done = run_netmon("packets", str(keep), "--flow", biggest[0], "-w", str(out))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if TSHARK:
        assert len(tshark_frames(out, "frame")) == int(biggest[5])
    dns = tmp_path / "dns.pcapng"
    done = run_netmon("packets", str(keep), "--host", "4.2.2.1", "--port", "53", "-w",
                      str(dns))
    assert done.returncode == 0, done.stderr
    n_dns = sum(int(r[5]) for r in rows if r[4] == "4.2.2.1:53")
    assert f"wrote {n_dns} packets" in done.stdout
    if TSHARK:
        assert len(tshark_frames(dns, "dns")) == n_dns
    for args, words in ((("packets", str(tmp_path / "none")), "no such directory"),
                        (("packets", str(keep), "-w", str(out)), "choose the flows"),
                        (("packets", str(keep), "--host", "nohost"), "not an IP address"),
                        (("--headless", "-r", str(path), "--keep-packets", str(out)),
                         "not a directory"),
                        (("--headless", "-r", str(path), "--keep-size", "lots"),
                         "a size such as 500M")):
        bad = run_netmon(*args)
        assert bad.returncode == EXIT_USAGE, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and words in bad.stderr, bad.stderr


def test_sizes_are_read_with_units_everywhere(tmp_path: Path) -> None:
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30
    assert parse_size("1.5G") == 3 << 29 and parse_size("1GiB") == 1 << 30
    for bad in ("", "G", "lots", "-1G", "nanG", "1X"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_setting("keep_size", "2G") == 2 << 30
    with pytest.raises(ValueError, match="from 16M to 1024T"):
        parse_setting("keep_size", "1M")
    conf = tmp_path / "c.toml"
    conf.write_text('keep-size = "1.5G"\nkeep-packets = "/var/tmp/ring"\n')
    s = load_settings({}, str(conf))
    assert s.keep_size == 3 << 29 and s.keep_packets == "/var/tmp/ring"
    assert load_settings({"NETMON_KEEP_SIZE": "500M"}).keep_size == 500 << 20
    with pytest.raises(SourceError, match="NETMON_KEEP_SIZE"):
        load_settings({"NETMON_KEEP_SIZE": "huge"})
    assert Settings().keep_size == 1 << 30
