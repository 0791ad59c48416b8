"""Export packets: some flows' kept frames as one pcapng file Wireshark opens.

Pure module (no textual, no twisted); runs in a worker thread with frames the reactor
thread copied out of the packet store. The file is written like every export
(netmon.export.atomic): nameless and 0600 until it is whole and synced, then put in
place under a name no earlier export has; a failure leaves nothing behind and is one
line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from netmon.export.atomic import AtomicFile
from netmon.export.bundle import ExportError
from netmon.ingest.dissect import capture_bytes
from netmon.ingest.follow import Frame


def write_packets(directory: str, frames: Sequence[Frame], name: str,
                  stamp: str | None = None) -> str:
    """Write ``frames`` (in capture order) to ``directory`` as
    ``netmon-<stamp>-<name>.pcapng`` (``-2``, ``-3``... if taken); return the path.
    Raises ExportError."""
    directory = os.path.expanduser(directory or ".")
    if not os.path.exists(directory):
        raise ExportError(f"cannot export to {directory}: no such directory")
    if not os.path.isdir(directory):
        raise ExportError(f"cannot export to {directory}: not a directory")
    stem = f"netmon-{stamp or time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path = os.path.join(directory, f"{stem}.pcapng")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(directory, f"{stem}-{n}.pcapng")
    tmp = None
    try:
        tmp = AtomicFile(path, "packets")
        tmp.write(capture_bytes(frames))
        tmp.publish()
    except OSError as exc:
        if tmp is not None:
            tmp.discard()
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
