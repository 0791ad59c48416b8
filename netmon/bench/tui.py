"""``python -m netmon.bench tui``: does the screen slow ingest down? A replay's packets/s
with the TUI running in a real terminal (tmux) against the same replay headless,
measured in the same run, as a ratio (target >= 0.8x).

Runs on the main thread; both netmons are child processes. The headless run's end is
its exit; the TUI run's end is the moment its header says the input is finished
(polled from tmux every 50 ms), after which it is sent ``q``. Both times include
start-up, so they are compared like for like.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def time_headless(path: str, extra: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netmon", "--json", "-r", path, *extra],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def time_tui(path: str, extra: list[str], width: int, height: int,
             timeout: float = 600.0) -> float:
    name = f"netmon-bench-{uuid.uuid4().hex[:8]}"
    cmd = " ".join([sys.executable, "-m", "netmon", "-r", path, *extra])
    t0 = time.perf_counter()
    _tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
          f"{cmd}; sleep 5")
    try:
        while time.perf_counter() - t0 < timeout:
            screen = _tmux("capture-pane", "-p", "-t", name)
            if " finished " in screen.splitlines()[0] if screen.strip() else False:
                elapsed = time.perf_counter() - t0
                _tmux("send-keys", "-t", name, "q")
                return elapsed
            time.sleep(0.05)
        raise SystemExit("bench: the TUI never reported the end of the input")
    finally:
        time.sleep(1.0)
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench tui")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each (best kept)")
    parser.add_argument("--size", default="160x50", help="terminal size for the TUI")
    parser.add_argument("--capture", help="replay this file instead of a synthetic one")
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        print("bench: tmux is needed (apt-get install tmux)")
        return 77
    width, height = (int(v) for v in args.size.split("x"))
    workdir = tempfile.mkdtemp(prefix="netmon-bench-tui-")
    try:
        path = args.capture
        if not path:
            from netmon.testing.synth import synthetic_pcap

            path = os.path.join(workdir, "synthetic.pcap")
            synthetic_pcap(path, args.packets, args.flows, seed=3)
        packets = args.packets
        print(f"replaying {path} ({packets:,} packets), {args.repeat} runs each, best kept")
        headless = min(time_headless(path, []) for _ in range(args.repeat))
        tui = min(time_tui(path, [], width, height) for _ in range(args.repeat))
        print(f"headless replay: {packets / headless:,.0f} pkt/s ({headless:.2f} s)")
        print(f"TUI replay at {width}x{height}: {packets / tui:,.0f} pkt/s ({tui:.2f} s)")
        ratio = headless / tui
        print(f"ratio TUI / headless = {ratio:.2f}x (target >= 0.8x)")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
