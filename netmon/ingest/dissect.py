"""On-demand dissection: a flow's retained frames -> tshark (through pyshark) -> the
full protocol tree of one packet as indented text lines, as ``tshark -V`` prints it.

Runs in a worker thread (the engine's thread pool), never on the reactor or UI thread:
tshark reads the whole temporary file, which takes tens of milliseconds to seconds.
pyshark drives tshark with asyncio, so every call gets a fresh event loop of its own,
closed when done; tshark is killed and reaped (pyshark's cleanup, bounded by
``timeout``). The temporary capture (captured payload) is a 0600 file with no name
(``O_TMPFILE``), read by tshark through ``/proc/<netmon's pid>/fd/N``: it vanishes
with its descriptor, however netmon ends (``kill -9`` included). Where the filesystem
lacks ``O_TMPFILE`` the file is unlinked the instant after it is made; only without
``/proc`` (not Linux) does it keep its name until the dissection is done.

Why the tree is rendered here: pyshark's layer objects flatten tshark's tree (every
field of a layer at one level, repeated fields regrouped by name). netmon keeps
pyshark's process and stream handling but takes each packet's PDML as tshark wrote it
and indents it by its own nesting, which is what ``tshark -V`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Sequence

from netmon.ingest.packetstore import RingFrame
from netmon.ingest.pcapwrite import pcapng_epb, pcapng_idb, pcapng_shb

#: Seconds tshark gets per dissection before it is killed.
DISSECT_TIMEOUT = 20.0
#: At most this many lines of tree (a reassembled body can run to thousands).
MAX_LINES = 4000
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


def render_pdml(packet_xml: bytes) -> list[str]:
    """One PDML ``<packet>`` -> tshark -V style lines (4 spaces per level)."""
    from lxml import etree

    parser = etree.XMLParser(huge_tree=True, recover=True)
    root = etree.fromstring(packet_xml, parser)
    out: list[str] = []
    if root is not None:
        _render(root, 0, out)
    return out


def _render(elem: object, depth: int, out: list[str]) -> None:
    for child in elem:  # type: ignore[attr-defined]
        if child.tag not in ("proto", "field") or child.get("hide") == "yes":
            continue
        name = child.get("name", "")
        if child.tag == "proto" and name == "geninfo":
            continue  # pdml's own summary; tshark -V does not show it
        if name == "fake-field-wrapper":  # fields outside any protocol
            _render(child, depth, out)
            continue
        text = child.get("showname") or child.get("show") or name
        if text:
            out.append("    " * depth + text)
        _render(child, depth + 1, out)


def dissect_frames(frames: Sequence[RingFrame], *, timeout: float = DISSECT_TIMEOUT,
                   tshark_path: str | None = None,
                   on_start: OnStart | None = None) -> tuple[str, ...]:
    """The tree of the last of ``frames`` (the others give it context).

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
    lines = render_pdml(packets[0])
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"... ({len(lines) - MAX_LINES} more lines not shown)"]
    return tuple(lines)


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
