"""Faults around the screen: a busy UI thread does not cost ingest packets, and an
exception in the UI still stops the capture process."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from netmon.core.settings import Settings
from netmon.engine.engine import Engine
from netmon.sources.capture import CaptureSpec, LiveCapture
from netmon.testing.ports import free_port
from tests.conftest import ROOT, need_capture

pytestmark = pytest.mark.live


def wait_source_running(snaps: queue.SimpleQueue, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = snaps.get(timeout=timeout)
        if snap.sources and snap.sources[0].state == "running":
            return
    raise AssertionError("capture never started")


def test_a_busy_ui_thread_costs_ingest_no_packets() -> None:
    """The main thread spins for 1.5 s in pure Python (the GIL is busy) while 3000
    datagrams arrive; the reactor thread must still count every one."""
    need_capture()
    port = free_port(socket.SOCK_DGRAM)
    snaps: queue.SimpleQueue = queue.SimpleQueue()
    engine = Engine(Settings(tick=0.25, cluster=False),
                    [LiveCapture(CaptureSpec("lo", f"udp port {port}"))], snaps.put)
    engine.start()
    try:
        wait_source_running(snaps)
        sender = subprocess.Popen([sys.executable, "-c", (
            "import socket, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(3000):\n"
            f"    s.sendto(b'x' * 100, ('127.0.0.1', {port}))\n"
            "    time.sleep(0.0003) if i % 10 == 0 else None\n")])
        busy_until = time.monotonic() + 1.5
        spins = 0
        while time.monotonic() < busy_until:  # the "UI" hogging the interpreter
            spins += sum(range(200))
        sender.wait(timeout=30)
        time.sleep(1.0)
    finally:
        engine.stop("test over")
        assert engine.join(20)
    final = None
    while not snaps.empty():
        final = snaps.get()
    assert final is not None and final.finished
    assert final.totals.ip_packets == 3000
    assert sum(s.dropped for s in final.sources) == 0


def test_an_exception_in_the_ui_leaves_no_capture_process(tmp_path) -> None:
    need_capture()
    script = tmp_path / "crash_ui.py"
    script.write_text(
        "import sys\n"
        "from netmon.app import cli\n"
        "from netmon.ui.app import NetmonApp\n"
        "def boom(self, message):\n"
        "    raise RuntimeError('UI bug')\n"
        "NetmonApp.on_snapshot_published = boom  # the first snapshot crashes the UI\n"
        "sys.exit(cli.main(['-i', 'lo', '-f', 'udp port 9']))\n")
    # The UI needs a terminal: run it under `script` for a pseudo-terminal.
    proc = subprocess.Popen(["script", "-qec", f"{sys.executable} {script}", "/dev/null"],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen: set[int] = set()

    def watch() -> None:
        for _ in range(200):
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    if child.name() == "dumpcap":
                        seen.add(child.pid)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
    watcher.join()
    assert b"UI bug" in out  # the crash was reported, not hidden
    time.sleep(0.5)
    alive = [p for p in seen if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert seen, "dumpcap never started"
    assert not alive, f"dumpcap survived the UI's exception: {alive}"
