"""Pilot tests of follow stream (``f``), writing packets (``w``) and the flow screen of
flows without packets, on a fake engine link."""

from __future__ import annotations

import re

import pytest

from netmon.core.link import FollowStream, PacketExportRequest, PacketExportResult
from netmon.core.values import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from netmon.testing.fake_engine import make_world, with_packetless_flows
from netmon.ui.app import packets_written
from netmon.ui.messages import StreamFollowed
from netmon.ui.screens import FlowScreen, FollowScreen, HelpScreen
from netmon.ui.screens.follow import stream_hex, stream_text
from netmon.ui.widgets import PacketsTable
from tests.ui_support import (
    build_app,
    clusters_shown,
    open_flows,
    screen_text,
    ui_test,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

#: What a terminal could act on: C0 controls but LF, DEL, C1 controls.
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def toasts(app) -> list[str]:
    """The notifications shown so far (whole, however the toast wraps them)."""
    return [n.message for n in app._notifications]


async def open_flow(pilot, world_flow) -> FlowScreen:
    await clusters_shown(pilot)
    screen = FlowScreen(world_flow)
    await pilot.app.push_screen(screen)
    await pilot.pause()
    return screen


@ui_test
async def test_f_follows_a_tcp_stream_in_two_colours_and_h_shows_hex() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_flows(pilot)
        await pilot.press("enter")
        flow_screen = app.screen
        assert isinstance(flow_screen, FlowScreen)
        await wait_until(pilot, lambda: flow_screen.query_one(PacketsTable).row_count)
        assert "f Follow" in screen_text(app) and "w Write pcapng" in screen_text(app)
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, FollowScreen)
        assert link.requests[-1] == ("follow", flow_screen.flow.flow_id)
        await wait_until(pilot, lambda: screen.stream is not None)
        text = screen_text(app)
        assert "GET /index.html HTTP/1.1" in text and "HTTP/1.1 200 OK" in text
        assert "[1,234 bytes not kept]" in text
        assert "not kept)" in text  # the header counts the missing bytes
        body = screen.query_one("#follow-body").render()
        spans = {str(s.style) for s in body.spans}
        assert any("red" in s for s in spans) and any("blue" in s for s in spans)
        # The escape sequence in the request is dots, never raw.
        assert not RAW.search(body.plain) and ".[2J.]0;pwned.curl" in body.plain
        await pilot.press("h")
        await pilot.pause()
        text = screen_text(app)
        assert "00000000  47 45 54 20 2f 69 6e 64" in text  # "GET /ind"
        assert "00000000  48 54 54 50 2f 31" in text  # the responder's offsets start at 0
        await pilot.press("h")
        await pilot.pause()
        assert "GET /index.html HTTP/1.1" in screen_text(app)
        assert "f" in [b.key for b in flow_screen.BINDINGS]
        await pilot.press("escape")
        assert app.screen is flow_screen


@ui_test
async def test_follow_says_why_when_there_is_no_stream() -> None:
    world = with_packetless_flows(make_world(120, 6))
    app, _link, _feed = build_app(world)
    icmp = next(f for f in world.flows if f.proto == PROTO_ICMP)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await open_flow(pilot, icmp)
        await pilot.press("f")
        await wait_until(pilot, lambda: any("only TCP and UDP" in t for t in toasts(app)))
        assert isinstance(app.screen, FlowScreen)
        # An error answer (the flow ended meanwhile) is shown on the follow screen.
        screen = FollowScreen(world.flows[0])
        await app.push_screen(screen)
        screen.post_message(StreamFollowed(FollowStream(world.flows[0].flow_id, None,
                                                        error="flow 1 has ended")))
        await wait_until(pilot, lambda: "cannot follow this flow: flow 1 has ended"
                         in screen_text(app))
        await pilot.press("h")
        await wait_until(pilot, lambda: any("no stream to show" in t for t in toasts(app)))


def test_udp_and_gaps_render_as_text_and_hex_without_raw_bytes() -> None:
    world = make_world(120, 6)
    from netmon.testing.fake_engine import fake_stream
    udp = next(f for f in world.flows if f.proto == PROTO_UDP)
    chunks = fake_stream(udp)
    text = stream_text(chunks).plain
    assert "[3 packets not kept]" in text and "query.example" in text
    assert not RAW.search(text)
    hexed = stream_hex(chunks).plain
    assert "00000000  12 34 01 00 00 01 71 75 65 72 79" in hexed
    assert not RAW.search(hexed)
    tcp = fake_stream(next(f for f in world.flows if f.proto == PROTO_TCP))
    # A cap on what is drawn: the rest is counted.
    capped = stream_text(tcp, limit=20).plain
    assert "more bytes not shown" in capped


@ui_test
async def test_w_writes_a_flows_and_a_clusters_packets_and_says_exactly_what() -> None:
    app, link, _feed = build_app()
    app.export_dir = "/tmp/netmon-export"
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        table = await clusters_shown(pilot)
        await pilot.press("down", "w")
        request = link.requests[-1]
        assert request == PacketExportRequest("/tmp/netmon-export",
                                              cluster_id=table.cursor_key)
        await wait_until(pilot, lambda: any("pcapng" in t for t in toasts(app)))
        assert re.fullmatch(r"wrote [\d,]+ packets of \d+ flows to /tmp/netmon-export/netmon-"
                            r"cluster\d+\.pcapng \([\d,]+ packets of these flows were not "
                            r"kept\)", toasts(app)[-1])
        screen = await open_flows(pilot)
        await pilot.press("w")
        assert link.requests[-1] == PacketExportRequest("/tmp/netmon-export",
                                                        cluster_id=screen.cluster.cluster_id)
        await pilot.press("enter")
        flow_screen = app.screen
        assert isinstance(flow_screen, FlowScreen)
        await pilot.press("w")
        assert link.requests[-1] == PacketExportRequest("/tmp/netmon-export",
                                                        flow_id=flow_screen.flow.flow_id)
        await wait_until(pilot, lambda: f"netmon-flow{flow_screen.flow.flow_id}.pcapng"
                         in toasts(app)[-1])
        # All flows (not one cluster): w says what it can do instead.
        await pilot.press("escape", "escape")
        await pilot.press("slash", *"port 53", "enter")
        await pilot.press("w")
        await wait_until(pilot, lambda: "not one cluster" in toasts(app)[-1])


def test_the_written_message_counts_exactly() -> None:
    assert packets_written(PacketExportResult("/x/a.pcapng", 64, 3, 120)) == (
        "wrote 64 packets of 3 flows to /x/a.pcapng (120 packets of these flows were not "
        "kept)")
    assert packets_written(PacketExportResult("/x/b.pcapng", 1, 1, 0)) == (
        "wrote 1 packet of 1 flow to /x/b.pcapng")
    assert packets_written(PacketExportResult("/x/\x1b[2Jc.pcapng", 2, 1, 1)) == (
        "wrote 2 packets of 1 flow to /x/\\x1b[2Jc.pcapng (1 packet of this flow was not "
        "kept)")


@ui_test
async def test_a_listener_flow_shows_its_first_bytes_and_no_key_fails_silently() -> None:
    world = with_packetless_flows(make_world(120, 6))
    listener = next(f for f in world.flows if f.listener)
    app, link, _feed = build_app(world)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_flow(pilot, listener)
        await wait_until(pilot, lambda: "no packets exist for this flow" in screen_text(app))
        text = screen_text(app)
        assert "a connection to netmon's listener" in text
        assert "first bytes: http" in text
        assert "GET /\\x1b[2J HTTP/1.1\\r\\nHost: x\\r\\n" in text  # escaped, as it came
        assert "Enter dissects" not in text and "⏎ Open" not in text
        assert not screen.query_one(PacketsTable).display
        asked = len(link.requests)
        for n, key in enumerate(("enter", "f", "w"), 1):
            await pilot.press(key)
            await wait_until(pilot, lambda n=n: sum("measured from the socket" in t
                                                    for t in toasts(app)) == n)
            assert app.screen is screen, key
        # None of them went to the engine as a question it cannot answer.
        assert not any(isinstance(r, PacketExportRequest) or
                       (isinstance(r, tuple) and r[0] in ("follow", "dissect"))
                       for r in link.requests[asked:])


@ui_test
async def test_an_exported_record_flow_says_no_packets_exist() -> None:
    world = with_packetless_flows(make_world(120, 6))
    exported = next(f for f in world.flows if f.exported)
    app, _link, _feed = build_app(world)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await open_flow(pilot, exported)
        await wait_until(pilot, lambda: "no packets exist for this flow" in screen_text(app))
        assert "an exported flow record from exporter 127.0.0.1" in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("NetFlow/IPFIX" in t for t in toasts(app)))


@ui_test
async def test_enter_on_a_flow_with_no_packet_kept_says_so() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = await open_flow(pilot, make_world(120, 6).flows[0])
        link.hold = True  # no packet list arrives: the table stays empty
        table = screen.query_one(PacketsTable)
        table.set_rows([])
        table.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("nothing to dissect" in t for t in toasts(app)))


@ui_test
async def test_help_lists_f_and_w() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await clusters_shown(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "follow its TCP/UDP stream" in text and "write kept packets as a pcapng" in text
