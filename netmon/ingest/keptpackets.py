"""What a packet store answers: a flow's kept packets and its kept frames.

Pure module (numpy only), shared by the in-memory store
(:mod:`netmon.ingest.packetstore`) and the on-disk ring's index
(:mod:`netmon.ingest.diskindex`), whose answers have the same shape; the values are
immutable and cross threads as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tiers of a kept packet (``StorePackets.tier``).
TIER_FIRST, TIER_RECENT, TIER_DISK = 0, 1, 2
TIER_NAMES = ("first", "recent", "disk")


@dataclass(frozen=True, slots=True)
class StorePackets:
    """The kept packets of one flow, oldest first (numpy copies). ``tier`` says why
    each is kept (:data:`TIER_FIRST` or :data:`TIER_RECENT`); ``has_bytes`` whether its
    bytes are (a packet read while the decoder resynchronised has none)."""

    seq: np.ndarray
    ts: np.ndarray
    a2b: np.ndarray
    size: np.ndarray
    flags: np.ndarray
    proto: np.ndarray
    has_bytes: np.ndarray
    tier: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def newest(self) -> int:
        """The highest packet number kept (-1: none): the flow had at least newest + 1."""
        return int(self.seq[-1]) if len(self.seq) else -1


@dataclass(frozen=True, slots=True)
class RingFrame:
    """One kept frame: what a capture-file writer needs. ``data`` may be shorter than
    ``wirelen`` (snapped, or captured with a snap length)."""

    seq: int
    ts: float
    wirelen: int
    linktype: int
    data: bytes
