"""The TUI in a real terminal (tmux, 80x24): clusters show, Enter drills down to a
packet's dissection, Esc comes back, q quits and the process is gone.

Runs the UI on its made-up network (``python -m netmon.testing.ui_demo``); the replay of a
real capture through the CLI drives the same keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class Tmux:
    """One detached tmux session running a command."""

    def __init__(self, command: list[str], width: int = 80, height: int = 24) -> None:
        self.name = f"netmon-test-{uuid.uuid4().hex[:8]}"
        cmd = " ".join(f"'{c}'" for c in command)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), "-c", str(ROOT),
                        f"{cmd}; echo netmon-exit-$?; sleep 30"], check=True)
        subprocess.run(["tmux", "set-option", "-t", self.name, "status", "off"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never matched; it shows:\n{text}")
            time.sleep(0.1)

    def pane_pid(self) -> int:
        out = subprocess.run(["tmux", "list-panes", "-t", self.name, "-F", "#{pane_pid}"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_drill_down_and_quit_in_a_real_terminal() -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    term = Tmux([sys.executable, "-m", "netmon.testing.ui_demo", "--clusters", "8"])
    try:
        shell = term.pane_pid()
        # (the chart's title comes with its first data, a tick after the table's rows)
        term.wait_for(lambda s: "TCP/443 bulk download" in s and "pkt/s" in s
                      and "busiest clusters" in s)
        app_pids = children(shell)
        assert app_pids, "the app is not running"

        term.keys("Enter")
        term.wait_for(lambda s: "initiator" in s and "responder" in s)
        term.keys("Enter")
        term.wait_for(lambda s: "packets kept" in s)
        term.keys("End", "Enter")
        screen = term.wait_for(lambda s: "Frame" in s and "Hypertext" in s)
        assert "\\x1b[2J" in screen  # packet bytes shown escaped, not obeyed

        term.keys("Escape")
        term.wait_for(lambda s: "packets kept" in s)
        term.keys("Escape")
        term.wait_for(lambda s: "initiator" in s)
        term.keys("Escape")
        term.wait_for(lambda s: "busiest clusters" in s)

        term.keys("q")
        term.wait_for(lambda s: "netmon-exit-0" in s)
        for pid in app_pids:
            assert subprocess.run(["ps", "-p", str(pid)], capture_output=True).returncode,\
                f"process {pid} is still running after q"
    finally:
        term.kill()


def test_sighup_ends_the_app_cleanly() -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    term = Tmux([sys.executable, "-m", "netmon.testing.ui_demo"])
    try:
        term.wait_for(lambda s: "busiest clusters" in s)
        (app_pid,) = children(term.pane_pid())
        os.kill(app_pid, signal.SIGHUP)  # as when the SSH connection drops
        term.wait_for(lambda s: "netmon-exit-129" in s)
        assert subprocess.run(["ps", "-p", str(app_pid)], capture_output=True).returncode
    finally:
        term.kill()
