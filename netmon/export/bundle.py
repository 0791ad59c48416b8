"""Export files: flows and clusters as CSV and JSON, and a BPF filter, all or nothing.

Pure module (no textual, no twisted); runs in a worker thread with immutable inputs
(FlowViews, ClusterViews, strings) that the reactor thread gathered. Every file is
written to a nameless 0600 file in the target directory (see netmon.export.atomic),
flushed to disk, and put in place only once every file has been written, so a
failure (disk full, no permission, the directory gone) leaves nothing half-written
behind and is reported as one line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterable, Sequence

from netmon.core.values import ClusterView, FlowView
from netmon.export.atomic import AtomicFile

FLOW_FIELDS = ("flow_id", "proto", "addr_a", "port_a", "addr_b", "port_b", "pkts_a2b",
               "bytes_a2b", "pkts_b2a", "bytes_b2a", "first_epoch", "last_epoch", "syn",
               "synack", "fin", "rst", "psh", "size_mean", "size_std", "iat_mean",
               "iat_std", "first_sizes", "end_reason", "cluster_id", "cluster_label",
               "outlier", "server_name", "name_source", "app", "ja4", "ja3", "software",
               "process", "pid", "user", "container", "peer_process")
CLUSTER_FIELDS = ("id", "label", "flows", "hosts", "pkt_rate", "byte_rate", "share",
                  "top_ports", "top_hosts", "outliers", "new")


class ExportError(Exception):
    """An export that failed for a reason the user can fix; one line."""


def _csv(fields: Sequence[str], rows: Iterable[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(fields)
    for d in rows:
        w.writerow([d[k] if d[k] is not None else "" for k in fields])
    return out.getvalue()


def flows_csv(flows: Sequence[FlowView]) -> str:
    """Flows as CSV: one header row, then one row per flow (first sizes space-separated)."""
    def row(f: FlowView) -> dict:
        d = f.to_json()
        d["first_sizes"] = " ".join(map(str, d["first_sizes"]))
        return d

    return _csv(FLOW_FIELDS, map(row, flows))


def clusters_csv(clusters: Sequence[ClusterView]) -> str:
    """Clusters as CSV; top ports and hosts as "key:flows" pairs, space-separated."""
    def row(c: ClusterView) -> dict:
        d = c.to_json()
        d["top_ports"] = " ".join(f"{p}:{n}" for p, n in c.top_ports)
        d["top_hosts"] = " ".join(f"{h}:{n}" for h, n in c.top_hosts)
        return d

    return _csv(CLUSTER_FIELDS, map(row, clusters))


def export_files(directory: str, flows: Sequence[FlowView], clusters: Sequence[ClusterView],
                 *, meta: dict, bpf: str = "", bpf_name: str = "",
                 stamp: str | None = None) -> tuple[str, ...]:
    """Write the export into ``directory``; return the paths written.

    Files: ``netmon-<stamp>-flows.csv/.json``, ``-clusters.csv/.json`` and, when
    ``bpf`` is given, ``-<bpf_name>.bpf``. ``meta`` (what was exported: filter,
    cluster, time) heads each JSON file. Raises ExportError, with nothing left behind.
    """
    directory = os.path.expanduser(directory or ".")
    if not os.path.exists(directory):
        raise ExportError(f"cannot export to {directory}: no such directory")
    if not os.path.isdir(directory):
        raise ExportError(f"cannot export to {directory}: not a directory")
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    contents = {
        "flows.csv": flows_csv(flows),
        "flows.json": json.dumps({**meta, "flows": [f.to_json() for f in flows]}, indent=1),
        "clusters.csv": clusters_csv(clusters),
        "clusters.json": json.dumps({**meta, "clusters": [c.to_json() for c in clusters]},
                                    indent=1),
    }
    if bpf:
        contents[f"{bpf_name or 'filter'}.bpf"] = bpf + "\n"
    stem = _free_stem(directory, f"netmon-{stamp}", contents)
    return _write_all(directory, {f"{stem}-{suffix}": text for suffix, text in contents.items()})


def _free_stem(directory: str, stem: str, contents: dict[str, str]) -> str:
    """``stem``, or ``stem-2``, ``-3``...: never overwrite an earlier export."""
    n = 1
    candidate = stem
    while any(os.path.exists(os.path.join(directory, f"{candidate}-{s}")) for s in contents):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _write_all(directory: str, files: dict[str, str]) -> tuple[str, ...]:
    pending: list[AtomicFile] = []
    done: list[str] = []
    name = ""
    try:
        for name, text in files.items():
            pending.append(AtomicFile(os.path.join(directory, name), "export"))
            pending[-1].write(text.encode("utf-8"))
        for tmp in pending:
            name = os.path.basename(tmp.path)
            tmp.publish()
            done.append(tmp.path)
    except OSError as exc:
        for tmp in pending:
            tmp.discard()
        for final in done:
            with contextlib.suppress(OSError):
                os.unlink(final)
        where = os.path.join(directory, name) if name else directory
        raise ExportError(f"cannot write {where}: {exc.strerror or exc}") from None
    return tuple(done)

