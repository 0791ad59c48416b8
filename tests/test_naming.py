"""Names in the product: the hot-path gates and readers (netmon.flows.naming), the name
columns, --flows-out, the filter language and the flows list.

Oracles: tshark's ``tls.handshake.extensions_server_name`` and ``tls.handshake.ja3`` per
TCP stream of every shared capture, and the QUIC SNI tshark decrypts in
``15_quic_firefox_google.pcap``, against ``netmon --json -r F --flows-out X`` run as a
user runs it. Hostile names come from captures built here (netmon.testing.frames and
netmon.testing.tlshello), through the real decoder, flow table and readers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from netmon.core.link import FlowQuery
from netmon.flows.filter import FilterError, compile_filter
from netmon.flows.naming import FlowNamer
from netmon.flows.selection import select_flows
from netmon.flows.table import FlowTable
from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.ingest.pcapwrite import PcapWriter, pcapng_epb, pcapng_idb, pcapng_shb
from netmon.names.tls import SNI_MAX
from netmon.testing.frames import ETHERTYPE_IPV4, ethernet, ipv4, tcp
from netmon.testing.tlshello import (
    client_hello,
    ext_alpn,
    ext_sni,
    ext_versions,
    tls_records,
)
from tests.conftest import ROOT, capture_files, captures_dir, netmon_cmd
from tests.ui_support import build_app, screen_text, ui_test, wait_until

SYN, ACK, PSH = 0x02, 0x10, 0x08


# --------------------------------------------------------------------------- helpers
def tls_flow(hello: bytes, *, sport: int = 40000, client: str = "10.0.0.2",
             server: str = "10.0.0.9", segments: tuple[int, ...] = (),
             vlans: tuple[int, ...] = ()) -> list[bytes]:
    """Ethernet frames of a TCP handshake, then ``hello`` (TLS records) from the client
    in segments of ``segments`` bytes (the rest in one), then the server's ACK."""
    def frame(src: str, dst: str, sp: int, dp: int, flags: int, payload: bytes = b"",
              seq: int = 0) -> bytes:
        return ethernet(ipv4(src, dst, 6, tcp(sp, dp, flags=flags, seq=seq, payload=payload)),
                        ETHERTYPE_IPV4, vlans=vlans)

    out = [frame(client, server, sport, 443, SYN), frame(server, client, 443, sport, SYN | ACK),
           frame(client, server, sport, 443, ACK)]
    pos, seq = 0, 1
    for n in (*segments, len(hello)):
        piece = hello[pos:pos + n]
        if piece:
            out.append(frame(client, server, sport, 443, PSH | ACK, piece, seq))
            pos += len(piece)
            seq += len(piece)
    out.append(frame(server, client, 443, sport, ACK))
    return out


def hello_for(name: bytes, alpn: tuple[bytes, ...] = (b"h2", b"http/1.1")) -> bytes:
    return tls_records(client_hello([0x1301, 0x1302, 0xC02F],
                                    [ext_sni(name), ext_alpn(*alpn), ext_versions(0x0304)]))


def write_pcap(path: Path, frames: list[bytes], *, pcapng: bool = False) -> Path:
    with open(path, "wb") as fh:
        if pcapng:
            fh.write(pcapng_shb() + pcapng_idb(LINKTYPE_ETHERNET))
            for i, f in enumerate(frames):
                fh.write(pcapng_epb(0, 1_700_000_000 + i * 0.001, f))
        else:
            w = PcapWriter(fh, LINKTYPE_ETHERNET)
            for i, f in enumerate(frames):
                w.write(1_700_000_000 + i * 0.001, f)
    return path


def named_table(path: Path, chunk: int = 1 << 20) -> tuple[FlowTable, FlowNamer]:
    """The real decoder, flow table and namer over ``path``, read ``chunk`` bytes at a
    time (small chunks make batches of a packet or two)."""
    table = FlowTable()
    namer = FlowNamer(table)
    dec = PcapStreamDecoder()
    data = path.read_bytes()
    for i in range(0, len(data), chunk):
        batch = dec.feed_batch(data[i:i + chunk])
        if len(batch):
            slots, lo_first, seq = table.add_batch(batch)
            namer.observe(batch, slots, lo_first, seq)
    return table, namer


def views(table: FlowTable) -> list:
    return table.views(table.live_slots())


# --------------------------------------------------------------------------- unit
@pytest.mark.parametrize("segments", [(), (1,), (3, 7, 100), (5, 1, 1, 1, 1, 40)])
@pytest.mark.parametrize("chunk", [1 << 20, 97])
def test_sni_alpn_ja_from_a_capture_split_any_way(tmp_path: Path, segments: tuple,
                                                  chunk: int) -> None:
    path = write_pcap(tmp_path / "t.pcap", tls_flow(hello_for(b"www.example.org"),
                                                    segments=segments))
    table, namer = named_table(path, chunk)
    (flow,) = views(table)
    assert (flow.server_name, flow.name_source, flow.app) == ("www.example.org", "sni", "h2")
    assert flow.ja4.startswith("t13d0303h2_") and len(flow.ja3) == 32
    assert namer.readers == 0  # done: the reader is gone


@pytest.mark.parametrize("how", ["vlan", "pcapng"])
def test_frames_off_the_fast_path_are_named_too(tmp_path: Path, how: str) -> None:
    frames = tls_flow(hello_for(b"slow.example"), segments=(10,),
                      vlans=(7,) if how == "vlan" else ())
    path = write_pcap(tmp_path / "t.pcap", frames, pcapng=how == "pcapng")
    table, namer = named_table(path)
    assert [f.server_name for f in views(table)] == ["slow.example"]
    assert namer.stats["per_frame"] > 0


def test_a_flow_that_starts_with_anything_else_is_decided_at_once(tmp_path: Path) -> None:
    frames = tls_flow(b"hello there\r\n" + hello_for(b"late.example"))
    table, namer = named_table(write_pcap(tmp_path / "t.pcap", frames))
    (flow,) = views(table)
    assert flow.server_name == "" and namer.readers == 0
    assert namer.stats["parsed"] == 0


def test_readers_go_with_their_flows_and_are_capped(tmp_path: Path, monkeypatch) -> None:
    hello = hello_for(b"x.example")
    frames = []
    for i in range(6):  # the hello's first half only: every reader waits for more
        frames += tls_flow(hello[:40], sport=41000 + i)
    table, namer = named_table(write_pcap(tmp_path / "t.pcap", frames))
    assert namer.readers == 6
    table.end_live()
    namer.tick(0.0)
    assert namer.readers == 0
    monkeypatch.setattr("netmon.flows.naming.MAX_READERS", 2)
    table, namer = named_table(write_pcap(tmp_path / "u.pcap", frames))
    assert namer.readers == 2 and namer.stats["readers_full"] == 4


def test_hostile_names_are_escaped_and_capped(tmp_path: Path) -> None:
    evil = b"\x1b]0;pwned\x07\x1b[2J\x00bad\xff\xfeutf8" + b"a" * 12000
    frames = tls_flow(hello_for(evil), sport=40001)
    frames += tls_flow(hello_for(b"\x1b[31mred\x1b[0m.example\x00"), sport=40002)
    # A 64 KB server name makes a ClientHello beyond what a reader keeps: no name.
    frames += tls_flow(hello_for(b"b" * 65000), sport=40003)
    table, _ = named_table(write_pcap(tmp_path / "t.pcap", frames))
    names = {f.port_a: f.server_name for f in views(table)}
    assert names[40003] == ""
    for port in (40001, 40002):
        name = names[port]
        assert 0 < len(name) <= SNI_MAX
        assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name), name
    assert names[40001].startswith("\\x1b]0;pwned\\x07\\x1b[2J\\x00bad\ufffd")
    assert names[40002] == "\\x1b[31mred\\x1b[0m.example\\x00"


# --------------------------------------------------------------------------- filter
def test_filter_on_names(tmp_path: Path) -> None:
    frames = tls_flow(hello_for(b"www.reddit.com"), sport=40001)
    frames += tls_flow(hello_for(b"i.redditmedia.com", alpn=(b"http/1.1",)), sport=40002)
    frames += tls_flow(hello_for(b"example.org"), sport=40003)
    table, _ = named_table(write_pcap(tmp_path / "t.pcap", frames))

    def ports(text: str) -> list[int]:
        slots, _ = select_flows(table, FlowQuery(limit=100, sort="port_a", descending=False),
                                compile_filter(text), paged=False)
        return sorted(f.port_a for f in table.views(slots))

    assert ports("name ~ reddit") == [40001, 40002]
    assert ports("name~REDDIT") == [40001, 40002]
    assert ports("name = www.reddit.com") == [40001]
    assert ports("name www.reddit") == [40001]
    assert ports("app = h2") == [40001, 40003]
    assert ports("app = http/1.1 or name = example.org") == [40002, 40003]
    assert ports("not name ~ reddit and port 443") == [40003]
    ja4 = table.views(table.live_slots())[0].ja4
    assert ports(f"ja4 = {ja4}") == [40001, 40003]
    assert ports("process = sshd") == []  # replays have no processes
    with pytest.raises(FilterError, match="needs a value"):
        compile_filter("name ~")
    with pytest.raises(FilterError, match="no capture-filter equivalent"):
        compile_filter("name ~ reddit").to_bpf()


# --------------------------------------------------------------------------- real captures
def _tshark(path: Path, *args: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    out = subprocess.run(["tshark", "-r", str(path), "-E", "occurrence=f", *args],
                         capture_output=True, text=True, check=False).stdout
    return [line.split("\t") for line in out.splitlines()]


@cache
def _flows_out(name: str, tmp: str) -> dict[tuple, list[dict]]:
    out = Path(tmp) / f"{name}.jsonl"
    subprocess.run(netmon_cmd("--json", "-r", str(captures_dir() / name), "--flows-out",
                              str(out)), cwd=ROOT, capture_output=True, check=True)
    flows: dict[tuple, list[dict]] = defaultdict(list)
    for line in out.read_text().splitlines():
        d = json.loads(line)
        flows[(d["proto"], frozenset({(d["addr_a"], d["port_a"]),
                                      (d["addr_b"], d["port_b"])}))].append(d)
    return flows


_TUPLE = ("-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst")


@pytest.mark.parametrize("name", capture_files() or ["none"])
def test_every_tls_sni_and_ja3_equals_tsharks(name: str, tmp_path_factory) -> None:
    path = captures_dir() / name
    rows = _tshark(path, "-Y", "tls.handshake.type==1 && tcp", "-T", "fields",
                   "-e", "tcp.stream", *_TUPLE, "-e", "tcp.srcport", "-e", "tcp.dstport",
                   "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.ja3")
    flows = _flows_out(name, str(tmp_path_factory.getbasetemp()))
    seen = set()
    checked = 0
    for stream, s4, d4, s6, d6, sp, dp, sni, ja3 in rows:
        if stream in seen:
            continue
        seen.add(stream)
        got = flows[(6, frozenset({(s4 or s6, int(sp)), (d4 or d6, int(dp))}))]
        assert got, f"{name}: no flow for tcp.stream {stream}"
        if sni:
            assert sni in [f["server_name"] for f in got], (name, stream)
            assert "sni" in [f["name_source"] for f in got]
            checked += 1
        assert ja3 in [f["ja3"] for f in got], (name, stream)
    # Pinned per capture, so a capture that loses its names fails loudly.
    expected = {"02_tls_firefox.pcap": 1, "03_ipv6_tls_reddit.pcap": 59,
                "04_mixed_lan_android_1kxun.pcap": 4, "14_truncated_midpacket_1kxun.pcap": 4}
    assert checked == expected.get(name, 0)


def test_quic_sni_equals_tsharks(tmp_path_factory) -> None:
    name = "15_quic_firefox_google.pcap"
    rows = _tshark(captures_dir() / name, "-Y", "tls.handshake.type==1 && udp", "-T",
                   "fields", *_TUPLE, "-e", "udp.srcport", "-e", "udp.dstport",
                   "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.ja3")
    assert rows, "tshark decrypts the Initial"
    flows = _flows_out(name, str(tmp_path_factory.getbasetemp()))
    for s4, d4, s6, d6, sp, dp, sni, ja3 in rows:
        (flow,) = flows[(17, frozenset({(s4 or s6, int(sp)), (d4 or d6, int(dp))}))]
        assert (flow["server_name"], flow["name_source"], flow["app"]) == (sni, "quic", "h3")
        assert flow["ja3"] == ja3 and flow["ja4"].startswith("q13d")


# --------------------------------------------------------------------------- screen
@ui_test
async def test_flows_list_shows_names_escaped_and_capped(tmp_path: Path) -> None:
    from dataclasses import replace

    from netmon.testing.fake_engine import make_world
    from netmon.ui.screens import FlowsScreen
    from netmon.ui.widgets import FlowsTable

    evil = b"\x1b]0;pwned\x07\x1b[2J" + b"z" * 3000 + b".tail"
    frames = tls_flow(hello_for(evil), sport=40001)
    frames += tls_flow(hello_for(b"www.reddit.com"), sport=40002)
    table, _ = named_table(write_pcap(tmp_path / "t.pcap", frames))
    named = {f.port_a: f for f in views(table)}
    world = make_world(40, 2)
    # Two flows of the world carry the names the real readers produced.
    flows = list(world.flows)
    flows[0] = replace(flows[0], server_name=named[40001].server_name, bytes_a2b=10**9)
    flows[1] = replace(flows[1], server_name=named[40002].server_name, bytes_a2b=10**8)
    app, _link, _feed = build_app(replace(world, flows=tuple(flows)))
    async with app.run_test(size=(120, 30)) as pilot:
        app.push_screen(FlowsScreen(None))
        await pilot.pause()
        table_w = app.screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: table_w.row_count > 0)
        text = screen_text(app)
        assert "www.reddit.com" in text
        assert "\x1b" not in text and "\\x1b]0;p" in text
        row = next(line for line in text.splitlines() if "\\x1b]0;" in line)
        # Capped twice: at SNI_MAX by the parser (".tail" is gone), to the column here.
        name = row.split("192.0.2.1:443", 1)[1].split(" 0 TCP/", 1)[0]  # the name cell
        assert len(row) <= 120 and name.count("…") == 2 and ".tail" not in row


# --------------------------------------------------------------------------- clusters
def test_sites_and_a_clusters_dominant_names() -> None:
    from netmon.cluster.members import MemberBook, site_of

    assert site_of("i.redd.it") == "redd.it" and site_of("www.bbc.co.uk") == "bbc.co.uk"
    assert site_of("localhost") == "localhost" and site_of("a..b") == "a..b"
    book = MemberBook()
    names = np.array(["www.reddit.com", "i.redditmedia.com", "old.reddit.com", "",
                      "example.org"], dtype=object)
    cols = {"port_b": np.array([443] * 5), "port_a": np.array([50000] * 5),
            "server_name": names, "named": names != ""}
    book.note(np.array([1, 1, 1, 1, 2]), cols, tick=1)
    assert book.facts(1, {}).names == ("reddit.com", "redditmedia.com")
    assert book.facts(2, {}).names == ("example.org",)
    book.forget(1)
    assert book.facts(1, {}).names == ()


def test_cluster_labels_name_the_sites_of_a_real_capture(tmp_path: Path) -> None:
    out = subprocess.run(netmon_cmd("--json", "-r", str(captures_dir() /
                                                          "03_ipv6_tls_reddit.pcap")),
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    labels = [c["label"] for c in json.loads(out.splitlines()[-1])["clusters"]]
    assert any("redditmedia.com" in label or "redditstatic.com" in label
               for label in labels), labels
    assert len(set(labels)) == len(labels)


@pytest.mark.parametrize("name", capture_files() or ["none"])
def test_every_http_host_equals_tsharks(name: str, tmp_path_factory) -> None:
    path = captures_dir() / name
    rows = _tshark(path, "-Y", "http.request", "-T", "fields", "-e", "tcp.stream", *_TUPLE,
                   "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "http.host")
    flows = _flows_out(name, str(tmp_path_factory.getbasetemp()))
    seen = set()
    checked = 0
    for stream, s4, d4, s6, d6, sp, dp, host in rows:
        if stream in seen or not host or not sp:
            continue
        seen.add(stream)
        got = flows[(6, frozenset({(s4 or s6, int(sp)), (d4 or d6, int(dp))}))]
        assert host in [f["server_name"] for f in got], (name, stream, host)
        assert {f["name_source"] for f in got} & {"http", "sni"}
        checked += 1
    expected = {"01_http_espn.pcapng": 25, "04_mixed_lan_android_1kxun.pcap": 86,
                "05_mixed_services_std_ports.pcap": 2, "10_vlan_mpls_mixed.pcap": 1,
                "11_vlan_tuple_collisions.pcap": 1, "13_nflog_http.pcap": 1,
                "14_truncated_midpacket_1kxun.pcap": 41}
    assert checked == expected.get(name, 0)


def test_ssh_software_equals_tsharks_banners(tmp_path_factory) -> None:
    name = "07_ssh_bruteforce_sshguess.pcap"
    rows = _tshark(captures_dir() / name, "-Y", "ssh.protocol", "-T", "fields", *_TUPLE,
                   "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "ssh.protocol")
    flows = _flows_out(name, str(tmp_path_factory.getbasetemp()))
    banners: dict[frozenset, dict[int, str]] = defaultdict(dict)
    for _s4, _d4, _s6, _d6, sp, dp, proto in rows:  # one client and server
        software = proto.split("-", 2)[2].split(" ")[0]
        banners[frozenset({int(sp), int(dp)})][int(sp)] = software
    assert len(banners) == 11
    for (_, ends), (flow,) in ((k, v) for k, v in flows.items() if k[0] == 6):
        pair = banners[frozenset(p for _, p in ends)]
        client = pair[flow["port_a"]]
        server = pair[flow["port_b"]]
        assert (flow["software"], flow["app"]) == (f"{client} -> {server}", "ssh")


def test_a_flow_is_named_by_the_dns_answer_before_it(tmp_path_factory) -> None:
    """05: an SSH connection to 141.142.192.39 right after an A answer for it (the
    question osage.localdomain, through a CNAME); a PTR answer after the connection
    started names the address differently and must not rename it."""
    name = "05_mixed_services_std_ports.pcap"
    rows = _tshark(captures_dir() / name, "-Y", "dns.flags.response==1 && dns.a", "-T",
                   "fields", "-e", "frame.time_epoch", "-e", "dns.qry.name", "-e", "dns.a")
    flows = _flows_out(name, str(tmp_path_factory.getbasetemp()))
    named = [f for fl in flows.values() for f in fl if f["name_source"] == "dns"]
    assert named
    for flow in named:
        before = [q for t, q, a in rows
                  if flow["addr_b"] in a.split(",") and float(t) < flow["first_epoch"]]
        assert before and flow["server_name"] == before[-1]
    assert [f["server_name"] for f in named] == ["osage.localdomain"]
