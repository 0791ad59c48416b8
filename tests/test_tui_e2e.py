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
        screen = term.wait_for(lambda s: "recent packets" in s and "SYN" in s)
        term.keys("Enter")  # the first packet -> tshark's dissection
        screen = term.wait_for(lambda s: "Ethernet II" in s and "eth:ethertype:ip:tcp" in s
                               and "Frame 1" in s, timeout=40)
        term.keys("Escape")
        term.wait_for(lambda s: "recent packets" in s)
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
