"""pcapng blocks: the pcapng half of the stream decoder.

Pure code, no I/O and no threads of its own: :class:`PcapngReader` is a mixin of
:class:`netmon.ingest.pcapstream.PcapStreamDecoder` (whose buffer, counters and
per-frame ``_decode_frame`` it uses), so it runs on the thread that feeds that decoder
(the reactor thread in netmon). It reads Section Header, Interface Description,
Enhanced, obsolete and Simple Packet Blocks and skips the others; pcapng frames are
decoded one at a time (no fast path), with each emitted record's frame located for the
frame ring.
"""

from __future__ import annotations

import struct

import numpy as np

from netmon.ingest.batch import PacketBatch

PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM_LE = b"\x4d\x3c\x2b\x1a"
_PCAPNG_BOM_BE = b"\x1a\x2b\x3c\x4d"

MAX_BLOCK = 1 << 24  # 16 MiB for a pcapng block (options included)

#: Smallest total length of a pcapng block whose fixed fields are read (IDB, PB, SPB, EPB).
_NG_MIN_BLOCK = {1: 20, 2: 32, 3: 16, 6: 32}


class PcapngReader:
    """Decode the complete pcapng blocks in the decoder's buffer (mixed into
    PcapStreamDecoder; state: ``_ng_end``, the section's byte order, and ``_ifaces``,
    per interface (linktype, ticks per second, time offset, snaplen))."""

    def _feed_pcapng_batch(self) -> PacketBatch:
        buf = self._buf
        out: list[tuple] = []
        raw: list[tuple[int, int, int]] = []
        self._feed_pcapng(out, raw)
        if not out:
            return PacketBatch.empty()
        at = np.array(raw, dtype=np.int64)
        # One chunk per link type seen (the same buffer): interfaces may differ.
        linktypes, chunk = np.unique(at[:, 2], return_inverse=True)
        chunk = np.where(at[:, 0] < 0, -1, chunk.reshape(-1))  # released fragments
        return PacketBatch.from_records(out).with_raw(
            (buf,) * len(linktypes), tuple(linktypes.tolist()), chunk, at[:, 0], at[:, 1])

    def _feed_pcapng(self, out: list, raw: list | None = None) -> None:
        """Decode the complete blocks; with ``raw``, also note each emitted record's
        (data offset, captured length, link type)."""
        buf = self._buf
        n = len(buf)
        off = self._off
        decode = self._decode_frame
        while off + 12 <= n:
            btype_raw = buf[off:off + 4]
            if btype_raw == PCAPNG_SHB:
                if off + 12 > n:
                    break
                bom = buf[off + 8:off + 12]
                if bom == _PCAPNG_BOM_LE:
                    self._ng_end = "<"
                elif bom == _PCAPNG_BOM_BE:
                    self._ng_end = ">"
                else:
                    self.error = "corrupt pcapng: bad byte-order magic in section header"
                    break
                self._ifaces = []
            e = self._ng_end
            btype, blen = struct.unpack_from(e + "II", buf, off)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                self.error = (f"corrupt pcapng: impossible block length {blen} "
                              f"after {self.frames} packets")
                break
            if off + blen > n:
                break
            # Fix (tests/test_pcapstream.py): a block too short for its own fixed fields
            # made the reads below raise struct.error at the end of the data, or read the
            # next block's bytes. Such a file is corrupt (Wireshark stops there too).
            if blen < _NG_MIN_BLOCK.get(btype, 12):
                self.error = (f"corrupt pcapng: block type {btype} too short ({blen} bytes) "
                              f"after {self.frames} packets")
                break
            body = off + 8
            bend = off + blen - 4
            if btype == 6 or btype == 2:  # Enhanced Packet Block, obsolete Packet Block
                if btype == 6:
                    iface, hi, lo, caplen, wirelen = struct.unpack_from(e + "IIIII", buf, body)
                else:
                    iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(
                        e + "HHIIII", buf, body)
                self.frames += 1
                if iface >= len(self._ifaces) or body + 20 + caplen > bend:
                    self.skipped["bad-packet-block"] += 1
                else:
                    linktype, div, tsoff, _ = self._ifaces[iface]
                    ts = ((hi << 32) | lo) / div + tsoff
                    self.last_ts = ts
                    rec = decode(linktype, buf, body + 20, body + 20 + caplen, ts, wirelen)
                    if rec.__class__ is tuple:  # inline: the per-packet path
                        out.append(rec)
                        if raw is not None:
                            raw.append((body + 20, caplen, linktype))
                    elif rec is not None:
                        self._emit_list(rec, out, raw, body + 20, caplen, linktype)
            elif btype == 3:  # Simple Packet Block: no timestamp, interface 0
                (wirelen,) = struct.unpack_from(e + "I", buf, body)
                self.frames += 1
                if not self._ifaces:
                    self.skipped["bad-packet-block"] += 1
                else:
                    linktype, _, _, snap = self._ifaces[0]
                    caplen = min(wirelen, bend - body - 4, snap or MAX_BLOCK)
                    rec = decode(linktype, buf, body + 4, body + 4 + caplen, self.last_ts,
                                 wirelen)
                    if rec.__class__ is tuple:
                        out.append(rec)
                        if raw is not None:
                            raw.append((body + 4, caplen, linktype))
                    elif rec is not None:
                        self._emit_list(rec, out, raw, body + 4, caplen, linktype)
            elif btype == 1:  # Interface Description Block
                self._ifaces.append(self._read_idb(buf, body, bend, e))
                self.linktypes.append(self._ifaces[-1][0])
            off += blen
        self._off = off

    def _emit_list(self, recs: list, out: list, raw: list | None, at: int, caplen: int,
                   linktype: int) -> None:
        """Add the records of one frame (a tunnel's, or a first fragment with the
        fragments it released: those ``late`` ones have no bytes here)."""
        out.extend(recs)
        late, self.late = self.late, 0
        if raw is not None:
            raw.extend([(at, caplen, linktype)] * (len(recs) - late))
            raw.extend([(-1, -1, linktype)] * late)

    @staticmethod
    def _read_idb(buf: bytes, body: int, bend: int, e: str) -> tuple[int, int, float, int]:
        linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", buf, body)
        div = 1_000_000
        tsoff = 0.0
        p = body + 8
        while p + 4 <= bend:
            code, length = struct.unpack_from(e + "HH", buf, p)
            if code == 0:
                break
            v = p + 4
            if v + length > bend:  # fix: an option running past the block would raise
                break
            if code == 9 and length >= 1:  # if_tsresol
                r = buf[v]
                # Fix: an int divisor, so ticks / div is one correctly rounded division;
                # float(ticks) first lost up to 128 ns on ns-resolution timestamps.
                div = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
            elif code == 14 and length >= 8:  # if_tsoffset, seconds
                (tsoff,) = struct.unpack_from(e + "q", buf, v)
            p = v + ((length + 3) & ~3)
        return linktype, div, float(tsoff), snaplen
