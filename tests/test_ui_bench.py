"""The UI benchmark runs end to end (small numbers) and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_ui_bench_reports_tick_cost_and_key_latency() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netmon.bench.ui", "--flows", "3000", "--clusters", "10",
         "--seconds", "1.5", "--size", "100x30", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=True).stdout
    result = json.loads(out)
    assert "error" not in result
    for screen in ("main_screen", "flows_screen"):
        assert result[screen]["ticks"] >= 2
        assert 0 < result[screen]["cpu_ms_per_tick"] < 1000
    assert set(result["keys_ms"]) >= {"down (cursor)", "enter (cluster -> flows)",
                                      "enter (flow -> packets)", "escape (to main)"}
    assert all(ms > 0 for ms in result["keys_ms"].values())
    assert result["terminal_bytes"] > 1000
