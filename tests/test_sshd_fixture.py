"""The throwaway sshd the --ssh tests run against: it starts, lets the right key in
and turns the wrong one away at once, drops connections on demand, and leaves no
process behind when stopped."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.testing.sshd import Sshd, need_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    need_sshd()
    with Sshd(tmp_path) as server:
        yield server
    assert server.leftover_pids() == [], "sshd left processes behind"


def ssh(server: Sshd, command: str, *, good_key: bool = True) -> list[str]:
    return ["ssh", *server.ssh_args(good_key=good_key), server.host, command]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_login_with_the_good_key_and_stop(tmp_path: Path) -> None:
    need_sshd()
    server = Sshd(tmp_path).start()
    try:
        listener = server.proc.pid
        out = subprocess.run(ssh(server, "echo $SSH_CONNECTION; id -un"), capture_output=True,
                             text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        connection, user = out.stdout.split("\n")[:2]
        client_ip, client_port, server_ip, server_port = connection.split()
        assert (client_ip, server_ip, server_port) == ("127.0.0.1", "127.0.0.1", str(server.port))
        assert int(client_port) > 0
        assert user == server.user
        assert out.stderr == ""
        assert "Accepted publickey for " + server.user in server.log_text()
    finally:
        server.stop()
    server.stop()  # again: nothing to do
    assert gone(listener)
    assert refused(server.port)
    assert server.leftover_pids() == []


def test_wrong_key_is_refused_fast(sshd: Sshd) -> None:
    start = time.monotonic()
    out = subprocess.run(ssh(sshd, "true", good_key=False), capture_output=True, text=True,
                         timeout=20)
    took = time.monotonic() - start
    assert out.returncode == 255
    assert out.stderr == f"{sshd.user}@127.0.0.1: Permission denied (publickey).\n"
    assert took < 2, f"refusing the wrong key took {took:.2f} s"
    sshd.wait_sessions(0)


def test_drop_sessions_ends_the_client(sshd: Sshd) -> None:
    client = subprocess.Popen(ssh(sshd, "echo $$; exec sleep 30"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        remote_pid = int(client.stdout.readline())  # the session runs
        sshd.wait_sessions(1)
        start = time.monotonic()
        assert sshd.drop_sessions() == 1
        assert client.wait(timeout=5) == 255
        took = time.monotonic() - start
        assert "closed by remote host" in client.stderr.read()
        assert took < 2, f"the client took {took:.2f} s to see the drop"
        assert gone(remote_pid), "the remote command outlived its session"
        assert sshd.session_pids() == []
        assert sshd.drop_sessions() == 0
        # the server still takes new connections
        again = subprocess.run(ssh(sshd, "true"), capture_output=True, text=True, timeout=20)
        assert again.returncode == 0, again.stderr
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
        client.stderr.close()


def test_stop_ends_remote_commands_whose_client_went_away(sshd: Sshd) -> None:
    # sshd does not signal a remote command without a tty when its client leaves:
    # such a command lives on as an orphan, and stop() must still find it
    client = subprocess.Popen(ssh(sshd, "echo $$; exec sleep 30"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    remote_pid = int(client.stdout.readline())
    client.kill()
    client.wait()
    client.stdout.close()
    sshd.wait_sessions(0)
    assert not gone(remote_pid), "expected the remote sleep to outlive its client"
    assert remote_pid in sshd.leftover_pids()
    sshd.stop()
    assert gone(remote_pid)
