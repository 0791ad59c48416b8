"""The --ssh source's pure parts: target parsing, the remote script, error lines.

The remote script is run here by /bin/sh with fake dumpcap/tcpdump on PATH that print
their arguments, so quoting is checked by a real shell, not by reading the string.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from netmon.core.errors import (
    EXIT_NO_INTERFACE,
    EXIT_NO_TOOL,
    EXIT_PERMISSION,
    EXIT_SSH,
    EXIT_USAGE,
    SourceError,
)
from netmon.sources.ssh import (
    NO_TOOL_MARK,
    SshCapture,
    parse_ssh_target,
    remote_command,
    ssh_command,
)


@pytest.mark.parametrize(("spec", "user", "host", "iface"), [
    ("web1", "", "web1", "any"),
    ("root@web1:eth0", "root", "web1", "eth0"),
    ("ops@10.0.0.7:ens3", "ops", "10.0.0.7", "ens3"),
    ("[::1]:lo", "", "::1", "lo"),
    ("me@[fe80::1%eth0]", "me", "fe80::1%eth0", "any"),
])
def test_targets_parse(spec: str, user: str, host: str, iface: str) -> None:
    t = parse_ssh_target(spec)
    assert (t.user, t.host, t.interface) == (user, host, iface)


@pytest.mark.parametrize("spec", [
    "", "-oProxyCommand=x", "a b", "host:eth0;reboot", "[::1", "[nothost]:lo",
    "-l@host", "user@host:$(id)", "user@ho'st",
])
def test_bad_targets_are_usage_errors(spec: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_ssh_target(spec)
    assert info.value.exit_code == EXIT_USAGE
    assert "\n" not in info.value.message


def _fake_tools(tmp: Path, names: tuple[str, ...]) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name in names:
        tool = bin_dir / name
        tool.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
        tool.chmod(0o755)
    # A PATH with the fakes and the shell's basics only (no real dumpcap/tcpdump).
    return {"PATH": f"{bin_dir}:/usr/bin/env-not-here", "HOME": str(tmp),
            "SSH_CONNECTION": "192.0.2.9 50122 192.0.2.1 22"}


def _run_remote(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # stdin stays open, as netmon keeps the ssh session's: the script must end when the
    # capture tool does, not wait for it.
    r, w = os.pipe()
    try:
        return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True,
                              text=True, timeout=10, stdin=r)
    finally:
        os.close(r)
        os.close(w)


def test_remote_capture_ends_when_its_stdin_does(tmp_path: Path) -> None:
    """netmon gone (its end of the session's stdin closed): the capture there is killed,
    even on a quiet link where it would never notice on its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "alive"
    (bin_dir / "dumpcap").write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 30\n")
    (bin_dir / "dumpcap").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.Popen(["/bin/sh", "-c", remote_command(parse_ssh_target("h:lo"))],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(marker.read_text())
    proc.stdin.close()
    assert proc.wait(timeout=5) != 0  # the capture was killed, so the script says so
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.02)


def test_remote_script_prefers_dumpcap_and_excludes_its_session(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path, ("dumpcap", "tcpdump"))
    nasty = "tcp port 80 and not host 10.0.0.1' ; touch /tmp/pwned; echo '$(id) `id`"
    out = _run_remote(remote_command(parse_ssh_target("h:eth0"), nasty), env)
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    assert args[:5] == ["-P", "-i", "eth0", "-w", "-"]
    # The filter reaches dumpcap as one argument, byte for byte, plus the exclusion.
    assert args[5:] == ["-f", f"({nasty}) and not (tcp and host 192.0.2.9 and port 50122 "
                        "and host 192.0.2.1 and port 22)"]
    assert not Path("/tmp/pwned").exists()


def test_remote_script_falls_back_to_tcpdump(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path, ("tcpdump",))
    out = _run_remote(remote_command(parse_ssh_target("h"), ""), env)
    args = out.stdout.splitlines()
    assert args == ["-U", "-n", "-s", "0", "-i", "any", "-w", "-",
                    "not (tcp and host 192.0.2.9 and port 50122 and host 192.0.2.1 and port 22)"]


def test_remote_script_without_exclusion_or_tools(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path, ("dumpcap",))
    out = _run_remote(remote_command(parse_ssh_target("h:lo"), "", exclude_ssh=False), env)
    assert out.stdout.splitlines() == ["-P", "-i", "lo", "-w", "-"]
    sbin = [f"{d}/{t}" for d in ("/usr/sbin", "/sbin", "/usr/local/sbin")
            for t in ("dumpcap", "tcpdump")]
    if any(os.path.exists(p) for p in sbin):
        pytest.skip("a real capture tool sits in an sbin directory the script adds to PATH")
    bare = tmp_path / "bare"
    bare.mkdir()
    out = _run_remote(remote_command(parse_ssh_target("h:lo")),
                      {"PATH": str(tmp_path / "nothing"), "HOME": str(bare)})
    assert out.returncode == 127
    assert NO_TOOL_MARK in out.stderr


def test_ssh_arguments_never_go_through_a_local_shell() -> None:
    args = ssh_command(parse_ssh_target("ops@web1:eth0"), "port 53",
                       options=("Port=2222",))
    ssh_at = next(i for i, a in enumerate(args) if os.path.basename(a) == "ssh")
    tail = args[ssh_at + 1:]
    assert "BatchMode=yes" in tail and "Port=2222" in tail
    # Destination, then the whole remote script as one argument.
    assert tail[-2] == "ops@web1"
    assert "dumpcap -P" in tail[-1] and "'port 53'" in tail[-1]


@pytest.mark.parametrize(("stderr", "code", "transient", "words"), [
    ("ops@127.0.0.1: Permission denied (publickey).\r\n", EXIT_SSH, False, "login refused"),
    ("Host key verification failed.\r\n", EXIT_SSH, False, "host key"),
    ("ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\n", 0, True,
     "connection refused"),
    ("Connection to 127.0.0.1 closed by remote host.\r\n", 0, True, "closed"),
    ("Timeout, server 10.0.0.1 not responding.\r\n", 0, True, "stopped answering"),
    (NO_TOOL_MARK + "\n", EXIT_NO_TOOL, False, "neither dumpcap nor tcpdump"),
    ("dumpcap: There is no device named \"eth9\".\n", EXIT_NO_INTERFACE, False, "eth9"),
    ("tcpdump: eth9: No such device exists\n", EXIT_NO_INTERFACE, False, "eth9"),
    ("dumpcap: You don't have permission to capture on that device\n", EXIT_PERMISSION,
     False, "no permission"),
])
def test_errors_become_one_line(stderr: str, code: int, transient: bool, words: str) -> None:
    src = SshCapture(parse_ssh_target("ops@127.0.0.1:eth9"))
    err, again = src._classify(stderr)
    assert err is not None and again is transient
    assert err.exit_code == code
    assert words in err.message and "\n" not in err.message
    assert err.message.startswith("ssh 127.0.0.1:eth9: ")
