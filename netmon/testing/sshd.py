"""A throwaway OpenSSH server on 127.0.0.1 with fresh keys, for the ``--ssh`` tests.

Usage (import it the way the other test helpers are imported)::

    from netmon.testing.sshd import Sshd, need_sshd

    def test_something(tmp_path):
        need_sshd()
        with Sshd(tmp_path) as sshd:
            subprocess.run(["ssh", *sshd.ssh_args(), sshd.host, "true"], check=True)

Everything the server reads or writes lives in ``tmp``: host key, client keys,
authorized_keys, known_hosts, sshd_config, pid file and log. ``/etc/ssh`` is never
read by the server (``-f`` names our config) nor by the client (``-F /dev/null``).
The one thing touched outside ``tmp`` is sshd's privilege separation directory
(``/run/sshd`` on Debian), which it demands when run as root: it is created (0755)
when missing and left in place.

Works as root and as an ordinary user: then sshd can neither chroot nor change user,
needs no /run/sshd, and can only let that same user in. Linux only: processes are
found through /proc.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
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


def _missing_reason() -> str | None:
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


def need_sshd() -> None:
    """Skip the test, saying why, unless sshd, ssh and ssh-keygen are all here."""
    import pytest  # here, so that the server can be used from a plain script too

    reason = _missing_reason()
    if reason:
        pytest.skip(reason)


# ---------------------------------------------------------------- /proc helpers

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _children_map(*, zombies: bool = False) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None and (zombies or st[0] not in ("Z", "X")):
            kids.setdefault(st[1], []).append(pid)
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = _children_map() if kids is None else kids
    out: list[int] = []
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _ancestors_and_self() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        st = _stat(pid)
        pid = st[1] if st else 0
    return pids


def _kill_all(find) -> list[int]:
    """SIGSTOP every process ``find()`` returns (again and again, so that nothing forks
    away in between), then SIGKILL them all; returns the pids killed."""
    protected = _ancestors_and_self()
    seen: set[int] = set()
    for _ in range(20):
        new = set(find()) - seen - protected
        if not new:
            break
        for pid in new:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        seen |= new
    for pid in seen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return sorted(seen)


def _wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    return left


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _openssh_version(sshd: str) -> tuple[int, int]:
    """(major, minor) of sshd; ``sshd -V`` exists since 9.x, older ones print the
    version in their usage text, which an unknown flag brings out too."""
    out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=10)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _q(path: Path | str) -> str:
    """A path for sshd_config / ``ssh -o``: double-quoted when it has blanks."""
    s = str(path)
    return f'"{s}"' if any(c.isspace() for c in s) else s


# ---------------------------------------------------------------- the server

class Sshd:
    """A throwaway OpenSSH server on 127.0.0.1 with fresh keys, for --ssh tests."""

    host = HOST

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
        self.proc: subprocess.Popen | None = None

    # -- lifecycle

    def start(self) -> Sshd:
        reason = _missing_reason()
        if reason:
            raise RuntimeError(reason)
        if self.proc is not None:
            raise RuntimeError("this Sshd is already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys()
        sshd = sshd_path()
        assert sshd is not None
        if os.geteuid() == 0:
            _privsep_dir("/run/sshd")
        version = _openssh_version(sshd)
        atexit.register(self.stop)
        last_error = ""
        for _attempt in range(5):
            self.port = _free_port()
            self._write_config(version)
            self.known_hosts.write_text(
                f"[{HOST}]:{self.port} {self.host_key.with_suffix('.pub').read_text()}")
            ok, last_error = self._launch(sshd)
            if ok:
                return self
            missing = re.search(r"Missing privilege separation directory: (\S+)", last_error)
            if missing and os.geteuid() == 0:
                _privsep_dir(missing.group(1))
            elif "Address already in use" not in last_error:
                break
        self.stop()
        raise RuntimeError(f"sshd did not start:\n{last_error}")

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

    def _launch(self, sshd: str) -> tuple[bool, str]:
        """Start sshd on self.port; (True, "") once it listens, else (False, why)."""
        self.log_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        with open(self.stderr_file, "wb") as err:
            # -E implies -e: logs go to the file; the stderr file catches what sshd
            # prints before its log is set up (config errors, absolute-path errors)
            self.proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.config), "-p", str(self.port),
                 "-E", str(self.log_file)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                close_fds=True)
        ready = f"Server listening on {HOST} port {self.port}."
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if ready in self.log_text():  # logged once listen() is done
                return True, ""
            if self.proc.poll() is not None:
                why = self.log_text()
                self.proc = None
                return False, why
            time.sleep(0.02)
        why = self.log_text()
        self._terminate_listener()
        return False, why or "sshd did not report listening within 15 s"

    def _terminate_listener(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop(self) -> None:
        """Stop sshd, every connection it serves and every process those started
        (also ones already orphaned); safe to call again."""
        proc = self.proc
        running = proc is not None and proc.poll() is None
        if running:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGSTOP)  # takes no new connection while we sweep
        killed = _kill_all(self._everything)
        if running:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)  # let it reap its children, then end it
            deadline = time.monotonic() + 2
            while (_children_map(zombies=True).get(proc.pid)
                   and time.monotonic() < deadline):
                time.sleep(0.01)
        self._terminate_listener()
        _wait_gone(killed)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (the listener's children), oldest first."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return sorted(_children_map().get(self.proc.pid, []))

    def wait_sessions(self, count: int = 0, timeout: float = 5.0) -> list[int]:
        """Wait until exactly ``count`` connections are open (a client that has just
        exited may leave its sshd process alive for some milliseconds); returns their
        pids, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.session_pids()
            if len(pids) == count:
                return pids
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd has {len(pids)} connections, not {count}: {pids}")
            time.sleep(0.01)

    def drop_sessions(self, *, commands: bool = True) -> int:
        """SIGKILL every connection's sshd processes, so their clients see the
        connection drop ("Connection to 127.0.0.1 closed by remote host.", exit 255).
        With ``commands`` (the default) what runs under them goes too; without, the
        remote commands are left running as orphans, as after a real network cut
        (sshd never signals a command without a tty; it ends when it next writes to
        its dead stdout, or at stop()). Returns the number of connections dropped."""
        sessions = self.session_pids()
        if not sessions:
            return 0
        listener = self.proc.pid if self.proc else -1

        def tree() -> list[int]:
            kids = _children_map()
            pids = set(sessions)
            for s in sessions:
                pids.update(_descendants(s, kids))
            if commands:
                pids.update(self._orphans())
            else:
                pids = {p for p in pids if _comm(p) == "sshd"}
            pids.discard(listener)
            return sorted(pids)

        killed = _kill_all(tree)
        _wait_gone(killed)
        deadline = time.monotonic() + 5
        while (set(sessions) & set(_children_map(zombies=True).get(listener, []))
               and time.monotonic() < deadline):
            time.sleep(0.01)  # until the listener has reaped them
        return len(sessions)

    def _orphans(self) -> list[int]:
        """Processes started by our sessions, found by the SSH_CONNECTION that sshd put
        in their environment (server end = our address and port). This finds remote
        commands still running after their connection went away: sshd does not signal
        a command that has no tty when the client leaves."""
        if not self.port:
            return []
        me = os.getpid()
        tail = f" {HOST} {self.port}".encode()
        found = []
        for pid in _all_pids():
            if pid == me:
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            for var in env.split(b"\0"):
                if var.startswith(b"SSH_CONNECTION=") and var.endswith(tail):
                    found.append(pid)
                    break
        return found

    def _everything(self) -> list[int]:
        pids = set(self._orphans())
        if self.proc is not None:
            pids.update(_descendants(self.proc.pid))
        return sorted(pids)

    def leftover_pids(self) -> list[int]:
        """Processes of this server still alive (for "nothing left behind" checks)."""
        pids = set(self._everything())
        if self.proc is not None and self.proc.poll() is None:
            pids.add(self.proc.pid)
        return sorted(p for p in pids if _alive(p))

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


def _privsep_dir(path: str) -> None:
    """The empty root-owned 0755 directory sshd chroots its pre-auth child into."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    os.chmod(path, 0o755)
