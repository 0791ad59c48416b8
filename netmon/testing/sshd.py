"""A throwaway OpenSSH server on 127.0.0.1 with fresh keys, for the ``--ssh`` tests.

Usage (import it the way the other test helpers are imported)::

    from netmon.testing.sshd import Sshd, need_sshd

    def test_something(tmp_path):
        need_sshd()
        with Sshd(tmp_path) as sshd:
            subprocess.run(["ssh", *sshd.ssh_args(), sshd.host, "true"], check=True)

This module runs the server and handles its processes: start, stop, the connections
it serves and what they started. Its keys, config and client options come from
``netmon.testing.sshd_setup`` (``Sshd`` is a ``SshdFiles``), which also says what is
touched outside ``tmp``.

Works as root and as an ordinary user: then sshd can neither chroot nor change user,
needs no /run/sshd, and can only let that same user in. Linux only: processes are
found through /proc. Runs in the caller's thread (the test's or the benchmark's);
``stop`` also runs once more at interpreter exit (atexit).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from netmon.testing.ports import free_port
from netmon.testing.sshd_setup import (
    HOST,
    SshdFiles,
    missing_reason,
    openssh_version,
    privsep_dir,
    sshd_path,
)


def need_sshd() -> None:
    """Skip the test, saying why, unless sshd, ssh and ssh-keygen are all here."""
    import pytest  # here, so that the server can be used from a plain script too

    reason = missing_reason()
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


# ---------------------------------------------------------------- the server

class Sshd(SshdFiles):
    """A throwaway OpenSSH server on 127.0.0.1 with fresh keys, for --ssh tests."""

    host = HOST

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.proc: subprocess.Popen | None = None

    # -- lifecycle

    def start(self) -> Sshd:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        if self.proc is not None:
            raise RuntimeError("this Sshd is already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys()
        sshd = sshd_path()
        assert sshd is not None
        if os.geteuid() == 0:
            privsep_dir("/run/sshd")
        version = openssh_version(sshd)
        atexit.register(self.stop)
        last_error = ""
        for _attempt in range(5):
            self.port = free_port(host=HOST)
            self._write_config(version)
            self.known_hosts.write_text(
                f"[{HOST}]:{self.port} {self.host_key.with_suffix('.pub').read_text()}")
            ok, last_error = self._launch(sshd)
            if ok:
                return self
            missing = re.search(r"Missing privilege separation directory: (\S+)", last_error)
            if missing and os.geteuid() == 0:
                privsep_dir(missing.group(1))
            elif "Address already in use" not in last_error:
                break
        self.stop()
        raise RuntimeError(f"sshd did not start:\n{last_error}")

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

