"""netmon itself in a real terminal (tmux): replay a real capture, see its clusters,
drill down to one packet's dissection by tshark, come back, quit, and leave no
process behind. Live capture on lo in the TUI is covered too."""

from __future__ import annotations

import shutil
import sys
import time

import psutil
import pytest

from tests.conftest import captures_dir, need_capture
from tests.test_ui_tmux import Tmux, children

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def quit_and_check(term: Tmux, procs: list[psutil.Process]) -> None:
    """Press q; netmon must exit 0 and take every process it started with it."""
    term.keys("q")
    term.wait_for(lambda s: "netmon-exit-0" in s, timeout=20)
    time.sleep(0.5)
    alive = [p.pid for p in procs if p.is_running() and p.status() != "zombie"]
    assert not alive, f"processes left behind: {alive}"


def test_replay_drill_to_dissection_and_quit() -> None:
    if shutil.which("tmux") is None or shutil.which("tshark") is None:
        pytest.skip("tmux and tshark are needed")
    capture = captures_dir() / "01_http_espn.pcapng"
    term = Tmux([sys.executable, "-m", "netmon", "-r", str(capture)], 120, 40)
    try:
        shell = term.pane_pid()
        screen = term.wait_for(lambda s: "TCP/80" in s and "UDP/53" in s, timeout=30)
        assert "pkt/s" in screen and "flows" in screen
        assert children(shell), "netmon is not running"
        term.keys("Enter")  # the cluster under the cursor -> its flows
        screen = term.wait_for(lambda s: "› flows" in s and "TCP" in s)
        term.keys("Enter")  # the biggest flow -> its packets
        screen = term.wait_for(lambda s: "packets kept" in s and "SYN" in s)
        term.keys("Enter")  # the first packet -> tshark's tree and the frame's bytes
        screen = term.wait_for(lambda s: "Ethernet II" in s and "Frame 1" in s
                               and "Transmission Control Protocol" in s
                               and "0000  00 26 0b 31 07 33" in s, timeout=40)
        term.keys("Escape")
        term.wait_for(lambda s: "packets kept" in s)
        term.keys("Escape")
        term.wait_for(lambda s: "› flows" in s)
        term.keys("Escape")
        term.wait_for(lambda s: "behaviour" in s and "UDP/53" in s)
        procs = descendants(shell)
        quit_and_check(term, procs)
    finally:
        term.kill()


def test_live_capture_in_the_tui_quits_cleanly() -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is needed")
    need_capture()
    term = Tmux([sys.executable, "-m", "netmon", "-i", "lo", "-f", "udp port 9"], 100, 30)
    try:
        shell = term.pane_pid()
        term.wait_for(lambda s: "live lo" in s and "running" in s, timeout=30)
        procs = descendants(shell)
        assert any(p.name() == "dumpcap" for p in procs), "no dumpcap under netmon"
        quit_and_check(term, procs)
    finally:
        term.kill()


def test_collected_and_ssh_sources_in_the_tui(tmp_path) -> None:
    """A NetFlow collector and an SSH host side by side in a real terminal: the header
    lists both with their states, exported flows cluster, the flow screen says where
    a flow was seen; quitting leaves neither ssh nor the remote capture behind."""
    import socket

    from netmon.testing.nfexport import Flow, ipfix_datagrams
    from netmon.testing.ports import free_port
    from netmon.testing.sshd import Sshd, need_sshd

    if shutil.which("tmux") is None:
        pytest.skip("tmux is needed")
    need_sshd()
    need_capture()
    port = free_port(socket.SOCK_DGRAM)
    with Sshd(tmp_path) as sshd:
        opts = [a for o in sshd.client_options() for a in ("--ssh-option", o)]
        term = Tmux([sys.executable, "-m", "netmon", "--collect", f"127.0.0.1:{port}",
                     "--ssh", f"{sshd.user}@127.0.0.1:lo", *opts, "-f", "udp port 9"],
                    160, 40)
        try:
            shell = term.pane_pid()
            term.wait_for(lambda s: f"collect udp 127.0.0.1:{port} running" in s
                          and "ssh 127.0.0.1:lo running" in s, timeout=30)
            now = float(int(time.time()))
            flows = [Flow(f"10.0.0.{i % 200 + 1}", "10.9.9.9", 40000 + i, 443, 6, 12, 9000,
                          now - 5, now - 1, 0x1b) for i in range(300)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for d in ipfix_datagrams(flows, now=now):
                    s.sendto(d, ("127.0.0.1", port))
            term.wait_for(lambda s: "1 exporter, 300 records" in s and "TCP/443" in s,
                          timeout=30)
            term.keys("Enter")  # the cluster -> its flows
            # several sources: the flows list says where its flows were seen (one
            # place for every row: in the status line, not a column of one value)
            term.wait_for(lambda s: "flows 1-200 of 300" in s and "10.9.9.9:443" in s
                          and "seen at 127.0.0.1" in s)
            time.sleep(0.5)  # (the table takes focus once its rows are in)
            term.keys("Enter")  # a flow -> its screen
            screen = term.wait_for(lambda s: "seen at exporter 127.0.0.1" in s)
            assert "no per-packet detail" in screen and "no packets exist for this flow" in screen
            procs = descendants(shell)
            assert any(p.name() == "ssh" for p in procs)
            quit_and_check(term, procs)
            remote = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "dumpcap"
                      and p.status() != "zombie"]
            deadline = time.monotonic() + 8
            while remote and time.monotonic() < deadline:
                time.sleep(0.2)
                remote = [p for p in remote if p.is_running() and p.status() != "zombie"]
            assert not remote, "the remote capture outlived netmon"
        finally:
            term.kill()
