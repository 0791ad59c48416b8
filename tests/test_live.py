"""Live capture on the loopback interface with real Twisted servers and clients.

Traffic goes only to 127.0.0.1 on ephemeral ports, bounded in count and time. The
``netmon`` command captures it through dumpcap with a BPF filter; the counts it
writes must match what the clients sent, and no capture process may outlive
netmon however it is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from netmon.testing.ports import free_port
from tests.conftest import ROOT, need_capture, netmon_cmd

pytestmark = pytest.mark.live


def start_netmon(*args: str) -> subprocess.Popen:
    return subprocess.Popen(netmon_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_running(proc: subprocess.Popen, timeout: float = 15.0) -> dict:
    """Read --json snapshots until the capture source reports it is running."""
    return read_until(proc, lambda s: bool(s["sources"]) and s["sources"][0]["state"] == "running",
                      timeout)


def capture_children(proc: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children(recursive=True)
            if c.name() in ("dumpcap", "tshark", "setpriv")]


def assert_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert not alive, f"capture processes survived netmon: {alive}"


def test_live_capture_counts_real_loopback_traffic(tmp_path: Path) -> None:
    need_capture()
    tcp_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    flows_out = tmp_path / "flows.jsonl"
    bpf = f"tcp port {tcp_port} or udp port {udp_port}"
    proc = start_netmon("--json", "-i", "lo", "-f", bpf, "--flows-out", str(flows_out),
                        "--duration", "40")
    try:
        wait_running(proc)
        conns, dgrams = 12, 30
        traffic = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "loopback_traffic.py"), str(tcp_port),
             str(udp_port), str(conns), str(dgrams)],
            capture_output=True, text=True, timeout=30, check=True)
        sent = json.loads(traffic.stdout)
        assert sent["tcp_conns"] == conns and sent["udp_replies"] == dgrams
        time.sleep(1.5)  # let the last packets reach netmon through dumpcap
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    flows = [json.loads(line) for line in flows_out.read_text().splitlines()]
    tcp = [f for f in flows if f["proto"] == 6]
    udp = [f for f in flows if f["proto"] == 17]
    assert len(tcp) == conns
    for f in tcp:
        # The client opened each connection: it is the initiator, the server is b.
        assert f["port_b"] == tcp_port and f["addr_a"] == "127.0.0.1"
        assert f["syn"] == 1 and f["synack"] == 1 and f["fin"] >= 2
        # 2,000 payload bytes each way, in frames of at least 54 bytes of headers.
        assert f["bytes_a2b"] >= 2000 + 54 * f["pkts_a2b"] - 54
        assert f["bytes_b2a"] >= 2000
    assert len(udp) == 1
    (u,) = udp
    assert (u["port_a"], u["port_b"]) == (sent["udp_client_port"], udp_port)
    frame = 14 + 20 + 8 + sent["udp_payload"]  # Ethernet (lo) + IPv4 + UDP + payload
    assert (u["pkts_a2b"], u["bytes_a2b"]) == (dgrams, dgrams * frame)
    assert (u["pkts_b2a"], u["bytes_b2a"]) == (dgrams, dgrams * frame)
    assert "Traceback" not in err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 0),
                                      (signal.SIGTERM, 128 + signal.SIGTERM),
                                      (signal.SIGHUP, 128 + signal.SIGHUP)])
def test_no_capture_process_survives_a_signal(tmp_path: Path, sig: int, code: int) -> None:
    need_capture()
    flows_out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "-i", "lo", "-f", f"udp port {free_port()}",
                        "--flows-out", str(flows_out))
    wait_running(proc)
    children = [c.pid for c in capture_children(proc)]
    assert children, "netmon started no capture process"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert flows_out.exists(), "flows were not written on the signal"
    assert "Traceback" not in err
    assert_gone(children)


def test_no_capture_process_survives_sigkill() -> None:
    """Even a netmon that cannot clean up (SIGKILL) takes its dumpcap with it."""
    need_capture()
    proc = start_netmon("--json", "-i", "lo", "-f", f"udp port {free_port()}")
    wait_running(proc)
    children = [c.pid for c in capture_children(proc)]
    assert children
    proc.kill()
    proc.wait(timeout=10)
    assert_gone(children)


def read_until(proc: subprocess.Popen, predicate, timeout: float = 20.0) -> dict:
    """Read --json snapshots until one satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        snap = json.loads(line)
        if predicate(snap):
            return snap
    proc.kill()
    raise AssertionError(f"no such snapshot: {proc.stderr.read()[-2000:]}")


def send_udp(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"m" * 50, ("127.0.0.1", port))
            time.sleep(0.002)


def test_capture_process_killed_midstream_restarts_and_keeps_counts(tmp_path: Path) -> None:
    need_capture()
    port = free_port(socket.SOCK_DGRAM)
    flows_out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "-i", "lo", "-f", f"udp port {port}",
                        "--flows-out", str(flows_out), "--duration", "60")
    try:
        wait_running(proc)
        send_udp(port, 10)
        read_until(proc, lambda s: s["ip_packets"] >= 10)
        first = [c.pid for c in capture_children(proc)]
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        snap = read_until(proc, lambda s: s["sources"][0]["state"] == "restarting")
        assert "killed by signal 9" in snap["sources"][0]["detail"]
        assert snap["ip_packets"] >= 10  # nothing counted is lost
        snap = read_until(proc, lambda s: s["sources"][0]["state"] == "running")
        assert "restarted 1x" in snap["sources"][0]["detail"]
        second = [c.pid for c in capture_children(proc)]
        assert second and not set(second) & set(first)
        send_udp(port, 10)
        read_until(proc, lambda s: s["ip_packets"] >= 20)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    flows = [json.loads(line) for line in flows_out.read_text().splitlines()]
    assert sum(f["pkts_a2b"] + f["pkts_b2a"] for f in flows) == 20
    assert "Traceback" not in err


def test_stop_while_waiting_to_restart_ends_cleanly(tmp_path: Path) -> None:
    need_capture()
    port = free_port(socket.SOCK_DGRAM)
    proc = start_netmon("--json", "-i", "lo", "-f", f"udp port {port}")
    wait_running(proc)
    for child in capture_children(proc):
        os.kill(child.pid, signal.SIGKILL)
    read_until(proc, lambda s: s["sources"][0]["state"] == "restarting")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
