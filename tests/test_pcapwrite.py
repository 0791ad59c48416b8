"""Tests for netmon.ingest.pcapwrite: exact header bytes, then tshark and capinfos reading."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapwrite import (
    PCAPNG_BYTE_ORDER_MAGIC,
    PcapWriter,
    pcap_header,
    pcap_record,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    pcapng_spb,
)
from netmon.testing.frames import ETHERTYPE_IPV4, ethernet, ipv4, tcp, udp

needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None or shutil.which("capinfos") is None,
    reason="tshark/capinfos not installed (apt-get install tshark) - round-trip checks skipped",
)

TS = 1_700_000_000.123456
FRAMES = [
    ethernet(ipv4("10.1.1.1", "10.2.2.2", 6, tcp(40000, 443, flags=0x02)), ETHERTYPE_IPV4),
    ethernet(ipv4("10.3.3.3", "10.4.4.4", 17, udp(5000, 6000, b"x" * 33)), ETHERTYPE_IPV4),
]
_FIELDS = ("ip.src", "ip.dst", "tcp.srcport", "udp.srcport", "frame.len")
#: What tshark should print for FRAMES with _FIELDS.
EXPECTED = [
    ["10.1.1.1", "10.2.2.2", "40000", "", "54"],
    ["10.3.3.3", "10.4.4.4", "", "5000", "75"],
]


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    """Run tshark on ``path`` and return one list of field values per frame."""
    args = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for name in fields:
        args += ["-e", name]
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # tshark reports damaged or cut-short files on stderr but may still exit 0.
    assert "appears to" not in done.stderr and "cut short" not in done.stderr, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def _capinfos_count(path: Path) -> int:
    args = ["capinfos", "-c", "-M", str(path)]
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("Number of packets"))
    return int(line.split(":")[1])


def _blocks(data: bytes, order: str = "<") -> list[tuple[int, bytes]]:
    """Walk pcapng blocks, checking both length fields and alignment on the way."""
    out = []
    offset = 0
    while offset < len(data):
        block_type, total = struct.unpack_from(order + "II", data, offset)
        assert total % 4 == 0 and total >= 12
        (trailer,) = struct.unpack_from(order + "I", data, offset + total - 4)
        assert trailer == total
        out.append((block_type, data[offset + 8 : offset + total - 4]))
        offset += total
    assert offset == len(data)
    return out


# --- classic pcap bytes ---------------------------------------------------------------


def test_pcap_header_layout() -> None:
    header = pcap_header(LINKTYPE_ETHERNET)
    assert header[:4] == bytes.fromhex("d4c3b2a1")
    assert struct.unpack("<IHHiIII", header) == (0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    ns_be = pcap_header(113, nanosecond=True, big_endian=True, snaplen=65535)
    assert struct.unpack(">IHHiIII", ns_be) == (0xA1B23C4D, 2, 4, 0, 0, 65535, 113)
    assert ns_be[:4] == bytes.fromhex("a1b23c4d")


@pytest.mark.parametrize(
    ("ts", "nanosecond", "expected"),
    [
        (1.000001, False, (1, 1)),
        (TS, False, (1_700_000_000, 123_456)),
        (0.9999996, False, (1, 0)),  # rounds up into the next second, not to 1000000
        (12.000000001, True, (12, 1)),
        (1.5, True, (1, 500_000_000)),
        (0.0, False, (0, 0)),
    ],
)
def test_pcap_record_splits_timestamp_exactly(
    ts: float, nanosecond: bool, expected: tuple[int, int]
) -> None:
    record = pcap_record(ts, b"abc", nanosecond=nanosecond)
    assert struct.unpack_from("<II", record) == expected
    assert record[16:] == b"abc"


def test_pcap_record_lengths() -> None:
    assert struct.unpack_from("<4I", pcap_record(1.0, b"x" * 10))[2:] == (10, 10)
    truncated = pcap_record(1.0, b"x" * 10, wirelen=1500, big_endian=True)
    assert struct.unpack_from(">4I", truncated) == (1, 0, 10, 1500)


def test_pcap_writer_matches_functions() -> None:
    buf = io.BytesIO()
    writer = PcapWriter(buf, LINKTYPE_ETHERNET, nanosecond=True)
    writer.write(TS, FRAMES[0])
    writer.write(TS + 1, FRAMES[1], wirelen=200)
    writer.flush()
    assert writer.count == 2
    assert buf.getvalue() == (
        pcap_header(LINKTYPE_ETHERNET, nanosecond=True)
        + pcap_record(TS, FRAMES[0], nanosecond=True)
        + pcap_record(TS + 1, FRAMES[1], nanosecond=True, wirelen=200)
    )


def test_pcap_writer_is_fast() -> None:
    # 1 M records must take a few seconds; 100 k here with a generous bound.
    buf = io.BytesIO()
    writer = PcapWriter(buf, LINKTYPE_ETHERNET)
    frame = bytes(100)
    started = time.perf_counter()
    for i in range(100_000):
        writer.write(TS + i * 1e-6, frame)
    assert time.perf_counter() - started < 2.0
    assert len(buf.getvalue()) == 24 + 100_000 * 116


# --- pcapng bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_shb(big_endian: bool) -> None:
    order = ">" if big_endian else "<"
    ((block_type, body),) = _blocks(pcapng_shb(big_endian), order)
    assert block_type == 0x0A0D0D0A
    assert struct.unpack(order + "IHHq", body) == (PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)


def test_pcapng_idb_options() -> None:
    ((_, plain),) = _blocks(pcapng_idb(LINKTYPE_ETHERNET, snaplen=1000))
    assert plain == struct.pack("<HHI", 1, 0, 1000)
    ((block_type, ns),) = _blocks(pcapng_idb(228, tsresol_exp=9))
    assert block_type == 1
    # if_tsresol (code 9, length 1, value 9, 3 padding bytes), then opt_endofopt.
    assert ns[8:] == struct.pack("<HHB3xHH", 9, 1, 9, 0, 0)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 61])
def test_pcapng_epb_pads_frame(size: int) -> None:
    frame = bytes(range(size))
    ((block_type, body),) = _blocks(pcapng_epb(3, TS, frame, wirelen=size + 7))
    assert block_type == 6
    iface, high, low, caplen, wirelen = struct.unpack_from("<5I", body)
    assert (iface, caplen, wirelen) == (3, size, size + 7)
    assert (high << 32) | low == 1_700_000_000_123_456
    assert body[20 : 20 + size] == frame
    assert set(body[20 + size :]) <= {0} and len(body) % 4 == 0


def test_pcapng_epb_nanosecond_ticks() -> None:
    ((_, body),) = _blocks(pcapng_epb(0, 12.000000001, b"", tsresol_exp=9, big_endian=True), ">")
    high, low = struct.unpack_from(">II", body, 4)
    assert (high << 32) | low == 12_000_000_001


def test_pcapng_spb() -> None:
    ((block_type, body),) = _blocks(pcapng_spb(b"abcde"))
    assert block_type == 3
    assert body == struct.pack("<I", 5) + b"abcde\0\0\0"


# --- real readers ---------------------------------------------------------------------


def _pcap_bytes(nanosecond: bool, big_endian: bool) -> bytes:
    buf = io.BytesIO()
    writer = PcapWriter(buf, LINKTYPE_ETHERNET, nanosecond=nanosecond, big_endian=big_endian)
    for i, frame in enumerate(FRAMES):
        writer.write(TS + i, frame)
    return buf.getvalue()


def _pcapng_bytes(tsresol_exp: int | None, big_endian: bool) -> bytes:
    exp = 6 if tsresol_exp is None else tsresol_exp
    return (
        pcapng_shb(big_endian)
        + pcapng_idb(LINKTYPE_ETHERNET, tsresol_exp=tsresol_exp, big_endian=big_endian)
        + b"".join(
            pcapng_epb(0, TS + i, frame, tsresol_exp=exp, big_endian=big_endian)
            for i, frame in enumerate(FRAMES)
        )
    )


@needs_tshark
@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param(name, data, id=name)
        for name, data in [
            ("us.pcap", _pcap_bytes(False, False)),
            ("ns.pcap", _pcap_bytes(True, False)),
            ("be-ns.pcap", _pcap_bytes(True, True)),
            ("default.pcapng", _pcapng_bytes(None, False)),
            ("ns.pcapng", _pcapng_bytes(9, False)),
            ("be-us.pcapng", _pcapng_bytes(6, True)),
        ]
    ],
)
def test_tshark_reads_what_we_wrote(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    rows = _tshark(path, *_FIELDS, "frame.time_epoch")
    assert [row[:5] for row in rows] == EXPECTED
    # Both timestamps survive exactly (microsecond part of TS, whole-second step).
    assert [row[5] for row in rows] == ["1700000000.123456000", "1700000001.123456000"]
    assert _capinfos_count(path) == len(FRAMES)


@needs_tshark
def test_tshark_reads_truncated_frames_and_spb(tmp_path: Path) -> None:
    frame = FRAMES[1]
    pcap = tmp_path / "truncated.pcap"
    pcap.write_bytes(
        pcap_header(LINKTYPE_ETHERNET, snaplen=40) + pcap_record(TS, frame[:40], wirelen=75)
    )
    assert _tshark(pcap, "frame.len", "frame.cap_len", "ip.src") == [["75", "40", "10.3.3.3"]]
    # SPBs carry no timestamp; IDB snaplen 0 means the whole frame was captured.
    spb = tmp_path / "spb.pcapng"
    spb.write_bytes(
        pcapng_shb() + pcapng_idb(LINKTYPE_ETHERNET) + b"".join(pcapng_spb(f) for f in FRAMES)
    )
    assert [row[:5] for row in _tshark(spb, *_FIELDS)] == EXPECTED
