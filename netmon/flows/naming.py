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
  once, its Initials use keys the client's reader cannot open);
- an HTTP method and a space, TCP: the first request (Host, :mod:`netmon.names.http`);
- ``SSH-``, TCP: each side's banner (software, :mod:`netmon.names.ssh`);
- TCP to or from port 53: DNS messages (:class:`netmon.names.dns.DnsStream`).

DNS over UDP (ports 53, 5353 mDNS, 5355 LLMNR) is not a first-bytes question: every
response (QR bit set) is parsed, at most :data:`DNS_PER_BATCH` a batch, into the
:class:`netmon.names.cache.NameCache`; a flow that starts without a name of its own
gets the cached name of its responder's address (``name_source`` dns or mdns), and a
name read from the flow itself (SNI, QUIC, Host) replaces it.

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
from netmon.names.cache import NameCache
from netmon.names.dns import DnsStream, parse_dns
from netmon.names.http import HttpRequestParser
from netmon.names.ja import ja3, ja4
from netmon.names.quic import QUIC_V1, QUIC_V2, QuicHelloReader
from netmon.names.ssh import SshBannerParser
from netmon.names.tls import DONE as R_DONE
from netmon.names.tls import READING as R_READING
from netmon.names.tls import ClientHello, ClientHelloReader

#: Payload bytes per flow direction a reader is fed at most.
HEAD_BYTES = 16384
#: Readers alive at once (each holds at most ~32 KB; most hold a few hundred bytes).
MAX_READERS = 4096
#: DNS responses over UDP parsed per batch at most (a flood costs no more).
DNS_PER_BATCH = 4096
DNS_PORTS = (53, 5353, 5355)
#: Signature codes (what a direction's first payload bytes look like).
SIG_NONE, SIG_TLS, SIG_QUIC, SIG_HTTP, SIG_SSH, SIG_DNS_TCP = 0, 1, 2, 3, 4, 5
_READERS = {SIG_TLS: ClientHelloReader, SIG_QUIC: QuicHelloReader,
            SIG_HTTP: HttpRequestParser, SIG_SSH: SshBannerParser, SIG_DNS_TCP: DnsStream}
_K = 6  # first bytes gathered per row
_AR = np.arange(_K)
_METHODS = tuple(int.from_bytes(m, "big") for m in (
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC"))
_SSH = int.from_bytes(b"SSH-", "big")
_NO_ANSWERS: tuple[list, list, list] = ([], [], [])
#: Name sources a flow's own bytes give (an HTTP Host does not replace them).
_OWN_NAMES = (SOURCE_CODE["sni"], SOURCE_CODE["quic"])


def signatures(first: np.ndarray, length: np.ndarray, proto: np.ndarray,
               dns53: np.ndarray) -> np.ndarray:
    """Signature code per row from its first :data:`_K` payload bytes (n x _K, int64;
    bytes past ``length`` are garbage and never decide a match); ``dns53``: the row
    is to or from port 53."""
    b0, b1, b2, b5 = first[:, 0], first[:, 1], first[:, 2], first[:, 5]
    tcp, udp = proto == 6, proto == 17
    word = (b0 << 24) | (b1 << 16) | (b2 << 8) | first[:, 3]
    http = tcp & (length >= 4) & np.logical_or.reduce([word == m for m in _METHODS])
    ssh = tcp & (length >= 4) & (word == _SSH)
    # A first segment shorter than the record header (rare, but legal) is judged on
    # the bytes it has; the reader then decides on the rest.
    tls = tcp & (b0 == 0x16) & ((length < 2) | (b1 == 3)) & ((length < 3) | (b2 <= 4)) \
        & ((length < _K) | (b5 == 1))
    version = (b1 << 24) | (b2 << 16) | (first[:, 3] << 8) | first[:, 4]
    quic = udp & (length >= 1200) & ((b0 & 0xC0) == 0xC0) & ((version == QUIC_V1)
                                                              | (version == QUIC_V2))
    return np.select([tls, quic, http, ssh, tcp & dns53],
                     [SIG_TLS, SIG_QUIC, SIG_HTTP, SIG_SSH, SIG_DNS_TCP], SIG_NONE)


class FlowNamer:
    """Reads names from the first bytes of each flow of ``table`` (see module doc)."""

    def __init__(self, table: FlowTable, cache: NameCache | None = None) -> None:
        self.table = table
        self.cols: NameColumns = table.names
        #: Address -> name from the DNS answers seen (bounded, TTL-aware).
        self.cache = cache if cache is not None else NameCache()
        #: slot * 2 + direction -> (flow id, signature, reader).
        self._readers: dict[int, tuple[int, int, object]] = {}
        self._ssh: dict[int, tuple[int, str, str]] = {}  # slot -> (flow id, client, server)
        #: What happened: rows gated, rows parsed, names found, readers refused...
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ hot path
    def observe(self, b: PacketBatch, slots: np.ndarray, lo_first: np.ndarray,
                seq: np.ndarray) -> None:
        """Look at a counted batch (``slots``/``lo_first``/``seq`` as add_batch returned)."""
        if b.raw_off is None or not len(b):
            return
        nc = self.cols
        d = (~lo_first).astype(np.intp)  # 0: lo -> hi
        st = nc.state[slots, d]
        usable = (b.raw_chunk >= 0) & (b.flags < TUNNEL)
        udp = b.proto == 17
        sp, dp = b.sport, b.dport
        # Plain compares: np.isin sorts, and this runs over every packet.
        dns = udp & usable & ((sp == 53) | (dp == 53) | (sp == 5353) | (dp == 5353)
                              | (sp == 5355) | (dp == 5355))
        want = (st != DONE) & ((b.proto == 6) | udp) & usable
        answers = _NO_ANSWERS
        if want.any() or dns.any():
            answers = self._gate(b, slots, d, st, np.flatnonzero(want | dns), dns)
        new = np.flatnonzero(seq == 0)
        # DNS answers and new flows in packet order: a flow gets the name its
        # responder had when it started, not one a later answer of this batch gave.
        at = 0
        for r, o, n in zip(*answers, strict=True):
            upto = int(np.searchsorted(new, r))
            if upto > at:
                self._from_cache(b, slots, new[at:upto], lo_first)
                at = upto
            self._dns(b, int(slots[r]), r, o, n)
        if at < len(new):
            self._from_cache(b, slots, new[at:], lo_first)

    def _gate(self, b: PacketBatch, slots: np.ndarray, d: np.ndarray, st: np.ndarray,
              rows: np.ndarray, dns: np.ndarray) -> tuple[list, list, list]:
        """Decide the rows that may carry names; parse those that do. Returns the DNS
        responses over UDP (rows, payload offsets, lengths) for the caller to add."""
        nc = self.cols
        off, length = self._payload_spans(b, rows)
        has = length > 0
        rows, off, length = rows[has], off[has], length[has]
        if not len(rows):
            return _NO_ANSWERS
        first = self._first_bytes(b, rows, off)
        udp_dns = dns[rows] & (b.proto[rows] == 17)
        responses = np.flatnonzero(udp_dns & (length >= 12) & ((first[:, 2] & 0x80) != 0))
        responses = responses[:DNS_PER_BATCH]
        answers = (rows[responses].tolist(), off[responses].tolist(),
                   length[responses].tolist())
        # UDP DNS rows are done with; the rest is decided per direction.
        keep = np.flatnonzero(~udp_dns & (st[rows] != DONE))
        rows, off, length, first = rows[keep], off[keep], length[keep], first[keep]
        if not len(rows):
            return answers
        key = slots[rows] * 2 + d[rows]
        # The first payload row of each direction decides; later rows of the same
        # direction in this batch follow it (continuations of a reader).
        _, first_at, inv = np.unique(key, return_index=True, return_inverse=True)
        dns53 = (b.sport[rows] == 53) | (b.dport[rows] == 53)
        sig = signatures(first, length, b.proto[rows], dns53)
        deciding = st[rows][first_at]
        go = (deciding == READING) | (sig[first_at] != SIG_NONE)
        done = first_at[~go]
        nc.state[slots[rows[done]], d[rows[done]]] = DONE
        self.stats["gated"] += len(rows)
        pick = np.flatnonzero(go[inv.reshape(-1)])
        if len(pick):
            self._parse(b, rows[pick], key[pick], off[pick], length[pick], sig[pick])
        return answers

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
        if len(b.bufs) == 1:  # the common case: one decoder buffer
            return np.frombuffer(b.bufs[0], dtype=np.uint8).take(
                off[:, None] + _AR, mode="clip").astype(np.int64)
        out = np.zeros((len(rows), _K), dtype=np.int64)
        chunk = b.raw_chunk[rows]
        for c in np.flatnonzero(np.bincount(chunk, minlength=len(b.bufs))).tolist():
            at = np.flatnonzero(chunk == c)
            buf = np.frombuffer(b.bufs[c], dtype=np.uint8)
            out[at] = buf.take(off[at, None] + _AR, mode="clip")
        return out

    # ------------------------------------------------------------------ parsers
    def _parse(self, b: PacketBatch, rows: np.ndarray, keys: np.ndarray, off: np.ndarray,
               length: np.ndarray, sig: np.ndarray) -> None:
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
                held = readers[k] = (fid, s, _READERS[s]())
                nc.state[slot, d] = READING
                if s == SIG_QUIC:
                    nc.state[slot, 1 - d] = DONE  # the server's Initials: not for us
            kind, reader = held[1], held[2]
            seen = int(nc.seen[slot, d])
            take = min(n, HEAD_BYTES - seen)
            nc.seen[slot, d] = seen + take
            self.stats["parsed"] += 1
            finished = self._feed(slot, d, kind, reader, b.bufs[int(chunk[r])][o:o + take],
                                  float(b.ts[r]))
            if finished or seen + take >= HEAD_BYTES:
                nc.state[slot, d] = DONE
                del readers[k]

    def _feed(self, slot: int, d: int, kind: int, reader, data: bytes, ts: float) -> bool:
        """Give a reader its next bytes and keep what it found; True when it is done."""
        nc = self.cols
        if kind in (SIG_TLS, SIG_QUIC):
            hello = reader.feed(data)
            if hello is not None:
                self._named_by_hello(slot, hello, kind == SIG_QUIC)
            if reader.state != R_READING and reader.state != R_DONE:
                self.stats["unread"] += 1
            return reader.state != R_READING
        if kind == SIG_HTTP:
            req = reader.feed(data)
            if req is not None:
                self.stats["http"] += 1
                if req.host and nc.source[slot] not in _OWN_NAMES:
                    nc.name[slot] = nc.intern(req.host)
                    nc.source[slot] = SOURCE_CODE["http"]
                nc.app[slot] = nc.intern(req.version.lower() or "http/0.9")
            return reader.done
        if kind == SIG_SSH:
            banner = reader.feed(data)
            if banner is not None:
                self.stats["ssh"] += 1
                self._ssh_software(slot, d, banner.software)
            return reader.done
        for msg in reader.feed(data):  # DNS over TCP
            self.stats["dns"] += 1
            self.cache.add_message(msg, ts)
            nc.app[slot] = nc.intern("dns")
        return False

    def _named_by_hello(self, slot: int, hello: ClientHello, quic: bool) -> None:
        nc = self.cols
        self.stats["quic" if quic else "sni"] += 1
        if hello.server_name:  # replaces a DNS or Host name: the client said it itself
            nc.name[slot] = nc.intern(hello.server_name)
            nc.source[slot] = SOURCE_CODE["quic" if quic else "sni"]
        app = hello.alpn[0] if hello.alpn else ("quic" if quic else "tls")
        nc.app[slot] = nc.intern(app)
        nc.ja4[slot] = nc.intern(ja4(hello, quic))
        nc.ja3[slot] = nc.intern(ja3(hello))

    def _ssh_software(self, slot: int, d: int, software: str) -> None:
        nc = self.cols
        fid = int(self.table.flow_id[slot])
        held = self._ssh.get(slot)
        _, client, server = held if held is not None and held[0] == fid else (fid, "", "")
        # Direction 0 is lo -> hi: the client's when the initiator is lo.
        if (d == 0) == bool(self.table.a_is_lo[slot]):
            client = software
        else:
            server = software
        if client and server:
            self._ssh.pop(slot, None)
        else:
            self._ssh[slot] = (fid, client, server)
        nc.software[slot] = nc.intern(f"{client} -> {server}" if client and server
                                      else client or server)
        nc.app[slot] = nc.intern("ssh")

    def _dns(self, b: PacketBatch, slot: int, r: int, o: int, n: int) -> None:
        """One DNS response over UDP into the cache; its flow is "dns" / "mdns"."""
        mdns = b.sport[r] == 5353 or b.dport[r] == 5353
        msg = parse_dns(b.bufs[int(b.raw_chunk[r])][o:o + n], mdns=mdns)
        if msg is not None:
            self.stats["dns"] += 1
            self.cache.add_message(msg, float(b.ts[r]))
            self.cols.app[slot] = self.cols.intern("mdns" if mdns else "dns")

    def _from_cache(self, b: PacketBatch, slots: np.ndarray, rows: np.ndarray,
                    lo_first: np.ndarray) -> None:
        """The new flows starting at ``rows`` without a name: their responder's name
        from the DNS cache."""
        if not len(self.cache):
            return
        nc = self.cols
        slots, lo_first = slots[rows], lo_first[rows]
        unnamed = nc.name[slots] == 0
        if not unnamed.any():
            return
        slots, rows, lo_first = slots[unnamed], rows[unnamed], lo_first[unnamed]
        # The first packet's sender is the initiator unless it was a SYN-ACK.
        to_b = lo_first == self.table.a_is_lo[slots]
        addrs = np.where(to_b[:, None], b.dst[rows], b.src[rows])
        hits = self.cache.lookup_many(addrs, b.fam[rows], float(b.ts[rows].max()))
        for slot, entry in zip(slots.tolist(), hits.tolist(), strict=True):
            if entry is not None:
                nc.name[slot] = nc.intern(entry.name)
                nc.source[slot] = SOURCE_CODE.get(entry.source, SOURCE_CODE["dns"])
                self.stats["from_dns"] += 1

    # ------------------------------------------------------------------ upkeep
    def tick(self, now: float) -> None:
        """Drop the readers of flows that ended (their slot is free or reused) and the
        DNS answers expired at ``now`` (capture time)."""
        self.cache.expire(now)
        t = self.table
        stale = [k for k, (fid, _, _) in self._readers.items()
                 if not t.live[k >> 1] or t.flow_id[k >> 1] != fid]
        for k in stale:
            del self._readers[k]
        self.stats["dropped"] += len(stale)
        for slot in [s for s, (fid, _, _) in self._ssh.items()
                     if not t.live[s] or t.flow_id[s] != fid]:
            del self._ssh[slot]

    @property
    def readers(self) -> int:
        """Readers alive now."""
        return len(self._readers)
