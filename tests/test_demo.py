"""`netmon demo` and `netmon interfaces` as a newcomer runs them."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from netmon.demo.drivers import capture_permitted
from tests.conftest import run_netmon

pytestmark = pytest.mark.slow


def test_demo_shows_five_kinds_of_traffic_within_30_s_and_stops_clean() -> None:
    before = {p.pid for p in psutil.process_iter()}
    t0 = time.monotonic()
    proc = run_netmon("demo", "--json", "--duration", "30", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60
    snaps = [json.loads(line) for line in proc.stdout.splitlines()]
    final = snaps[-1]
    assert any("demo" in s["name"] for s in final["sources"])
    labels = {c["label"] for c in final["clusters"]}
    assert len(final["clusters"]) >= 5, labels
    if capture_permitted():
        wanted = ("bulk download", "request-response", "SYN-only probes", "interactive")
        assert all(any(w in label for label in labels) for w in wanted), labels
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["name"]) if p.pid not in before
            and p.info["name"] in ("dumpcap", "tshark")]
    assert not left, f"left running: {left}"


def test_interfaces_lists_what_can_be_captured() -> None:
    proc = run_netmon("interfaces", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    lo = [ln for ln in lines if ln.split()[0] == "lo"]
    assert lo, proc.stdout
    status = "can capture" if capture_permitted() else "no permission"
    assert status in lo[0]


def test_demo_without_capture_rights_uses_the_listener(tmp_path) -> None:
    # A capture tool that cannot run stands for "no capture permission here".
    fake = tmp_path / "dumpcap"
    fake.write_text("#!/bin/sh\necho 'dumpcap: You do not have permission' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_netmon("demo", "--json", "--duration", "20", "--capture-tool", str(fake),
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    assert any(s["name"].startswith("demo: listen 127.0.0.1:") for s in final["sources"])
    assert final["flows_seen"] >= 50
    assert len(final["clusters"]) >= 3, [c["label"] for c in final["clusters"]]
    kinds = {h["label"] for h in final["hosts"]}
    assert len(kinds) >= 2, kinds
