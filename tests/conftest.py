"""Shared test helpers: where the real captures are, and how to run netmon."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT.parent / "shared" / "captures"


def captures_dir() -> Path:
    """The shared real captures, or skip the test with the reason."""
    if not CAPTURES.is_dir():
        pytest.skip(f"real captures not found at {CAPTURES} (the ../shared folder is absent)")
    return CAPTURES


def capture_files() -> list[str]:
    """Names of the shared captures (empty when ../shared is absent)."""
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir()
                  if p.suffix in (".pcap", ".pcapng"))


def netmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "netmon", *args]


def run_netmon(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the netmon command to completion, capturing text output."""
    env = dict(os.environ)
    env.update(kw.pop("env", {}) or {})
    return subprocess.run(netmon_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, **kw)


def need_capture() -> None:
    """Skip unless live capture on lo is possible here."""
    if shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed (apt-get install tshark)")
    probe = subprocess.run(["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w",
                            "/dev/null", "-q"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0 and "permission" in probe.stderr.lower():
        pytest.skip("no permission to capture on lo (run as root or in the wireshark group)")
