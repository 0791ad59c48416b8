"""Capture-file writers: classic pcap and pcapng blocks, built as ``bytes``.

Pure module (no textual, no twisted): whichever thread calls it does the work, which in
practice means tests, benchmarks and ``netmon.testing.synth`` building fixture captures. Nothing
here reads capture files; the decoder's readers live elsewhere.

Timestamps are ``float`` seconds since the epoch. They are turned into integer ticks
once, with ``round(ts * 10**exp)``, and split with integer ``divmod`` so a value like
``1.000001`` never becomes ``(0, 1000000)`` or drifts by a tick.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

#: Classic pcap magic numbers (microsecond and nanosecond timestamp variants).
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

#: pcapng block types and the section byte-order magic.
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

#: pcapng option codes used here.
_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9


def _order(big_endian: bool) -> str:
    return ">" if big_endian else "<"


def _split_ts(ts: float, exp: int) -> tuple[int, int]:
    """``ts`` seconds -> (whole seconds, fraction in 10**-exp units), exactly."""
    return divmod(round(ts * 10**exp), 10**exp)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


# --- classic pcap ---------------------------------------------------------------------


def pcap_header(
    linktype: int, *, nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144
) -> bytes:
    """The 24-byte pcap global header for ``linktype`` (a LINKTYPE_* number)."""
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    return struct.pack(_order(big_endian) + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(
    ts: float,
    frame: bytes,
    *,
    wirelen: int | None = None,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> bytes:
    """One pcap record (16-byte header + ``frame``); caplen is ``len(frame)``.

    ``wirelen`` is the original length on the wire; give it larger than ``len(frame)``
    to describe a frame truncated by the snap length.
    """
    sec, frac = _split_ts(ts, 9 if nanosecond else 6)
    caplen = len(frame)
    orig = caplen if wirelen is None else wirelen
    return struct.pack(_order(big_endian) + "IIII", sec, frac, caplen, orig) + frame


class PcapWriter:
    """Streams pcap records into a binary file object it does not own.

    The global header is written on construction. ``write`` is the hot path for
    synthetic captures of a million frames, so the record layout is a precompiled
    ``struct.Struct`` and the per-call work is one pack and two writes. The caller
    opens and closes the file (give it a buffered one).
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        linktype: int,
        *,
        nanosecond: bool = False,
        big_endian: bool = False,
        snaplen: int = 262144,
    ) -> None:
        self._file = fileobj
        self._write = fileobj.write
        self._pack = struct.Struct(_order(big_endian) + "IIII").pack
        self._scale = 10**9 if nanosecond else 10**6
        self.linktype = linktype
        """The LINKTYPE_* number written in the header."""
        self.count = 0
        """Records written so far."""
        fileobj.write(
            pcap_header(linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
        )

    def write(self, ts: float, frame: bytes, wirelen: int | None = None) -> None:
        """Append one record for ``frame`` captured at ``ts`` seconds."""
        sec, frac = divmod(round(ts * self._scale), self._scale)
        caplen = len(frame)
        self._write(self._pack(sec, frac, caplen, caplen if wirelen is None else wirelen))
        self._write(frame)
        self.count += 1

    def flush(self) -> None:
        """Flush the underlying file object."""
        self._file.flush()


# --- pcapng ---------------------------------------------------------------------------


def _block(block_type: int, body: bytes, big_endian: bool) -> bytes:
    """Frame ``body`` (already 32-bit aligned) as a pcapng block with both lengths."""
    total = len(body) + 12
    order = _order(big_endian)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def pcapng_shb(big_endian: bool = False) -> bytes:
    """A Section Header Block (version 1.0, unknown section length, no options)."""
    body = struct.pack(_order(big_endian) + "IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(PCAPNG_SHB, body, big_endian)


def pcapng_idb(
    linktype: int, *, tsresol_exp: int | None = None, snaplen: int = 0, big_endian: bool = False
) -> bytes:
    """An Interface Description Block; interfaces are numbered in the order written.

    ``tsresol_exp`` adds an ``if_tsresol`` option meaning ticks of 10**-exp seconds
    (9 for nanoseconds); without it readers assume the pcapng default, microseconds.
    ``snaplen`` 0 means "no limit".
    """
    order = _order(big_endian)
    body = struct.pack(order + "HHI", linktype, 0, snaplen)
    if tsresol_exp is not None:
        if not 0 <= tsresol_exp <= 127:
            raise ValueError(f"tsresol_exp must be 0..127, got {tsresol_exp}")
        # High bit clear = the value is a power of ten, not of two.
        body += struct.pack(order + "HHB3x", _OPT_IF_TSRESOL, 1, tsresol_exp)
        body += struct.pack(order + "HH", _OPT_ENDOFOPT, 0)
    return _block(PCAPNG_IDB, body, big_endian)


def pcapng_epb(
    iface_id: int,
    ts: float,
    frame: bytes,
    *,
    wirelen: int | None = None,
    tsresol_exp: int = 6,
    big_endian: bool = False,
) -> bytes:
    """An Enhanced Packet Block; ``tsresol_exp`` must match the interface's IDB."""
    ticks = round(ts * 10**tsresol_exp)
    caplen = len(frame)
    orig = caplen if wirelen is None else wirelen
    head = struct.pack(
        _order(big_endian) + "IIIII", iface_id, ticks >> 32, ticks & 0xFFFFFFFF, caplen, orig
    )
    return _block(PCAPNG_EPB, head + _pad4(frame), big_endian)


def pcapng_spb(frame: bytes, *, wirelen: int | None = None, big_endian: bool = False) -> bytes:
    """A Simple Packet Block (interface 0, no timestamp).

    An SPB has no captured-length field: readers take min(wirelen, snaplen of IDB 0),
    so a truncated frame (``wirelen > len(frame)``) needs IDB 0's snaplen set to the
    captured length, or the padding would be read as packet data.
    """
    orig = len(frame) if wirelen is None else wirelen
    body = struct.pack(_order(big_endian) + "I", orig) + _pad4(frame)
    return _block(PCAPNG_SPB, body, big_endian)
