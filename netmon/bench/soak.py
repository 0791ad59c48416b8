"""``python -m netmon.bench soak``: replay captures in a loop at full speed for minutes
with a capped flow table; print resident memory over time and check the counts.

Runs the real Engine (reactor thread, clustering worker, ticks) in this process with
a looping replay source: each pass re-decodes the same capture bytes with time stamps
shifted past the previous pass, so flows age and expire as on a long-running server.
After a warm-up, resident memory must grow less than 5%, and the packet and byte
totals must equal passes x the capture's own totals exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from netmon.bench.memory import rss_bytes
from netmon.core.settings import Settings
from netmon.core.values import Snapshot
from netmon.engine.engine import Engine
from netmon.ingest.batch import PacketBatch
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.sources.base import PcapFeed, Source

CHUNK = 1 << 20


class LoopingReplay(Source):
    """Replays ``data`` (a pcap/pcapng) again and again until ``seconds`` have passed,
    shifting each pass's time stamps to follow the previous pass."""

    kind = "file"

    def __init__(self, data: bytes, seconds: float) -> None:
        super().__init__("soak replay")
        self.data = data
        self.seconds = seconds
        self.passes = 0
        self.feed = PcapFeed(lambda: self._sink)
        self._offset = 0.0
        self._span = 0.0
        self._pos = 0
        self._deadline = 0.0
        self._reactor: Any = None
        self._stopped = False

    def _begin(self, reactor: Any) -> None:
        self._reactor = reactor
        self._deadline = time.monotonic() + self.seconds
        self.state = "running"
        reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        if self._stopped:
            return
        if self._pos >= len(self.data):
            self.passes += 1
            self._pos = 0
            self._offset += self._span + 1.0
            if time.monotonic() >= self._deadline:
                self._finish(None)
                return
            # A fresh decoder per pass; its counters join the total through `frames`.
            old = self.feed.decoder
            self.feed.decoder = PcapStreamDecoder()
            self.feed.decoder.frames = old.frames
            self.feed.decoder.nonip = old.nonip
            self.feed.decoder.skipped = old.skipped
        chunk = self.data[self._pos:self._pos + CHUNK]
        self._pos += len(chunk)
        batch = self.feed.decoder.feed_batch(chunk)
        if len(batch):
            if self.passes == 0:
                self._span = max(self._span, float(batch.ts.max() - self._first(batch)))
            if self._offset:
                batch = replace(batch, ts=batch.ts + self._offset)
            self._sink(batch)
        self._reactor.callLater(0, self._pump)

    def _first(self, batch: PacketBatch) -> float:
        if not hasattr(self, "_t0"):
            self._t0 = float(batch.ts.min())
        return self._t0

    def stop(self) -> None:
        self._stopped = True
        self._finish(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--max-flows", type=int, default=100_000)
    parser.add_argument("--capture", help="pcap to loop (default: a synthetic one)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the "
                        "memory baseline is taken")
    args = parser.parse_args(argv)
    if args.capture:
        data = Path(args.capture).read_bytes()
    else:
        import tempfile

        from netmon.testing.synth import synthetic_pcap

        with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
            # More flows than the cap holds: eviction runs all the time.
            synthetic_pcap(tmp.name, 300_000, 150_000, seed=7)
            data = Path(tmp.name).read_bytes()
    one = PcapStreamDecoder()
    ref = one.feed_batch(data)
    per_pass = (len(ref), int(ref.wirelen.sum()))
    del ref, one

    seconds = args.minutes * 60
    source = LoopingReplay(data, seconds)
    settings = Settings(max_flows=args.max_flows, idle_timeout=300.0)
    samples: list[tuple[float, int]] = []
    final: list[Snapshot] = []
    start = time.monotonic()
    next_sample = [start]

    def publish(snap: Snapshot) -> None:  # reactor thread: cheap and non-blocking
        now = time.monotonic()
        if now >= next_sample[0]:
            samples.append((now - start, rss_bytes()))
            next_sample[0] = now + 10.0
        if snap.finished:
            final.append(snap)

    engine = Engine(settings, [source], publish)
    engine.start()
    while not engine.join(5.0):
        pass
    snap = final[-1]
    base = [r for t, r in samples if t >= args.warmup]
    if not base:
        print("run shorter than the warm-up: no memory verdict")
        return 1
    # Growth is a trend, not a spike: compare the mean of the last third of the
    # samples after warm-up with the first third (max is printed too).
    third = max(1, len(base) // 3)
    early, late = sum(base[:third]) / third, sum(base[-third:]) / third
    growth = (late - early) / early
    spike = (max(base) - early) / early
    want = (per_pass[0] * source.passes, per_pass[1] * source.passes)
    got = (snap.totals.ip_packets, snap.totals.bytes)
    elapsed = time.monotonic() - start
    print(f"soak: {source.passes} passes in {elapsed:.0f} s, {got[0]:,} packets "
          f"({got[0] / elapsed:,.0f}/s), flows seen {snap.totals.flows_seen:,}, evicted "
          f"{snap.totals.flows_evicted:,}, live at end {snap.totals.flows_live:,}")
    for t, r in samples[:: max(1, len(samples) // 12)]:
        print(f"  t={t:6.0f} s  RSS {r / 1e6:7.1f} MB")
    print(f"RSS after warm-up: first third {early / 1e6:.1f} MB, last third "
          f"{late / 1e6:.1f} MB: growth {growth * 100:.2f}% (target < 5%); highest sample "
          f"{max(base) / 1e6:.1f} MB ({spike * 100:+.1f}%)")
    exact = got == want
    print(f"counts: {got[0]:,} packets / {got[1]:,} bytes; expected {want[0]:,} / {want[1]:,}:"
          f" {'exact' if exact else 'MISMATCH'}")
    return 0 if exact and growth < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
