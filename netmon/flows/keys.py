"""Flow keys: how packets map to bidirectional flows, and how keys read back.

Pure module (numpy only), run by the reactor thread in netmon (the engine) through
the FlowTable, the filter language and flow selection.

A key is protocol + the unordered pair of endpoints (address, port) + the observation
point; ports are 0 for protocols without them, so ICMP is keyed by the address pair.
``FIRST_SIZES`` lives here because the table, its views, and the listener that
measures connections all size their first-packet signatures by it.
"""

from __future__ import annotations

import socket

import numpy as np

from netmon.ingest.batch import PacketBatch

#: How many leading packet sizes (signed by direction) a flow keeps for clustering.
FIRST_SIZES = 8

#: A flow key: protocol, address family, then the lo endpoint and the hi endpoint
#: (16-byte address, big-endian port), lo being the smaller, then the observation
#: point (which capture, SSH host or flow exporter saw it: the same 5-tuple seen at
#: two places is two flows, so nothing is counted twice). As one bytes object it
#: hashes fast and costs ~70 bytes per flow.
KEY_DTYPE = np.dtype([("p", "u1"), ("f", "u1"), ("a", "V16"), ("ap", ">u2"),
                      ("b", "V16"), ("bp", ">u2"), ("o", ">u2")])


def address_digest(addrs16: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each 16-byte address (rows of an n x 16 uint8 array)."""
    halves = np.ascontiguousarray(addrs16).view(">u8").astype(np.uint64)
    return halves[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ halves[:, 1]


def key_observer(key: bytes) -> int:
    """The observation point (index into FlowTable.observers) of a flow key."""
    return int.from_bytes(key[38:40], "big")


def split_key(key: bytes) -> tuple[int, str, int, str, int]:
    """(proto, lo address text, lo port, hi address text, hi port) of a flow key."""
    fam = socket.AF_INET if key[1] == 4 else socket.AF_INET6
    a = key[14:18] if key[1] == 4 else key[2:18]
    b = key[32:36] if key[1] == 4 else key[20:36]
    return (key[0], socket.inet_ntop(fam, a), int.from_bytes(key[18:20], "big"),
            socket.inet_ntop(fam, b), int.from_bytes(key[36:38], "big"))

def flow_keys(b: PacketBatch) -> tuple[np.ndarray, list[bytes]]:
    """(lo_first, keys) of each packet: whether its sender is the key's lo endpoint,
    and its flow key as bytes (see KEY_DTYPE)."""
    s8 = b.src.view(">u8")
    d8 = b.dst.view(">u8")
    sh, sl, dh, dl = s8[:, 0], s8[:, 1], d8[:, 0], d8[:, 1]
    # Orientation: the key starts with the smaller (address, port) endpoint.
    lo_first = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (b.sport <= b.dport))))
    keys = np.empty(len(b), dtype=KEY_DTYPE)
    keys["p"] = b.proto
    keys["f"] = b.fam
    src = b.src.view("V16")[:, 0]
    dst = b.dst.view("V16")[:, 0]
    keys["a"] = np.where(lo_first, src, dst)
    keys["ap"] = np.where(lo_first, b.sport, b.dport)
    keys["b"] = np.where(lo_first, dst, src)
    keys["bp"] = np.where(lo_first, b.dport, b.sport)
    keys["o"] = 0 if b.obs is None else b.obs
    return lo_first, keys.view(f"V{KEY_DTYPE.itemsize}").tolist()
