"""The protocol tree from tshark's PDML: fixed PDML text (ranges, data sources, hidden
fields, hostile and huge labels, caps) and real tshark on a shared capture."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from netmon.core.link import Dissection, DissectNode, tree_lines
from netmon.ingest.dissect import (
    LABEL_MAX,
    MAX_DEPTH,
    dissect_frames,
    parse_pdml,
)
from netmon.ingest.keptpackets import RingFrame
from tests.conftest import captures_dir

#: An Ethernet/IPv4/TCP frame whose payload does not hold the HTTP below (that came
#: from reassembled segments): 14 + 20 + 20 header bytes, then 6 payload bytes.
FRAME = bytes.fromhex(
    "00217" "0c056f0" "00260b310733" "0800"
    "4500002e" "e4584000" "39060560" "cdeada81" "ac10007a"
    "0050a36a" "468a0cc4" "0a4e74e5" "5018ffff" "00000000"
    "414243444546")

PDML = f"""<?xml version="1.0" encoding="utf-8"?>
<packet>
  <proto name="geninfo" pos="0" showname="General information" size="60">
    <field name="num" pos="0" show="7" showname="Number" value="7" size="60"/>
  </proto>
  <proto name="frame" showname="Frame 7: 60 bytes on wire" size="60" pos="0">
    <field name="frame.len" showname="Frame Length: 60 bytes" size="0" pos="0" show="60"/>
  </proto>
  <proto name="eth" showname="Ethernet II" size="14" pos="0">
    <field name="eth.dst" showname="Destination: 00:21:70:c0:56:f0" size="6" pos="0"
           show="00:21:70:c0:56:f0" value="002170c056f0">
      <field name="eth.dst_resolved" showname="hidden one" hide="yes" size="6" pos="0"
             value="002170c056f0"/>
      <field name="eth.dst.lg" showname=".... ..0. = LG bit" size="3" pos="0" show="0"
             value="0" unmaskedvalue="002170"/>
    </field>
    <field name="eth.type" showname="Type: IPv4 (0x0800)" size="2" pos="12" value="0800"/>
  </proto>
  <proto name="ip" showname="Internet Protocol Version 4" size="20" pos="14">
    <field name="ip.hdr_len" showname=".... 0101 = Header Length: 20 bytes (5)" size="1"
           pos="14" show="20" value="45"/>
    <field name="ip.ttl" showname="Time to Live: 57" size="1" pos="22" value="39"/>
    <field name="ip.src" showname="Source Address: 205.234.218.129" size="4" pos="26"
           show="205.234.218.129" value="cdeada81"/>
    <field name="ip.addr" showname="hidden" hide="yes" size="4" pos="26" value="cdeada81"/>
    <field name="ip.dst" showname="Destination Address: 172.16.0.122" size="4" pos="30"
           show="172.16.0.122" value="ac10007a"/>
  </proto>
  <proto name="tcp" showname="Transmission Control Protocol" size="20" pos="34">
    <field name="tcp.srcport" showname="Source Port: 80" size="2" pos="34" value="0050"/>
    <field name="" show="Timestamps" size="0" pos="34">
      <field name="tcp.time_delta" showname="Time delta: 0.1 s" size="0" pos="34"/>
    </field>
    <field name="tcp.payload" showname="TCP payload (6 bytes)" size="6" pos="54"
           value="414243444546"/>
  </proto>
  <proto name="fake-field-wrapper">
    <field name="tcp.segments" showname="2 Reassembled TCP Segments (66 bytes)" size="66"
           pos="0" show="" value="">
      <field name="tcp.segment" showname="Frame: 5, payload: 0-59" size="60" pos="0"
             show="5" value="{'47' * 60}"/>
    </field>
  </proto>
  <proto name="http" showname="Hypertext Transfer Protocol" size="18" pos="0">
    <field name="" show="GET / HTTP/1.1\\r\\n" size="16" pos="0"
           value="474554202f20485454502f312e310d0a">
      <field name="http.request.method" showname="Request Method: GET" size="3" pos="0"
             show="GET" value="474554"/>
      <field name="http.request.version" showname="Version: 1" size="1" pos="13"
             value="31"/>
    </field>
    <field name="" show="\\r\\n" size="2" pos="16" value="0d0a"/>
  </proto>
</packet>
""".encode()


def ranges(nodes: tuple[DissectNode, ...]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for n in nodes:
        out[n.label] = (n.start, n.length)
        out.update(ranges(n.children))
    return out


def test_layers_fields_and_their_bytes_in_the_frame() -> None:
    tree = parse_pdml(PDML, FRAME)
    assert [n.label for n in tree] == [
        "Frame 7: 60 bytes on wire", "Ethernet II", "Internet Protocol Version 4",
        "Transmission Control Protocol", "2 Reassembled TCP Segments (66 bytes)",
        "Hypertext Transfer Protocol"]
    r = ranges(tree)
    assert r["Frame 7: 60 bytes on wire"] == (0, 60)
    assert r["Frame Length: 60 bytes"] == (-1, 0)  # generated: no bytes
    assert r["Ethernet II"] == (0, 14)
    assert r["Destination: 00:21:70:c0:56:f0"] == (0, 6)
    assert r[".... ..0. = LG bit"] == (0, 3)  # bit field: unmaskedvalue compared
    assert r["Source Address: 205.234.218.129"] == (26, 4)
    assert r["Destination Address: 172.16.0.122"] == (30, 4)
    # one byte that matches could be chance: it follows its layer
    assert r[".... 0101 = Header Length: 20 bytes (5)"] == (14, 1)
    assert r["Time to Live: 57"] == (22, 1)
    assert r["TCP payload (6 bytes)"] == (54, 6)
    assert r["Timestamps"] == (-1, 0) and r["Time delta: 0.1 s"] == (-1, 0)
    # reassembled data: PDML's positions are in another buffer, not this frame
    assert r["2 Reassembled TCP Segments (66 bytes)"] == (-1, 0)
    assert r["Frame: 5, payload: 0-59"] == (-1, 0)
    assert r["Hypertext Transfer Protocol"] == (-1, 0)
    assert r["GET / HTTP/1.1\\r\\n"] == (-1, 0)
    assert r["Request Method: GET"] == (-1, 0)
    assert r["Version: 1"] == (-1, 0)  # a 1-byte value that differs
    assert r["\\r\\n"] == (-1, 0)
    # hidden fields and PDML's own summary are not shown
    assert "hidden one" not in r and "hidden" not in r and "General information" not in r
    eth = tree[1]
    assert [c.label for c in eth.children[0].children] == [".... ..0. = LG bit"]


def test_the_same_http_in_the_frame_gets_its_bytes() -> None:
    frame = FRAME[:54] + b"GET / HTTP/1.1\r\n\r\n"
    xml = PDML.replace(b'size="18" pos="0"', b'size="18" pos="54"')
    for old, new in ((b'size="16" pos="0"', b'size="16" pos="54"'),
                     (b'size="3" pos="0"', b'size="3" pos="54"'),
                     (b'size="1" pos="13"', b'size="1" pos="67"'),
                     (b'size="2" pos="16"', b'size="2" pos="70"')):
        xml = xml.replace(old, new)
    r = ranges(parse_pdml(xml, frame))
    assert r["Hypertext Transfer Protocol"] == (54, 18)
    assert r["GET / HTTP/1.1\\r\\n"] == (54, 16)
    assert r["Request Method: GET"] == (54, 3)
    assert r["Version: 1"] == (67, 1)
    assert r["\\r\\n"] == (70, 2)


def test_lines_are_tshark_minus_v_text() -> None:
    tree = parse_pdml(PDML, FRAME)
    d = Dissection(1, 7, tree, FRAME)
    assert d.lines == tree_lines(tree)
    assert d.lines[:4] == ("Frame 7: 60 bytes on wire", "    Frame Length: 60 bytes",
                           "Ethernet II", "    Destination: 00:21:70:c0:56:f0")
    assert "        .... ..0. = LG bit" in d.lines
    assert "        Time delta: 0.1 s" in d.lines


def test_hostile_and_huge_labels_are_kept_as_text_and_capped() -> None:
    evil = "GET /&#x1b;[2J&#x1b;]0;pwned&#x7; [bold]x[/bold] HTTP/1.1"
    huge = "41" * 3_000_000  # a 3 MB field text (hex of a reassembled body)
    xml = (f'<packet><proto name="x" showname="{evil}" size="4" pos="0">'
           f'<field name="big" show="{huge}" size="2" pos="0" value="0001"/>'
           f'</proto></packet>').encode()
    (proto,) = parse_pdml(xml, b"\x00\x01\x02\x03")
    # the text is the packet's, unchanged: the screen escapes it (test_ui_packet)
    assert proto.label == "GET /\x1b[2J\x1b]0;pwned\x07 [bold]x[/bold] HTTP/1.1"
    (big,) = proto.children
    assert len(big.label) == LABEL_MAX and big.label.endswith("…")
    assert (big.start, big.length) == (0, 2)


def test_node_and_depth_caps() -> None:
    fields = "".join(f'<field name="f{i}" showname="field {i}" size="1" pos="0" value="00"/>'
                     for i in range(50))
    xml = f'<packet><proto name="p" showname="P" size="1" pos="0">{fields}</proto></packet>'
    tree = parse_pdml(xml.encode(), b"\x00", max_nodes=10)
    assert len(tree[0].children) == 9
    assert tree[-1].label.startswith("… 41 more items not shown")
    assert tree[-1].start == -1

    deep = "".join(f'<field name="d" showname="level {i}" size="1" pos="0" value="00">'
                   for i in range(MAX_DEPTH + 20)) + "</field>" * (MAX_DEPTH + 20)
    tree = parse_pdml(f"<packet><proto name='p' showname='P'>{deep}</proto></packet>"
                      .encode(), b"\x00")
    depth, node = 0, tree[0]
    while node.children:
        depth, node = depth + 1, node.children[0]
    assert depth == MAX_DEPTH - 1
    assert tree[-1].label.startswith("… 21 more items not shown")


def test_broken_or_empty_pdml_gives_no_tree_not_an_error() -> None:
    assert parse_pdml(b"", b"") == ()
    assert parse_pdml(b"<packet>", b"") == ()
    assert parse_pdml(b"\x00\xff garbage", b"") == ()
    # cut short: what is there is kept
    cut = PDML[:PDML.index(b'<proto name="tcp"')]
    assert [n.label for n in parse_pdml(cut, FRAME)][-1] == "Internet Protocol Version 4"
    # positions that are not numbers, or point past the frame: no range
    xml = (b'<packet><proto name="p" showname="P" size="x" pos="0">'
           b'<field name="f" showname="F" size="4" pos="-3" value="00000000"/>'
           b'<field name="g" showname="G" size="400" pos="0"/></proto></packet>')
    (p,) = parse_pdml(xml, b"\x00" * 8)
    assert [(c.label, c.start) for c in p.children] == [("F", -1), ("G", -1)]


# ------------------------------------------------------------------ real tshark
def pcapng_frames(path: Path) -> list[RingFrame]:
    """The packets of a little-endian pcapng (EPBs; timestamps in microseconds)."""
    buf = path.read_bytes()
    off, linktypes, frames = 0, [], []
    while off + 12 <= len(buf):
        btype, blen = struct.unpack_from("<II", buf, off)
        if btype == 1:
            linktypes.append(struct.unpack_from("<H", buf, off + 8)[0])
        elif btype == 6:
            iface, hi, lo, cap, orig = struct.unpack_from("<IIIII", buf, off + 8)
            data = buf[off + 28:off + 28 + cap]
            frames.append(RingFrame(len(frames), ((hi << 32) | lo) / 1e6, orig,
                                    linktypes[iface], data))
        off += blen
    return frames


@pytest.fixture(scope="module")
def espn() -> list[RingFrame]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is needed")
    return pcapng_frames(captures_dir() / "01_http_espn.pcapng")


def find(nodes: tuple[DissectNode, ...], prefix: str) -> DissectNode:
    for n in nodes:
        if n.label.startswith(prefix):
            return n
        try:
            return find(n.children, prefix)
        except LookupError:
            pass
    raise LookupError(prefix)


def test_real_tshark_request_in_one_frame(espn) -> None:
    frames = espn[:6]  # frame 6 of the file: the first HTTP GET, in one segment
    tree = dissect_frames(frames)
    frame = frames[-1].data
    src = find(tree, "Source Address: ")
    assert (src.start, src.length) == (26, 4) and frame[26:30] == bytes([172, 16, 0, 122])
    http = find(tree, "Hypertext Transfer Protocol")
    assert http.start == 66 and frame[66:70] == b"GET "
    host = find(http.children, "Host: ")
    assert frame[host.start:host.start + host.length].startswith(b"Host: ")
    assert [n.label.split(",")[0] for n in tree] == [
        "Frame 6: 445 bytes on wire (3560 bits)", "Ethernet II",
        "Internet Protocol Version 4", "Transmission Control Protocol",
        "Hypertext Transfer Protocol"]


def test_real_tshark_reassembled_response_has_no_range_in_its_last_frame(espn) -> None:
    frames = espn[:121]  # frame 121: the last of 28 segments of a CSS response
    tree = dissect_frames(frames)
    assert (find(tree, "Source Address: ").start, find(tree, "Source Address: ").length) \
        == (26, 4)
    assert find(tree, "TCP payload (789 bytes)").start == 66
    segments = find(tree, "28 Reassembled TCP Segments")
    assert segments.start == -1 and all(c.start == -1 for c in segments.children)
    http = find(tree, "Hypertext Transfer Protocol")
    assert http.start == -1 and find(http.children, "HTTP/1.1 200 OK").start == -1
    assert find(tree, "Line-based text data").start == -1


def test_an_item_without_a_range_covers_the_bytes_of_its_items() -> None:
    """tshark writes the "data" layer of an undissected payload with no range of its
    own: it covers its Data field's bytes, as Wireshark highlights it."""
    frame = bytes(42) + b"\x80\x00" + b"\xd5" * 10
    pdml = (b'<packet><proto name="data">'
            b'<field name="data.data" showname="Data: 8000d5" size="12" pos="42" value="'
            + frame[42:].hex().encode() + b'"/>'
            b'<field name="data.len" showname="[Length: 12]" size="0" pos="42"/>'
            b'</proto></packet>')
    (data,) = parse_pdml(pdml, frame)
    assert (data.label, data.start, data.length) == ("data", 42, 12)
    assert [(c.start, c.length) for c in data.children] == [(42, 12), (-1, 0)]
