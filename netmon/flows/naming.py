"""Names from the flows' first bytes, in the hot path: cheap numpy gates, then parsers.

Reactor thread only: :class:`FlowNamer` belongs to the engine, which calls
:meth:`FlowNamer.observe` with every batch it counts (after ``FlowTable.add_batch``)
and :meth:`FlowNamer.tick` once a tick. Results go to the table's name columns
(:class:`netmon.flows.namecols.NameColumns`).

Why it is cheap: per flow and direction only the first payload-carrying packet is
looked at by numpy (its first bytes against the signatures below); a direction whose
first payload matches nothing is DONE and never looked at again, so on traffic without
names the per-packet cost is a few vectorised compares. Only a direction that starts
with a signature gets a reader (Python), fed its payload in arrival order until the
reader has its answer, gives up, or :data:`HEAD_BYTES` have gone by:

- ``16 03 0x .. .. 01``, TCP: a TLS ClientHello (:class:`netmon.names.tls.ClientHelloReader`:
  SNI, ALPN, JA3, JA4);
- UDP datagrams of 1200+ bytes starting with a QUIC v1/v2 long header: the client's
  Initials (:class:`netmon.names.quic.QuicHelloReader`; the other direction is DONE at
  once, its Initials use keys the client's reader cannot open).

Readers are bounded: at most :data:`MAX_READERS` alive (beyond that a new candidate is
DONE unread and counted in ``stats["readers_full"]``), each bounded by its parser, and
dropped when their flow ends (their flow id no longer sits in its slot, checked at each
tick). Rows the fast path did not decode (``pay_off`` -1: VLAN, IPv6 extension headers,
NFLOG, pcapng files) have their payload found per frame (:mod:`netmon.ingest.payload`)
while their flow still wants bytes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from netmon.flows.namecols import DONE, READING, SOURCE_CODE, UNDECIDED, NameColumns
from netmon.flows.table import FlowTable
from netmon.ingest.batch import TUNNEL, PacketBatch
from netmon.ingest.payload import transport_payload
from netmon.names.ja import ja3, ja4
from netmon.names.quic import QUIC_V1, QUIC_V2, QuicHelloReader
from netmon.names.tls import DONE as R_DONE
from netmon.names.tls import READING as R_READING
from netmon.names.tls import ClientHello, ClientHelloReader

#: Payload bytes per flow direction a reader is fed at most.
HEAD_BYTES = 16384
#: Readers alive at once (each holds at most ~32 KB; most hold a few hundred bytes).
MAX_READERS = 4096
#: Signature codes (what a direction's first payload bytes look like).
SIG_NONE, SIG_TLS, SIG_QUIC = 0, 1, 2
_K = 6  # first bytes gathered per row
_AR = np.arange(_K)
_QUIC_VERSIONS = np.array([QUIC_V1, QUIC_V2], dtype=np.int64)


def signatures(first: np.ndarray, length: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """Signature code per row from its first :data:`_K` payload bytes (n x _K, int64;
    bytes past ``length`` are garbage and never decide a match)."""
    b0, b1, b2, b5 = first[:, 0], first[:, 1], first[:, 2], first[:, 5]
    tcp, udp = proto == 6, proto == 17
    # A first segment shorter than the record header (rare, but legal) is judged on
    # the bytes it has; the reader then decides on the rest.
    tls = tcp & (b0 == 0x16) & ((length < 2) | (b1 == 3)) & ((length < 3) | (b2 <= 4)) \
        & ((length < _K) | (b5 == 1))
    version = (b1 << 24) | (b2 << 16) | (first[:, 3] << 8) | first[:, 4]
    quic = udp & (length >= 1200) & ((b0 & 0xC0) == 0xC0) & np.isin(version, _QUIC_VERSIONS)
    return np.select([tls, quic], [SIG_TLS, SIG_QUIC], SIG_NONE)


class FlowNamer:
    """Reads names from the first bytes of each flow of ``table`` (see module doc)."""

    def __init__(self, table: FlowTable) -> None:
        self.table = table
        self.cols: NameColumns = table.names
        #: slot * 2 + direction -> (flow id, reader).
        self._readers: dict[int, tuple[int, ClientHelloReader | QuicHelloReader]] = {}
        #: What happened: rows gated, rows parsed, names found, readers refused...
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ hot path
    def observe(self, b: PacketBatch, slots: np.ndarray, lo_first: np.ndarray) -> None:
        """Look at a counted batch (``slots``/``lo_first`` as add_batch returned)."""
        if b.raw_off is None or not len(b):
            return
        nc = self.cols
        d = (~lo_first).astype(np.intp)  # 0: lo -> hi
        st = nc.state[slots, d]
        want = (st != DONE) & ((b.proto == 6) | (b.proto == 17)) & (b.raw_chunk >= 0) \
            & (b.flags < TUNNEL)
        if not want.any():
            return
        rows = np.flatnonzero(want)
        off, length = self._payload_spans(b, rows)
        has = length > 0
        rows, off, length = rows[has], off[has], length[has]
        if not len(rows):
            return
        key = slots[rows] * 2 + d[rows]
        # The first payload row of each direction decides; later rows of the same
        # direction in this batch follow it (continuations of a reader).
        _, first_at, inv = np.unique(key, return_index=True, return_inverse=True)
        first = self._first_bytes(b, rows, off)
        sig = signatures(first, length, b.proto[rows])
        deciding = st[rows][first_at]
        go = (deciding == READING) | (sig[first_at] != SIG_NONE)
        done = first_at[~go]
        nc.state[slots[rows[done]], d[rows[done]]] = DONE
        self.stats["gated"] += len(rows)
        pick = np.flatnonzero(go[inv.reshape(-1)])
        if len(pick):
            self._parse(b, slots, rows[pick], key[pick], off[pick], length[pick], sig[pick])

    def _payload_spans(self, b: PacketBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(payload start in its buffer, payload length) of each row in ``rows``; rows
        the fast path did not decode are walked per frame (-1 / 0 when not found)."""
        raw_off = b.raw_off[rows]
        if b.pay_off is None:
            po = np.full(len(rows), -1, dtype=np.int64)
            pl = np.zeros(len(rows), dtype=np.int64)
        else:
            po = b.pay_off[rows].astype(np.int64)
            pl = b.pay_len[rows].astype(np.int64)
        off = np.where(po >= 0, raw_off + po, -1)
        slow = np.flatnonzero(po < 0)
        if len(slow):
            self.stats["per_frame"] += len(slow)
            chunk, rlen = b.raw_chunk[rows], b.raw_len[rows]
            for j in slow.tolist():
                c = int(chunk[j])
                start = int(raw_off[j])
                r = int(rows[j])
                span = transport_payload(b.linktypes[c], b.bufs[c], start, start + int(rlen[j]))
                if span is not None and span[0] == b.proto[r] and span[1] == b.sport[r] \
                        and span[2] == b.dport[r]:
                    off[j], pl[j] = span[3], span[4]
        return off, np.maximum(pl, 0)

    @staticmethod
    def _first_bytes(b: PacketBatch, rows: np.ndarray, off: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), _K), dtype=np.int64)
        chunk = b.raw_chunk[rows]
        for c in np.unique(chunk).tolist():
            at = np.flatnonzero(chunk == c)
            buf = np.frombuffer(b.bufs[c], dtype=np.uint8)
            out[at] = buf.take(off[at, None] + _AR, mode="clip")
        return out

    # ------------------------------------------------------------------ parsers
    def _parse(self, b: PacketBatch, slots: np.ndarray, rows: np.ndarray, keys: np.ndarray,
               off: np.ndarray, length: np.ndarray, sig: np.ndarray) -> None:
        nc = self.cols
        fids = self.table.flow_id
        readers = self._readers
        chunk = b.raw_chunk
        for r, k, o, n, s in zip(rows.tolist(), keys.tolist(), off.tolist(),
                                 length.tolist(), sig.tolist(), strict=True):
            slot, d = k >> 1, k & 1
            if nc.state[slot, d] == DONE:  # decided by an earlier row of this batch
                continue
            fid = int(fids[slot])
            held = readers.get(k)
            if held is not None and held[0] != fid:  # a reader of a flow since ended
                del readers[k]
                held = None
            if held is None:
                if nc.state[slot, d] != UNDECIDED or s == SIG_NONE:
                    nc.state[slot, d] = DONE
                    continue
                if len(readers) >= MAX_READERS:
                    self.stats["readers_full"] += 1
                    nc.state[slot, d] = DONE
                    continue
                reader = ClientHelloReader() if s == SIG_TLS else QuicHelloReader()
                held = readers[k] = (fid, reader)
                nc.state[slot, d] = READING
                if s == SIG_QUIC:
                    nc.state[slot, 1 - d] = DONE  # the server's Initials: not for us
            reader = held[1]
            seen = int(nc.seen[slot, d])
            take = min(n, HEAD_BYTES - seen)
            nc.seen[slot, d] = seen + take
            data = b.bufs[int(chunk[r])][o:o + take]
            self.stats["parsed"] += 1
            hello = reader.feed(data)
            if hello is not None:
                self._named_by_hello(slot, hello, isinstance(reader, QuicHelloReader))
            if reader.state != R_READING or seen + take >= HEAD_BYTES:
                nc.state[slot, d] = DONE
                del readers[k]
                if reader.state != R_DONE:
                    self.stats["unread"] += 1

    def _named_by_hello(self, slot: int, hello: ClientHello, quic: bool) -> None:
        nc = self.cols
        self.stats["quic" if quic else "sni"] += 1
        if hello.server_name:
            nc.name[slot] = nc.intern(hello.server_name)
            nc.source[slot] = SOURCE_CODE["quic" if quic else "sni"]
        app = hello.alpn[0] if hello.alpn else ("quic" if quic else "tls")
        nc.app[slot] = nc.intern(app)
        nc.ja4[slot] = nc.intern(ja4(hello, quic))
        nc.ja3[slot] = nc.intern(ja3(hello))

    # ------------------------------------------------------------------ upkeep
    def tick(self) -> None:
        """Drop the readers of flows that ended (their slot is free or reused)."""
        t = self.table
        stale = [k for k, (fid, _) in self._readers.items()
                 if not t.live[k >> 1] or t.flow_id[k >> 1] != fid]
        for k in stale:
            del self._readers[k]
        self.stats["dropped"] += len(stale)

    @property
    def readers(self) -> int:
        """Readers alive now."""
        return len(self._readers)
