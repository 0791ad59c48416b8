"""``python -m netmon.bench NAME [ARGS]``: run one benchmark; each prints its numbers
beside baselines measured in the same run.

Main thread of its own process. Each benchmark is a module of this package with a
``main(argv)``; it is imported only when asked for, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: name -> what it measures; the module is ``netmon.bench.<name>``.
BENCHMARKS = {
    "ingest": "replay throughput and memory per flow, against tshark",
    "cluster": "clustering quality on labelled loopback traffic",
    "clustermix": "clustering quality on labelled mixes of the shared real captures",
    "listener": "listener connections/s, memory per connection",
    "fuzz": "long mutation fuzzing of every untrusted-input parser",
    "collector_shapes": "NetFlow/IPFIX decoder's worst us per crafted datagram vs normal",
    "soak": "minutes of looped replay: memory growth, exact counts",
    "ui": "UI-thread cost per tick and per key at 100 k flows",
    "tui": "replay packets/s with the TUI running vs headless",
    "collect": "NetFlow/IPFIX records/s collected without loss",
    "ssh": "CPU per packet: four --ssh sources vs one local capture",
    "exported": "clustering quality of flows from softflowd's export",
    "flowsout": "--flows-out writing speed at 4 M flows, against the per-flow writer",
    "tlshello": "TLS/QUIC ClientHellos parsed per second (SNI, JA3, JA4), against tshark",
    "procs": "process attribution: /proc refresh costs at N processes, vs psutil and ss",
    "procwire": "process attribution per tick at 10 k new flows, beside counting them",
    "names": "DNS answers, HTTP requests, SSH banners parsed/s; name cache lookups/s",
    "packets": "packet store: memory under 1 M flows, ingest with the store on vs off",
    "keep": "--keep-packets: replay time with and without the disk ring, MB written",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in BENCHMARKS.items():
        sub.add_parser(name, help=text, add_help=False)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(f"netmon.bench.{args.what}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
