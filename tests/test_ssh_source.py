"""--ssh against a real OpenSSH server on 127.0.0.1 with throwaway keys.

The "remote" host is this machine: sshd runs from netmon/testing/sshd.py, netmon's ssh
logs in with a fresh key and runs dumpcap there on ``lo``. Traffic is UDP to
127.0.0.1, bounded in count. Covers counting, two sources at once (each flow tagged
with where it was seen), the SSH session's own packets left out, a dropped
connection reconnected with counts kept, a refused login as one line, and no ssh or
remote capture left behind however netmon ends.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from netmon.core.errors import EXIT_SSH
from netmon.testing.ports import free_port
from netmon.testing.sshd import Sshd, need_sshd
from tests.conftest import need_capture, netmon_cmd
from tests.test_live import read_until, send_udp, start_netmon

pytestmark = pytest.mark.live


@pytest.fixture
def sshd(tmp_path: Path):
    need_sshd()
    need_capture()
    with Sshd(tmp_path) as server:
        yield server


def ssh_flags(sshd: Sshd, *, good_key: bool = True, iface: str = "lo") -> list[str]:
    args = ["--ssh", f"{sshd.user}@{sshd.host}:{iface}"]
    for opt in sshd.client_options(good_key=good_key):
        args += ["--ssh-option", opt]
    return args


def remote_captures(port: int) -> list[psutil.Process]:
    """dumpcap processes the remote side started for this sshd (by their session's env)."""
    found = []
    for p in psutil.process_iter(["name", "environ"]):
        try:
            env = p.info["environ"] or {}
        except (psutil.Error, OSError):
            continue
        if p.info["name"] == "dumpcap" and env.get("SSH_CONNECTION", "").endswith(f" {port}"):
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def wait_for(predicate, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def states(snap: dict) -> list[str]:
    return [s["state"] for s in snap["sources"]]


def test_two_ssh_sources_count_and_tag_every_flow(sshd: Sshd, tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    # The same host twice: each source sees every packet, so each 5-tuple is two flows,
    # one per observation point, each with the full count (never one doubled flow).
    proc = start_netmon("--json", *ssh_flags(sshd), *ssh_flags(sshd), "-f",
                        f"udp port {port}", "--flows-out", str(out), "--duration", "60")
    try:
        snap = read_until(proc, lambda s: states(s) == ["running", "running"], timeout=20)
        names = [s["name"] for s in snap["sources"]]
        assert names == ["ssh 127.0.0.1:lo", "ssh 127.0.0.1:lo #2"]
        send_udp(port, 40)
        read_until(proc, lambda s: s["ip_packets"] >= 80)
        assert len(remote_captures(sshd.port)) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    by_observer: dict[str, int] = {}
    for f in flows:
        assert f["port_b"] == port or f["port_a"] == port
        by_observer[f["observer"]] = by_observer.get(f["observer"], 0) + f["pkts_a2b"] + \
            f["pkts_b2a"]
    assert by_observer == {"ssh 127.0.0.1:lo": 40, "ssh 127.0.0.1:lo #2": 40}
    assert wait_for(lambda: not remote_captures(sshd.port))


def test_the_ssh_session_itself_is_left_out(sshd: Sshd, tmp_path: Path) -> None:
    """No filter at all: without the exclusion every streamed packet would be captured
    again (a feedback loop); with it, nothing on the sshd port is ever counted."""
    out = tmp_path / "flows.jsonl"
    port = free_port(socket.SOCK_DGRAM)
    proc = start_netmon("--json", *ssh_flags(sshd), "--flows-out", str(out),
                        "--duration", "60")
    try:
        snap = read_until(proc, lambda s: states(s) == ["running"], timeout=20)
        assert "this SSH session" in snap["ssh_excluded"]
        send_udp(port, 30)
        read_until(proc, lambda s: s["ip_packets"] >= 30)
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [f for f in flows if sshd.port in (f["port_a"], f["port_b"])]
    ours = [f for f in flows if port in (f["port_a"], f["port_b"])]
    assert sum(f["pkts_a2b"] + f["pkts_b2a"] for f in ours) == 30


def test_dropped_connection_reconnects_and_keeps_counts(sshd: Sshd, tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", *ssh_flags(sshd), "-f", f"udp port {port}",
                        "--flows-out", str(out), "--duration", "60")
    try:
        read_until(proc, lambda s: states(s) == ["running"], timeout=20)
        send_udp(port, 25)
        read_until(proc, lambda s: s["ip_packets"] >= 25)
        assert sshd.drop_sessions() == 1
        snap = read_until(proc, lambda s: states(s) == ["reconnecting"])
        assert "closed" in snap["sources"][0]["detail"]
        assert snap["ip_packets"] == 25  # nothing counted is lost
        snap = read_until(proc, lambda s: states(s) == ["running"], timeout=20)
        assert "restarted 1x" in snap["sources"][0]["detail"]
        send_udp(port, 15)
        read_until(proc, lambda s: s["ip_packets"] >= 40)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(f["pkts_a2b"] + f["pkts_b2a"] for f in flows) == 40
    assert "Traceback" not in err


def test_refused_login_is_one_line_and_an_exit_code(sshd: Sshd) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(netmon_cmd("--headless", *ssh_flags(sshd, good_key=False)),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == EXIT_SSH, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "login refused" in line]
    assert len(errors) == 1 and errors[0].startswith("netmon: ssh 127.0.0.1:lo: ")
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 15


def test_unknown_interface_there_is_one_line(sshd: Sshd) -> None:
    proc = subprocess.run(netmon_cmd("--headless", *ssh_flags(sshd, iface="nosuch0")),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 5, proc.stderr
    assert "no interface 'nosuch0' there" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_nothing_survives_netmon_here_or_there(sshd: Sshd, sig: int) -> None:
    proc = start_netmon("--json", *ssh_flags(sshd), "-f", "udp port 9")
    read_until(proc, lambda s: states(s) == ["running"], timeout=20)
    local = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert any(psutil.Process(p).name() == "ssh" for p in local)
    remote = [p.pid for p in remote_captures(sshd.port)]
    assert len(remote) == 1
    proc.send_signal(sig)
    proc.communicate(timeout=20)

    def gone(pids: list[int]) -> bool:
        return not [p for p in pids if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert wait_for(lambda: gone(local)), "ssh outlived netmon"
    # The remote capture watches its session's stdin: netmon gone, it goes too, even
    # on a link so quiet it would never notice by writing.
    assert wait_for(lambda: gone(remote)), "the remote dumpcap outlived netmon"


def test_bad_filter_there_is_one_line(sshd: Sshd) -> None:
    proc = subprocess.run(netmon_cmd("--headless", *ssh_flags(sshd), "-f", "tcp port ((("),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 6, proc.stderr
    assert "invalid capture filter" in proc.stderr and "Traceback" not in proc.stderr


def test_a_host_that_refuses_is_retried_and_said(sshd: Sshd) -> None:
    """Nothing listening there (a server rebooting): the source keeps trying with
    backoff, says why in its state, and stopping it is clean."""
    closed = free_port()
    flags = ssh_flags(sshd)
    flags[flags.index(f"Port={sshd.port}")] = f"Port={closed}"
    proc = start_netmon("--json", *flags)
    try:
        snap = read_until(proc, lambda s: states(s) == ["reconnecting"], timeout=20)
        assert "connection refused" in snap["sources"][0]["detail"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "connection refused" in err and "Traceback" not in err
