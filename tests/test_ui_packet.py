"""Pilot tests of the packet screen: the protocol tree, the hex pane and its highlight,
n / p through the flow's kept packets, collapsing, untrusted text, errors, layouts;
once with a real tshark dissection of a shared capture."""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from netmon.core.link import Dissection, DissectNode
from netmon.core.settings import Settings
from netmon.ingest.dissect import dissect_frames
from netmon.testing.fake_dissect import fake_dissection
from netmon.testing.fake_engine import FakeLink, make_world
from netmon.ui import FixedFeed, NetmonApp, make_app
from netmon.ui.messages import PacketDissected
from netmon.ui.screens import FlowScreen, PacketScreen
from netmon.ui.widgets import FlowsTable, HexView, PacketsTable, ProtocolTree
from netmon.ui.widgets._hex_view import ROW, ascii_column, hex_row, offset_digits, row_width
from netmon.ui.widgets._protocol_tree import LABEL_MAX
from tests.conftest import captures_dir
from tests.test_dissect import pcapng_frames
from tests.ui_support import build_app, clusters_shown, screen_text, ui_test, wait_until

pytestmark = pytest.mark.timeout(60)


async def open_packet(pilot: Pilot, *, wait: bool = True) -> PacketScreen:
    """Main screen -> busiest cluster -> its first flow -> that flow's last packet."""
    app = pilot.app
    await clusters_shown(pilot)
    await pilot.press("enter")
    flows = app.screen.query_one(FlowsTable)
    await wait_until(pilot, lambda: flows.row_count > 0)
    await pilot.press("enter")
    assert isinstance(app.screen, FlowScreen)
    packets = app.screen.query_one(PacketsTable)
    await wait_until(pilot, lambda: packets.row_count > 0)
    await pilot.press("end", "enter")
    screen = app.screen
    assert isinstance(screen, PacketScreen)
    if wait:
        await wait_until(pilot, lambda: screen.dissection or screen.error)
    return screen


def cursor_label(screen: PacketScreen) -> str:
    node = screen.query_one(ProtocolTree).cursor_node
    return node.data.label if node is not None and node.data is not None else ""


async def move_to(pilot: Pilot, screen: PacketScreen, key: str, prefix: str) -> None:
    """Press ``key`` until the tree's cursor is on an item whose text starts so."""
    for _ in range(40):
        if cursor_label(screen).startswith(prefix):
            return
        await pilot.press(key)
    raise AssertionError(f"no item {prefix!r} reached with {key}: at {cursor_label(screen)!r}")


def lit(hexview: HexView) -> tuple[str, str]:
    """The highlighted bytes as drawn on screen (rows in view): their hex cells,
    space-joined, and their ASCII column characters."""
    style = hexview.get_component_rich_style("hex-view--highlight", partial=True)
    ascii_at = row_width() - ROW  # the ASCII column's first cell
    hexes, chars = [], []
    for y in range(hexview.scrollable_content_region.height):
        x = 0
        hex_text = ""
        for seg in hexview.render_line(y):
            on = seg.style is not None and seg.style.bgcolor == style.bgcolor
            for ch in seg.text:
                if on and x >= ascii_at:
                    chars.append(ch)
                elif on:
                    hex_text += ch
                else:
                    hex_text += " "
                x += 1
        hexes += hex_text.split()
    return " ".join(hexes), "".join(chars)


@ui_test
async def test_tree_and_bytes_show_the_packet_escaped() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_packet(pilot)
        text = screen_text(app)
        # layers at the top, the last (HTTP) expanded, the rest collapsed
        assert "▶ Frame" in text and "▶ Ethernet II" in text and "▼ Hypertext" in text
        assert "Host: example.test" in text and "Time to Live" not in text
        # the request's escape sequences: escaped in the tree, '.' in the ASCII column
        assert "\x1b" not in text and "\x07" not in text
        assert "GET /\\x1b[2J\\x1b]0;pwned\\x07 HTTP/1.1" in text
        assert "......GET /.[2J." in text and "]0;pwned. HTTP/1" in text
        assert "0000  02 00 00 00 00 02 02 00  00 00 00 01 08 00 45 00  ..............E." \
            in text
        assert len(screen.kept) == 40 and screen.index == screen.kept[-1]
        assert f"packet #{screen.index} of flow TCP" in text and "40 of 40 kept" in text


@ui_test
async def test_moving_the_cursor_moves_the_highlight() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_packet(pilot)
        hexview = screen.query_one(HexView)
        await wait_until(pilot, lambda: cursor_label(screen) == "Hypertext Transfer Protocol")
        assert hexview.span == (54, len(hexview.data))  # the request, from byte 54
        await pilot.press("down")
        assert cursor_label(screen).startswith("GET /")
        assert hexview.span == (54, 54 + len(b"GET /\x1b[2J\x1b]0;pwned\x07 HTTP/1.1\r\n"))
        assert lit(hexview)[1] == "GET /.[2J.]0;pwned. HTTP/1.1.."

        await move_to(pilot, screen, "up", "Internet Protocol Version 4")
        assert hexview.span == (14, 34)
        await pilot.press("right")  # expand
        await move_to(pilot, screen, "down", "Source Address")
        assert hexview.span == (26, 30)
        a, b, c, d = (int(x) for x in screen.flow.addr_a.split("."))
        assert lit(hexview)[0] == f"{a:02x} {b:02x} {c:02x} {d:02x}"
        assert "selected: bytes 26–29 (4)" in screen_text(app)

        await move_to(pilot, screen, "up", "Frame ")
        await pilot.press("right", "down")
        assert cursor_label(screen).startswith("Frame Length")
        assert hexview.span == (0, 0) and lit(hexview) == ("", "")
        assert "selected: no bytes of this frame" in screen_text(app)


@ui_test
async def test_n_and_p_step_through_the_kept_packets() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await open_packet(pilot)
        kept = screen.kept

        def asked() -> list[tuple]:
            return [r for r in link.requests if isinstance(r, tuple) and r[0] == "dissect"]

        assert [r[2] for r in asked()] == [kept[-1]]

        await pilot.press("p")
        await wait_until(pilot, lambda: screen.dissection.index == kept[-2])
        assert f"packet #{kept[-2]} of flow" in screen_text(app)
        assert "39 of 40 kept" in screen_text(app)
        assert f"Frame {kept[-2]}:" in screen_text(app)
        assert f"flow {screen.flow.flow_id} › packet {kept[-2]}" in screen_text(app)
        await pilot.press("n")
        await wait_until(pilot, lambda: screen.dissection.index == kept[-1])
        assert [r[2] for r in asked()] == [kept[-1], kept[-2]]  # the way back: cached
        await pilot.press("n")  # nothing after the last kept one: it says so
        await wait_until(pilot, lambda: "last kept packet" in screen_text(app))
        assert screen.index == kept[-1]

        # tshark busy: presses move on, only the packet landed on is asked for next
        link.hold = True
        await pilot.press("p", "p", "p")  # kept[-2] is cached; kept[-3] is asked
        assert screen.index == kept[-4] and [r[2] for r in asked()][2:] == [kept[-3]]
        assert f"dissecting packet #{kept[-4]}" in screen_text(app)
        screen.post_message(PacketDissected(fake_dissection(screen.flow, kept[-3])))
        await wait_until(pilot, lambda: len(asked()) == 4)
        assert asked()[-1][2] == kept[-4] and screen.dissection.index == kept[-2]
        screen.post_message(PacketDissected(fake_dissection(screen.flow, kept[-4])))
        await wait_until(pilot, lambda: screen.dissection.index == kept[-4])
        await pilot.press("n")  # kept[-3] came back while passed over: kept, not asked again
        assert screen.dissection.index == kept[-3] and len(asked()) == 4


@ui_test
async def test_layers_collapse_and_expand() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_packet(pilot)
        await wait_until(pilot, lambda: cursor_label(screen) == "Hypertext Transfer Protocol")
        assert "Host: example.test" in screen_text(app)
        await pilot.press("left")
        await pilot.pause()
        assert "Host: example.test" not in screen_text(app)
        assert "▶ Hypertext Transfer Protocol" in screen_text(app)
        await pilot.press("right")
        await pilot.pause()
        assert "Host: example.test" in screen_text(app)
        await pilot.press("down", "left")  # on a field, ← goes to its layer
        assert cursor_label(screen) == "Hypertext Transfer Protocol"
        await pilot.press("enter")  # Enter toggles too
        await pilot.pause()
        assert "Host: example.test" not in screen_text(app)
        await move_to(pilot, screen, "up", "Transmission Control Protocol")
        assert "Sequence Number" not in screen_text(app)
        await pilot.press("space")
        await pilot.pause()
        assert "Sequence Number" in screen_text(app)


class _Answers(FakeLink):
    """A fake link whose dissections come from ``make``."""

    def __init__(self, make: Callable[[int, int], Dissection]) -> None:
        super().__init__(make_world(120, 6))
        self.make = make

    def dissect(self, flow_id: int, index: int, reply) -> None:
        self._answer(("dissect", flow_id, index), lambda: reply(self.make(flow_id, index)))


def app_with(link: FakeLink) -> NetmonApp:
    return make_app(Settings(), FixedFeed(link.world.snapshots(5)), link)


@ui_test
async def test_labels_are_text_never_markup_or_terminal_codes() -> None:
    evil = DissectNode("[bold]B[/bold] [link=http://x]L[/link] \x1b]0;t\x07 \x1b[31mred "
                       "\u202eevil", 0, 4)
    huge = DissectNode("x" * 100_000, 0, 1)
    link = _Answers(lambda f, i: Dissection(f, i, (DissectNode("Layer", 0, 4, (evil, huge)),),
                                            b"\x1b[2J"))
    app = app_with(link)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_packet(pilot)
        text = screen_text(app)
        assert "[bold]B[/bold] [link=http://x]L[/link] \\x1b]0;t\\x07 \\x1b[31mred " \
               "\\u202eevil" in text
        assert "\x1b" not in text and "\u202e" not in text
        assert "0000  1b 5b 32 4a" in text and ".[2J" in text
        tree = screen.query_one(ProtocolTree)
        labels = [n.label.plain for n in tree.root.children[0].children]
        assert len(labels[1]) == LABEL_MAX and labels[1].endswith("…")


@ui_test
async def test_errors_are_said_plainly() -> None:
    link = _Answers(lambda f, i: Dissection(f, i, (), error="tshark not found: install "
                                            "tshark (Wireshark) to see dissections"))
    app = app_with(link)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_packet(pilot)
        text = screen_text(app)
        assert f"cannot dissect packet #{screen.index}: tshark not found" in text
        assert not screen.query_one("#dissection-body").display
        await pilot.press("p")  # n / p still move, and say it again
        await wait_until(pilot, lambda: f"cannot dissect packet #{screen.index}"
                         in screen_text(app))


@ui_test
async def test_wide_terminal_puts_the_bytes_beside_the_tree() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_packet(pilot)
        tree, pane = screen.query_one(ProtocolTree), screen.query_one("#bytes-pane")
        assert screen.query_one("#dissection-body").has_class("-wide")
        assert pane.region.x > tree.region.x and pane.region.y == tree.region.y
        await pilot.resize_terminal(100, 40)
        await pilot.pause()
        assert not screen.query_one("#dissection-body").has_class("-wide")
        assert pane.region.y > tree.region.y


def test_a_real_tshark_dissection_highlights_ip_src() -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is needed")
    frames = pcapng_frames(captures_dir() / "01_http_espn.pcapng")[:6]  # the first GET
    tree = dissect_frames(frames)  # (pyshark runs its own event loop: not inside one)
    link = _Answers(lambda f, i: Dissection(f, i, tree, frames[-1].data))
    shows_ip_src(app_with(link), frames[-1].data)


@ui_test
async def shows_ip_src(app: NetmonApp, frame: bytes) -> None:
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_packet(pilot)
        await wait_until(pilot, lambda: cursor_label(screen) == "Hypertext Transfer Protocol")
        hexview = screen.query_one(HexView)
        assert hexview.span == (66, len(frame))
        await move_to(pilot, screen, "up", "Internet Protocol Version 4")
        await pilot.press("right")
        await move_to(pilot, screen, "down", "Source Address: 172.16.0.122")
        assert hexview.span == (26, 30)
        assert lit(hexview)[0] == "ac 10 00 7a"  # 172.16.0.122, and nothing else
        assert "selected: bytes 26–29 (4)" in screen_text(app)


def test_fake_dissections_are_real_frames() -> None:
    """The fake's trees point at the right bytes of its frames (what tshark would say)."""
    world = make_world(240, 8)
    for flow in world.flows[::7]:
        d = fake_dissection(flow, 12)
        for n in d.tree:
            assert 0 <= n.start and n.start + n.length <= len(d.data)
        ip = d.tree[2]
        src = next(c for c in ip.children if c.label.startswith("Source Address"))
        addr = ipaddress.ip_address(flow.addr_a)
        if addr.version == 4 and ":" in flow.addr_b:
            addr = ipaddress.ip_address(f"::ffff:{flow.addr_a}")  # the fake maps it
        assert d.data[src.start:src.start + src.length] == addr.packed


def test_hex_rows_are_aligned_and_printable() -> None:
    data = bytes(range(256)) + b"\x1b[2J\x07"
    assert ascii_column(bytes(range(256))) == "." * 32 + "".join(
        chr(c) for c in range(32, 127)) + "." * 129
    rows = [hex_row(data, r) for r in range((len(data) + 15) // 16)]
    # the hex of a short last row is padded, so its ASCII lines up with the others'
    assert {len(r) for r in rows[:-1]} == {row_width()}
    assert len(rows[-1]) == row_width() - ROW + 5
    assert rows[1] == ("0010  10 11 12 13 14 15 16 17  18 19 1a 1b 1c 1d 1e 1f  "
                       "................")
    assert rows[-1] == "0100  1b 5b 32 4a 07" + " " * 36 + ".[2J."
    assert all(ch.isprintable() for r in rows for ch in r)
    assert offset_digits(65536) == 4 and offset_digits(65537) == 5
