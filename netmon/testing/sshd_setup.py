"""What a throwaway OpenSSH server needs before it runs: the binaries, its files, its config.

``SshdFiles`` is the server's working directory: fresh host and client keys,
authorized_keys, known_hosts, sshd_config, pid file and log, plus the ``ssh`` options
that point a client at them. Next to it: finding sshd/ssh/ssh-keygen, sshd's version,
and the privilege separation directory sshd demands as root. ``netmon.testing.sshd``
runs the server on top of these (``Sshd`` is a ``SshdFiles``).

Everything the server reads or writes lives in ``tmp``. ``/etc/ssh`` is never read by
the server (``-f`` names our config) nor by the client (``-F /dev/null``). The one
thing touched outside ``tmp`` is sshd's privilege separation directory (``/run/sshd``
on Debian), which it demands when run as root: it is created (0755) when missing and
left in place.

Runs in the caller's thread (the test's or the benchmark's), once per server start.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

HOST = "127.0.0.1"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _find(name: str, *extra_dirs: str) -> str | None:
    """Absolute path of an executable: PATH first, then ``extra_dirs``."""
    found = shutil.which(name)
    if found is None:
        path = os.pathsep.join(extra_dirs)
        found = shutil.which(name, path=path) if path else None
    return os.path.abspath(found) if found else None


def sshd_path() -> str | None:
    """sshd, as an absolute path (sshd refuses to run otherwise); often not on a user's PATH."""
    return _find("sshd", *_SBIN)


def missing_reason() -> str | None:
    """Why no sshd can run here (a missing binary or user), or None when one can."""
    missing = [n for n, p in (("sshd", sshd_path()), ("ssh", _find("ssh")),
                              ("ssh-keygen", _find("ssh-keygen"))) if p is None]
    if missing:
        return (f"{', '.join(missing)} not installed "
                "(apt-get install openssh-server openssh-client)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("sshd")
        except KeyError:
            return "sshd as root needs its privilege separation user 'sshd', which is missing"
    return None


def openssh_version(sshd: str) -> tuple[int, int]:
    """(major, minor) of sshd; ``sshd -V`` exists since 9.x, older ones print the
    version in their usage text, which an unknown flag brings out too."""
    out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=10)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _q(path: Path | str) -> str:
    """A path for sshd_config / ``ssh -o``: double-quoted when it has blanks."""
    s = str(path)
    return f'"{s}"' if any(c.isspace() for c in s) else s


def privsep_dir(path: str) -> None:
    """The empty root-owned 0755 directory sshd chroots its pre-auth child into."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    os.chmod(path, 0o755)


class SshdFiles:
    """An sshd's working directory: keys, config, known_hosts, log, and the ssh options
    that point a client at them. ``port`` is 0 until the server picks one."""

    def __init__(self, tmp: Path) -> None:
        self.dir = Path(tmp) / "sshd"
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = 0
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        self.wrong_key = self.dir / "wrong_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "sshd_config"
        self.pid_file = self.dir / "sshd.pid"
        self.log_file = self.dir / "sshd.log"
        self.stderr_file = self.dir / "sshd.stderr"

    def _keys(self) -> None:
        keygen = _find("ssh-keygen")
        assert keygen is not None
        for key, comment in ((self.host_key, "netmon-test-host"),
                             (self.client_key, "netmon-test-client"),
                             (self.wrong_key, "netmon-test-wrong")):
            for f in (key, key.with_suffix(".pub")):
                f.unlink(missing_ok=True)
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", str(key)], check=True, capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
            key.chmod(0o600)
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o600)

    def _write_config(self, version: tuple[int, int]) -> None:
        lines = [
            f"ListenAddress {HOST}",
            f"Port {self.port}",
            "AddressFamily inet",
            f"HostKey {_q(self.host_key)}",
            f"PidFile {_q(self.pid_file)}",
            f"AuthorizedKeysFile {_q(self.authorized_keys)}",
            "AuthorizedPrincipalsFile none",
            f"AllowUsers {self.user}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitEmptyPasswords no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "PermitUserEnvironment no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            # tests connect over and over: no random early drops, no throttling
            "MaxStartups 200",
            "MaxSessions 50",
            "LoginGraceTime 20",
            # a client that stops answering (SIGSTOPped) is cut after ~4-6 s; a client
            # that goes away closes its socket, which sshd sees at once anyway
            "ClientAliveInterval 2",
            "ClientAliveCountMax 2",
            "TCPKeepAlive yes",
            # bash sources ~/.bashrc for ssh commands when SHLVL < 2. The test user's
            # rc files are not what is tested, and can hurt: root's ~/.bashrc on these
            # machines runs `pyenv init`, whose rehash lock a killed session leaves
            # behind, and every later session then waits 60 s for it.
            "SetEnv SHLVL=1",
        ]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin prohibit-password")
        if version >= (9, 8):
            # 9.8+ penalises sources whose sessions crash or fail auth (drop_sessions,
            # wrong-key tests) by refusing their next connections for a while
            lines.append("PerSourcePenalties no")
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o600)

    # -- client side

    def client_options(self, *, good_key: bool = True) -> list[str]:
        """``ssh -o`` options as "Key=Value" strings (pass each after "-o").

        They name every file ssh would otherwise look up in ~/.ssh or /etc/ssh, but
        ssh still reads ~/.ssh/config and /etc/ssh/ssh_config unless also given
        ``-F /dev/null`` (see ssh_args), and those could add ProxyCommand,
        ControlMaster, a HostName rewrite, SendEnv...: pass -F /dev/null too.
        No User= here: an -o User would beat a user@host given later on the command
        line; the login name defaults to the local user, which is the one allowed.
        """
        key = self.client_key if good_key else self.wrong_key
        return [
            f"Port={self.port}",
            f"IdentityFile={_q(key)}",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            f"UserKnownHostsFile={_q(self.known_hosts)}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "UpdateHostKeys=no",
            "BatchMode=yes",
            "PreferredAuthentications=publickey",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "ControlMaster=no",
            "ControlPath=none",
            "ConnectTimeout=5",
            "LogLevel=ERROR",
        ]

    def ssh_args(self, *, good_key: bool = True) -> list[str]:
        """Arguments to put right after "ssh" (then the host and the command)."""
        args = ["-F", "/dev/null"]
        for opt in self.client_options(good_key=good_key):
            args += ["-o", opt]
        return args

    def log_text(self) -> str:
        """sshd's log (LogLevel VERBOSE) plus anything it printed before logging began."""
        parts = []
        for f in (self.stderr_file, self.log_file):
            with contextlib.suppress(OSError):
                parts.append(f.read_text(errors="replace"))
        return "".join(parts)
