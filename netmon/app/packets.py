"""``netmon packets DIR``: list the flows a ``--keep-packets DIR`` ring holds, and write
chosen flows' packets (by id, cluster, host, port) as one pcapng.

Main thread of its own command; reads DIR with :class:`netmon.ingest.diskindex.DiskReader`,
so it works while a netmon is still writing there (the segment being written is
read up to its last indexed frame). Errors are one line and an exit code.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from typing import TextIO

from netmon.core.errors import EXIT_BAD_INPUT, EXIT_USAGE, SourceError
from netmon.core.text import NAME_MAX, print_line, safe_text
from netmon.core.values import proto_name
from netmon.ingest.diskindex import DiskReader, FlowEnds, write_pcapng


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1e3):03d}"


def _same_host(text: str, want: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == want
    except ValueError:
        return False


def select(flows: list[FlowEnds], args: argparse.Namespace) -> list[FlowEnds]:
    """The flows the options name: --run (else the newest run when --flow or --cluster
    is given: ids are numbered per run), --flow ids, --cluster, --host and --port (all
    that are given must match)."""
    run = args.run
    if run is None and (args.flow or args.cluster_id is not None) and flows:
        run = max(f.run for f in flows)
    host = None
    if args.host is not None:
        try:
            host = ipaddress.ip_address(args.host.strip("[]"))
        except ValueError:
            raise SourceError(f"--host '{safe_text(args.host, NAME_MAX)}' is not an IP "
                              "address", EXIT_USAGE) from None
    ids = set(args.flow or ())
    out = []
    for f in flows:
        if run is not None and f.run != run:
            continue
        if ids and f.flow_id not in ids:
            continue
        if args.cluster_id is not None and f.cluster != args.cluster_id:
            continue
        if host is not None and not (_same_host(f.addr_a, host) or _same_host(f.addr_b, host)):
            continue
        if args.port is not None and args.port not in (f.port_a, f.port_b):
            continue
        out.append(f)
    return out


def run_packets(args: argparse.Namespace, out: TextIO) -> int:
    directory = args.ring_dir
    if not directory:
        raise SourceError("netmon packets needs the --keep-packets directory: netmon "
                          "packets DIR", EXIT_USAGE)
    shown = safe_text(directory, NAME_MAX)
    if not os.path.isdir(directory):
        raise SourceError(f"packets {shown}: no such directory", EXIT_USAGE)
    if not os.access(directory, os.R_OK | os.X_OK):
        raise SourceError(f"packets {shown}: no permission to read it", EXIT_USAGE)
    if args.port is not None and not 0 <= args.port <= 65535:
        raise SourceError("--port must be a number from 0 to 65535", EXIT_USAGE)
    every = DiskReader(directory).flows()
    flows = select(every, args)
    if not flows and args.cluster_id is not None:
        run = args.run or max((f.run for f in every), default=None)
        known = sorted({f.cluster for f in every if f.run == run and f.cluster >= 0})
        if run is not None and not known:
            raise SourceError(f"run {safe_text(run, NAME_MAX)} recorded no clusters (it ran "
                              "with --no-cluster, or ended before it first clustered)",
                              EXIT_USAGE)
        if known:
            listed = ", ".join(map(str, known[:20])) + (", ..." if len(known) > 20 else "")
            raise SourceError(f"no flow kept in {shown} is in cluster {args.cluster_id} "
                              f"(run {safe_text(run, NAME_MAX)} has clusters {listed})",
                              EXIT_USAGE)
    if args.write:
        return _export(directory, flows, args, out)
    if not flows:
        print_line(f"netmon: no flows kept in {shown} match", out)
        return 0
    ends = [(f"{f.addr_a}:{f.port_a}", f"{f.addr_b}:{f.port_b}") for f in flows]
    wa = max(len(a) for a, _ in ends)
    wb = max(len(b) for _, b in ends)
    run = None
    for f, (a, b) in zip(flows, ends, strict=True):
        if f.run != run:
            run = f.run
            print_line(f"run {run}:", out)
            print_line(f"{'ID':>8}  {'PROTO':<6} {'A':>{wa}}    {'B':<{wb}} {'PACKETS':>8}  "
                       f"{'FIRST':<23}  {'LAST':<23}  CLUSTER", out)
        # Labels come from traffic (server names): safe_text, never raw.
        cluster = (f"{f.cluster} {safe_text(f.label, NAME_MAX)}".rstrip()
                   if f.cluster >= 0 else "-")
        print_line(f"{f.flow_id:>8}  {proto_name(f.proto):<6} {a:>{wa}} -> {b:<{wb}} "
                   f"{f.packets:>8}  {_when(f.first)}  {_when(f.last)}  {cluster}", out)
    return 0


def _export(directory: str, flows: list[FlowEnds], args: argparse.Namespace,
            out: TextIO) -> int:
    if not (args.flow or args.cluster_id is not None or args.host
            or args.port is not None):
        raise SourceError("choose the flows to write with --flow ID, --cluster ID, --host "
                          "or --port", EXIT_USAGE)
    if not flows:
        raise SourceError(f"no flow kept in {safe_text(directory, NAME_MAX)} matches",
                          EXIT_USAGE)
    frames = []
    readers: dict[str, DiskReader] = {}
    for f in flows:
        reader = readers.setdefault(f.run, DiskReader(directory, f.run))
        frames.extend(reader.frames_of(f.flow_id))
    frames.sort(key=lambda fr: fr.ts)  # stable: a flow's own order holds on equal times
    try:
        size = write_pcapng(args.write, frames)
    except OSError as exc:
        raise SourceError(f"cannot write {safe_text(args.write, NAME_MAX)}: "
                          f"{exc.strerror or exc}", EXIT_BAD_INPUT) from None
    what = f"{len(flows)} flows"
    if args.cluster_id is not None:
        label = safe_text(flows[0].label, NAME_MAX)
        what += f" of cluster {args.cluster_id}" + (f" ({label})" if label else "")
    print_line(f"netmon: wrote {len(frames)} packets of {what} ({size} bytes) to "
               f"{safe_text(args.write, NAME_MAX)}", out)
    return 0
