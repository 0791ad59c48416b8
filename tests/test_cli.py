"""The netmon command end to end: outputs, stop conditions and one-line errors.

Every error case checks the exit code, that stderr's last line is one clear line
naming the problem, and that no traceback reached the user.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapwrite import PcapWriter
from netmon.testing.frames import ethernet, ipv4, udp
from tests.conftest import ROOT, captures_dir, need_capture, netmon_cmd, run_netmon


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    line = last_line(proc)
    assert line.startswith("netmon: "), proc.stderr
    for needle in needles:
        assert needle in line, line


def json_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def small_pcap(path: Path, packets: int = 50, start: float = 1_700_000_000.0,
               gap: float = 0.001) -> Path:
    with path.open("wb") as fh:
        w = PcapWriter(fh, LINKTYPE_ETHERNET)
        for i in range(packets):
            frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000 + i % 5, 53, b"q" * 20)),
                             0x0800)
            w.write(start + i * gap, frame)
    return path


# ------------------------------------------------------------------ basics
def test_version_and_help_with_examples() -> None:
    proc = run_netmon("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("netmon ")
    proc = run_netmon("--help")
    assert proc.returncode == 0
    assert "examples:" in proc.stdout and "netmon --headless -r trace.pcap" in proc.stdout
    assert "exit codes:" in proc.stdout


def test_json_snapshots_each_tick_and_final(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap")
    proc = run_netmon("--json", "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    snaps = json_lines(proc)
    final = snaps[-1]
    assert final["finished"] is True
    assert final["packets"] == 50 and final["flows_seen"] == 5
    assert final["bytes"] == 50 * (14 + 20 + 8 + 20)
    assert isinstance(final["clusters"], list)
    assert len(final["top_flows"]) == 5
    assert {"addr_a", "port_a", "addr_b", "port_b", "pkts_a2b"} <= set(final["top_flows"][0])
    # the human summary goes to stderr, not into the JSON stream
    assert "pkt/s" in proc.stderr and "pkt/s" not in proc.stdout


def test_flows_out_schema_and_atomic_write(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap")
    out = tmp_path / "flows.jsonl"
    proc = run_netmon("--headless", "-r", str(pcap), "--flows-out", str(out))
    assert proc.returncode == 0, proc.stderr
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(flows) == 5
    keys = {"proto", "addr_a", "port_a", "addr_b", "port_b", "pkts_a2b", "bytes_a2b",
            "pkts_b2a", "bytes_b2a", "first_epoch", "last_epoch", "cluster_id",
            "cluster_label", "outlier"}
    assert all(keys <= set(f) for f in flows)
    assert sum(f["pkts_a2b"] + f["pkts_b2a"] for f in flows) == 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".netmon-flows-")]


def test_count_stops_after_exactly_n_packets(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap", packets=500)
    proc = run_netmon("--json", "-r", str(pcap), "-c", "123")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc)[-1]["ip_packets"] == 123


def test_speed_paces_replay_by_capture_time(tmp_path: Path) -> None:
    # 41 packets over 2 s of capture time: 4x speed takes ~0.5 s, not ~0 s. Measured by
    # the engine's own clock ("wall_elapsed" since ingest began), not around the process:
    # interpreter start-up on a loaded machine varies by more than the pacing itself.
    # --no-cluster: the final clustering (and scikit-learn's import) is not pacing.
    pcap = small_pcap(tmp_path / "t.pcap", packets=41, gap=0.05)
    proc = run_netmon("--json", "--no-cluster", "-r", str(pcap), "--speed", "4")
    fast = run_netmon("--json", "--no-cluster", "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    paced = json_lines(proc)[-1]
    assert paced["packets"] == 41
    assert paced["wall_elapsed"] >= 0.45, paced["wall_elapsed"]  # never runs early
    assert json_lines(fast)[-1]["wall_elapsed"] < paced["wall_elapsed"] - 0.35
    # Both read on the capture's clock: 40 gaps of 50 ms, whatever the pace.
    assert paced["clock"] == json_lines(fast)[-1]["clock"] == "capture"
    assert paced["elapsed"] == json_lines(fast)[-1]["elapsed"] == 2.0


def test_duration_stops_a_replay_that_would_run_longer(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap", packets=100, gap=1.0)  # 99 s of capture
    t0 = time.monotonic()
    proc = run_netmon("--json", "-r", str(pcap), "--speed", "1", "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    final = json_lines(proc)[-1]
    assert final["finished"] and 0 < final["packets"] < 100


def test_stdin_pipe_and_stdin_file_and_gzip_agree(tmp_path: Path) -> None:
    src = captures_dir() / "01_http_espn.pcapng"
    by_file = json_lines(run_netmon("--json", "-r", str(src)))[-1]
    with src.open("rb") as fh:
        by_redirect = json_lines(run_netmon("--json", "-r", "-", stdin=fh))[-1]
    cat = subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE)
    by_pipe = json_lines(run_netmon("--json", "-r", "-", stdin=cat.stdout))[-1]
    cat.wait()
    gz = tmp_path / "x.pcapng.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    by_gzip = json_lines(run_netmon("--json", "-r", str(gz)))[-1]
    for snap in (by_redirect, by_pipe, by_gzip):
        for key in ("packets", "bytes", "flows_seen", "ip_packets"):
            assert snap[key] == by_file[key], key
    assert by_file["packets"] == 956


def test_truncated_capture_keeps_every_packet_and_warns() -> None:
    src = captures_dir() / "14_truncated_midpacket_1kxun.pcap"
    proc = run_netmon("--json", "-r", str(src))
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc)[-1]["packets"] == 1172
    assert "warning" in proc.stderr and "cut short in the middle of a packet" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_record_header_is_skipped_with_resync(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap", packets=100)
    data = bytearray(pcap.read_bytes())
    rec = 16 + 14 + 20 + 8 + 20
    bad = 24 + 40 * rec  # the 41st record header: give it an impossible length
    data[bad + 8:bad + 12] = (10**9).to_bytes(4, "little")
    pcap.write_bytes(bytes(data))
    proc = run_netmon("--json", "-r", str(pcap))
    assert "Traceback" not in proc.stderr
    final = json_lines(proc)[-1]
    assert final["ip_packets"] == 99  # all but the damaged one
    assert final["skipped_reasons"].get("corrupt-record-header") == 1


def test_json_to_a_closed_pipe_exits_quietly() -> None:
    src = captures_dir() / "04_mixed_lan_android_1kxun.pcap"
    proc = subprocess.run(f"{' '.join(netmon_cmd())} --json --speed 50 -r {src} | head -c 10",
                          shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# ------------------------------------------------------------------ errors
def test_missing_file(tmp_path: Path) -> None:
    assert_clean_error(run_netmon("--headless", "-r", str(tmp_path / "nope.pcap")), 7,
                       "no such file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert_clean_error(run_netmon("--headless", "-r", str(tmp_path)), 7, "is a directory")


def test_unreadable_file(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap")
    pcap.chmod(0)
    try:
        if os.access(pcap, os.R_OK):
            # root reads anything: prove the path with a file the kernel refuses instead
            pytest.skip("running as root: every file is readable")
        assert_clean_error(run_netmon("--headless", "-r", str(pcap)), 7, "permission denied")
    finally:
        pcap.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_not_a_capture(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a pcap\n" * 20)
    assert_clean_error(run_netmon("--headless", "-r", str(text)), 7, "not a pcap or pcapng")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert_clean_error(run_netmon("--headless", "-r", str(empty)), 7, "empty")


def test_stdin_terminal_or_closed_is_refused() -> None:
    proc = run_netmon("--headless", "-r", "-", stdin=subprocess.DEVNULL)
    assert_clean_error(proc, 7)


@pytest.mark.parametrize("args,needle", [
    (["--speed", "fast"], "--speed"),
    (["--max-flows", "0"], "max-flows"),
    (["--tick", "0"], "tick"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["-r", "x.pcap", "-i", "lo"], "either -r FILE or -i IFACE"),
])
def test_invalid_flags(args: list[str], needle: str) -> None:
    assert_clean_error(run_netmon("--headless", *args), 2, needle)


def test_invalid_environment_value_names_the_variable() -> None:
    proc = run_netmon("--headless", "-r", "x.pcap", env={"NETMON_MAX_FLOWS": "lots"})
    assert_clean_error(proc, 2, "NETMON_MAX_FLOWS")


def test_flows_out_in_missing_directory(tmp_path: Path) -> None:
    pcap = small_pcap(tmp_path / "t.pcap")
    proc = run_netmon("--headless", "-r", str(pcap), "--flows-out",
                      str(tmp_path / "no" / "such" / "dir" / "f.jsonl"))
    assert_clean_error(proc, 7, "cannot write")


def test_capture_tool_missing() -> None:
    venv_bin = str(Path(os.sys.executable).parent)
    proc = run_netmon("--headless", "-i", "lo", env={"PATH": venv_bin})
    assert_clean_error(proc, 3, "not found", "apt-get install -y tshark")


def test_unknown_interface() -> None:
    need_capture()
    assert_clean_error(run_netmon("--headless", "-i", "nosuch0"), 5, "unknown interface",
                       "nosuch0")


def test_invalid_bpf_filter() -> None:
    need_capture()
    assert_clean_error(run_netmon("--headless", "-i", "lo", "-f", "tcp port ((("), 6,
                       "invalid capture filter")


def test_no_capture_permission(tmp_path: Path) -> None:
    """dumpcap run as an unprivileged user gives its real permission error."""
    need_capture()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop privileges")
    if os.geteuid() != 0:
        proc = run_netmon("--headless", "-i", "lo", "--duration", "3")
        if proc.returncode == 0:
            pytest.skip("this user may capture; cannot provoke a permission error")
        assert_clean_error(proc, 4, "no permission")
        return
    wrapper = tmp_path / "dumpcap-as-nobody"
    wrapper.write_text(f"#!/bin/sh\nexec {setpriv} --reuid=65534 --regid=65534 "
                       f"--clear-groups {shutil.which('dumpcap')} \"$@\"\n")
    wrapper.chmod(0o755)
    proc = run_netmon("--headless", "-i", "lo", "--capture-tool", str(wrapper),
                      "--duration", "5")
    assert_clean_error(proc, 4, "no permission to capture", "wireshark")
