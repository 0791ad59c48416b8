"""On-demand dissection: a flow's retained frames -> tshark (through pyshark) -> the
protocol tree of one packet (layers, fields, and the bytes of the frame each covers),
from tshark's PDML.

Runs in a worker thread (the engine's thread pool), never on the reactor or UI thread:
tshark reads the whole temporary file, which takes tens of milliseconds to seconds.
pyshark drives tshark with asyncio, so every call gets a fresh event loop of its own,
closed when done; tshark is killed and reaped (pyshark's cleanup, bounded by
``timeout``). The temporary capture (captured payload) is a 0600 file with no name
(``O_TMPFILE``), read by tshark through ``/proc/<netmon's pid>/fd/N``: it vanishes
with its descriptor, however netmon ends (``kill -9`` included). Where the filesystem
lacks ``O_TMPFILE`` the file is unlinked the instant after it is made; only without
``/proc`` (not Linux) does it keep its name until the dissection is done.

Why the tree is parsed here: pyshark's layer objects flatten tshark's tree (every
field of a layer at one level, repeated fields regrouped by name) and drop the byte
ranges. netmon keeps pyshark's process and stream handling but takes each packet's
PDML as tshark wrote it; :func:`parse_pdml` (pure, any thread) turns it into
:class:`~netmon.core.link.DissectNode` items, nested as ``tshark -V`` and Wireshark
show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Sequence

from netmon.core.link import DissectNode
from netmon.ingest.keptpackets import RingFrame
from netmon.ingest.pcapwrite import pcapng_epb, pcapng_idb, pcapng_shb

#: Seconds tshark gets per dissection before it is killed.
DISSECT_TIMEOUT = 20.0
#: At most this many items of tree (a reassembled body can run to thousands).
MAX_NODES = 4000
#: Items nested deeper than this are left out (tshark's trees are a few levels deep).
MAX_DEPTH = 48
#: Characters of one item's text (a field of hex bytes can run to megabytes).
LABEL_MAX = 500
#: Frames written before the selected one, so reassembly (TCP, HTTP, TLS) can work.
CONTEXT_FRAMES = 2000
_TSRESOL = 9  # nanosecond timestamps in the temporary file

#: Called with (event loop, task) when a dissection starts, so it can be cancelled.
OnStart = Callable[[asyncio.AbstractEventLoop, "asyncio.Task[object]"], None]


class DissectError(Exception):
    """A dissection that could not be done, for a reason a user can understand."""


def capture_bytes(frames: Sequence[RingFrame]) -> bytes:
    """A pcapng capture of ``frames``: one interface per link type, in order."""
    ifaces: dict[int, int] = {}
    head = [pcapng_shb()]
    body = []
    for f in frames:
        iface = ifaces.get(f.linktype)
        if iface is None:
            iface = ifaces[f.linktype] = len(ifaces)
            head.append(pcapng_idb(f.linktype, tsresol_exp=_TSRESOL))
        body.append(pcapng_epb(iface, f.ts, f.data, wirelen=max(f.wirelen, len(f.data)),
                               tsresol_exp=_TSRESOL))
    return b"".join(head + body)


def parse_pdml(packet_xml: bytes, frame: bytes, *, max_nodes: int = MAX_NODES,
               label_max: int = LABEL_MAX) -> tuple[DissectNode, ...]:
    """One PDML ``<packet>`` -> its protocol tree, with each item's bytes in ``frame``.

    Hidden fields and PDML's own summary (``geninfo``) are left out; fields outside
    any protocol (``fake-field-wrapper``: reassembly summaries) become top-level
    items, as Wireshark shows them. At most ``max_nodes`` items (then one saying how
    many more there were), ``label_max`` characters of text each, ``MAX_DEPTH`` levels.

    PDML gives each field's ``pos`` in its own data source: the frame for most, but a
    reassembled, decrypted or decompressed buffer for some, and PDML does not say which.
    A field's ``value`` (``unmaskedvalue`` for bit fields) is the hex of its bytes in
    that source, so comparing it with the frame's bytes at ``pos`` tells; an item with
    nothing to compare (a protocol, an empty field) follows the majority of the items
    under it, else its parent. Items not in the frame get ``start`` -1.
    """
    from lxml import etree

    parser = etree.XMLParser(huge_tree=True, recover=True, resolve_entities=False,
                             no_network=True)
    try:
        root = etree.fromstring(packet_xml, parser)
    except etree.XMLSyntaxError:
        root = None
    if root is None:
        return ()
    budget = _Budget(max_nodes)
    raw = _collect(root, frame, 0, budget, label_max)
    nodes = [_resolve(r, len(frame), None) for r in raw]
    if budget.left_out:
        nodes.append(DissectNode(f"… {budget.left_out} more items not shown (netmon shows "
                                 f"at most {max_nodes} of a packet)"))
    return tuple(nodes)


class _Budget:
    __slots__ = ("left", "left_out")

    def __init__(self, left: int) -> None:
        self.left = left
        self.left_out = 0


class _Raw:
    """A tree item before its range is settled: ``verdict`` +1 its bytes are the
    frame's, -1 they are not, 0 cannot tell; ``votes`` sums the sure verdicts below."""

    __slots__ = ("children", "label", "pos", "size", "verdict", "votes")

    def __init__(self, label: str, pos: int, size: int, verdict: int) -> None:
        self.label = label
        self.pos = pos
        self.size = size
        self.verdict = verdict
        self.votes = 0
        self.children: list[_Raw] = []


def _collect(elem: object, frame: bytes, depth: int, budget: _Budget,
             label_max: int) -> list[_Raw]:
    out: list[_Raw] = []
    for child in elem:  # type: ignore[attr-defined]
        if child.tag not in ("proto", "field") or child.get("hide") == "yes":
            continue
        name = child.get("name", "")
        if child.tag == "proto" and name == "geninfo":
            continue  # PDML's own summary; Wireshark does not show it
        if name == "fake-field-wrapper":  # fields outside any protocol
            out.extend(_collect(child, frame, depth, budget, label_max))
            continue
        if budget.left <= 0 or depth >= MAX_DEPTH:
            budget.left_out += 1 + sum(1 for e in child.iter("field", "proto")
                                       if e is not child and e.get("hide") != "yes")
            continue
        budget.left -= 1
        text = child.get("showname") or child.get("show") or name
        if len(text) > label_max:
            text = text[: max(label_max - 1, 0)] + "…"
        pos, size = _int(child.get("pos")), _int(child.get("size"))
        node = _Raw(text, pos, size, _verdict(child, pos, size, frame))
        node.children = _collect(child, frame, depth + 1, budget, label_max)
        node.votes = sum(c.verdict + c.votes for c in node.children)
        out.append(node)
    return out


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def _verdict(elem: object, pos: int, size: int, frame: bytes) -> int:
    """+1: the item's bytes are the frame's at ``pos``; -1: they are not; 0: unknown."""
    if size <= 0:
        return 0
    if pos < 0 or pos + size > len(frame):
        return -1  # beyond the frame: it can only be another data source
    raw = elem.get("unmaskedvalue") or elem.get("value")  # type: ignore[attr-defined]
    if raw is None or len(raw) != 2 * size:
        return 0
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        return 0
    if value != frame[pos:pos + size]:
        return -1
    return 1 if size >= 2 else 0  # one equal byte can be chance


def _resolve(raw: _Raw, frame_len: int, parent_in_frame: bool | None) -> DissectNode:
    if raw.verdict:
        in_frame = raw.verdict > 0
    elif raw.votes:
        in_frame = raw.votes > 0
    elif parent_in_frame is not None:
        in_frame = parent_in_frame
    else:  # a top-level item with nothing to compare: trust a range that fits
        in_frame = 0 <= raw.pos and raw.pos + raw.size <= frame_len
    children = tuple(_resolve(c, frame_len, in_frame) for c in raw.children)
    if in_frame and raw.size > 0 and raw.pos >= 0 and raw.pos + raw.size <= frame_len:
        return DissectNode(raw.label, raw.pos, raw.size, children)
    placed = [c for c in children if c.start >= 0]
    if in_frame and placed:
        # An item PDML gives no range of its own (tshark's "data" wrapper) covers the
        # bytes of its items, as Wireshark highlights a layer.
        start = min(c.start for c in placed)
        end = max(c.start + c.length for c in placed)
        return DissectNode(raw.label, start, end - start, children)
    return DissectNode(raw.label, -1, 0, children)


def dissect_frames(frames: Sequence[RingFrame], *, timeout: float = DISSECT_TIMEOUT,
                   tshark_path: str | None = None,
                   on_start: OnStart | None = None) -> tuple[DissectNode, ...]:
    """The protocol tree of the last of ``frames`` (the others give it context), its
    ranges in that frame's ``data``.

    Raises DissectError for what a user can meet: no tshark, tshark failing or taking
    longer than ``timeout`` seconds, a cancelled request.
    """
    if not frames:
        raise DissectError("no frames to dissect")
    try:
        fd, path, named = capture_file()
    except OSError as exc:
        raise DissectError(f"cannot write the temporary capture: {exc.strerror or exc}") \
            from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(capture_bytes(frames))
            fh.flush()
            packets = _run_tshark(path, len(frames), timeout, tshark_path, on_start)
    except OSError as exc:
        raise DissectError(f"cannot write the temporary capture: {exc.strerror or exc}") \
            from None
    finally:
        if named:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if not packets:
        raise DissectError("tshark returned no dissection for this packet")
    return parse_pdml(packets[0], frames[-1].data)


def capture_file() -> tuple[int, str, bool]:
    """(fd, path tshark can open, whether the path is a name to remove): a 0600 file
    in the temporary directory, nameless where the kernel allows."""
    directory = tempfile.gettempdir()
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):  # no O_TMPFILE on this OS or filesystem
        fd, path = tempfile.mkstemp(prefix="netmon-dissect-", suffix=".pcapng")  # 0600
        if not os.path.isdir("/proc/self/fd"):  # not Linux: a name until it is done
            return fd, path, True
        os.unlink(path)  # named for an instant only
    # tshark is netmon's child: it opens the file through netmon's descriptor table.
    return fd, f"/proc/{os.getpid()}/fd/{fd}", False


def _run_tshark(path: str, number: int, timeout: float, tshark_path: str | None,
                on_start: OnStart | None) -> list[bytes]:
    from pyshark.capture.capture import TSharkCrashException
    from pyshark.tshark.tshark import TSharkNotFoundException

    loop = asyncio.new_event_loop()
    packets: list[bytes] = []
    try:
        try:
            capture = _pdml_capture()(path, display_filter=f"frame.number == {number}",
                                      eventloop=loop, tshark_path=tshark_path)
        except TSharkNotFoundException:
            raise DissectError("tshark not found: install tshark (Wireshark) to see "
                               "dissections") from None
        task = loop.create_task(asyncio.wait_for(
            capture.packets_from_tshark(packets.append), timeout))
        if on_start is not None:
            on_start(loop, task)
        try:
            loop.run_until_complete(task)
        except TimeoutError:
            raise DissectError(f"tshark took longer than {timeout:g} s: dissection "
                               "abandoned") from None
        except asyncio.CancelledError:
            raise DissectError("dissection cancelled") from None
        except TSharkNotFoundException:
            raise DissectError("tshark not found: install tshark (Wireshark) to see "
                               "dissections") from None
        except TSharkCrashException as exc:
            raise DissectError(f"tshark failed: {str(exc).splitlines()[0]}") from None
        finally:
            # packets_from_tshark closes tshark itself; this covers a cancellation
            # that came before it started.
            with contextlib.suppress(Exception):
                loop.run_until_complete(capture.close_async())
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return packets


@functools.cache
def _pdml_capture() -> type:
    """A pyshark FileCapture whose packets are their PDML bytes (pyshark imported once,
    on first use: it is slow to import and only dissections need it)."""
    from pyshark.capture.file_capture import FileCapture
    from pyshark.tshark.output_parser.tshark_xml import DEL_BAD_XML_CHARS, TsharkXmlParser

    class PdmlParser(TsharkXmlParser):
        """pyshark's PDML stream splitter, handing each packet's XML on unparsed."""

        def _parse_single_packet(self, packet: bytes) -> bytes:
            text = packet.decode("utf-8", errors="replace").translate(DEL_BAD_XML_CHARS)
            return text.encode("utf-8")

    class PdmlCapture(FileCapture):
        def _setup_tshark_output_parser(self) -> TsharkXmlParser:
            return PdmlParser()

    return PdmlCapture
