"""Processes that hold sockets under a name of their choosing, for the process
attribution tests and benchmark.

Usage::

    from netmon.testing.sockproc import SocketProcess

    with SocketProcess("nm-srv", "listen", "127.0.0.1", port) as srv:
        ...  # srv.pid, srv.port (the bound or local port it reported)

The child is ``python -m netmon.testing.sockproc COMM MODE HOST PORT [COUNT]``: it
names itself COMM with ``prctl(PR_SET_NAME)`` (what ``/proc/<pid>/comm`` then shows),
opens its sockets, prints ``ready <port>``, and holds them until its stdin closes, so
a parent that dies takes it along (no orphans). Modes: ``listen`` (TCP server that
accepts and keeps connections), ``connect`` (TCP client), ``udp`` (bound UDP socket),
``pairs`` (a listener and COUNT connections to itself: 2 COUNT + 1 sockets), ``echo``
(TCP server echoing what each connection sends) and ``send`` (TCP client that sends
COUNT bytes and reads them back before it reports ready: bounded traffic on the wire).

The context manager runs in the caller's thread; :meth:`SocketProcess.close` kills
and reaps the child. ``prefix`` runs it under another command (``ip netns exec N``).
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import sys
import threading

#: Seconds a child may take to report ready.
READY_TIMEOUT = 20.0


class SocketProcess:
    """A child process holding sockets (see the module docstring)."""

    def __init__(self, comm: str, mode: str, host: str, port: int, count: int = 0,
                 prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        cmd = [*prefix, sys.executable, "-m", "netmon.testing.sockproc", comm, mode, host,
               str(port), str(count)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or dict(os.environ))
        self.pid = self.proc.pid
        self.port = 0
        try:
            self.port = self._ready()
        except BaseException:
            self.close()
            raise

    def _ready(self) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready "):
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            raise RuntimeError(f"socket process {self.proc.args} not ready: {line!r} {err}")
        return int(line.split()[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> SocketProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def set_comm(name: bytes) -> None:
    """Name the calling process (Linux ``prctl(PR_SET_NAME)``; 15 bytes kept)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def _serve(listener: socket.socket, held: list[socket.socket], echo: bool = False) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        if echo:
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    comm, mode, host, port, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    # The name may hold escape sequences on purpose (hostile-name tests).
    set_comm(comm.encode("utf-8", "surrogateescape"))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    held: list[socket.socket] = []
    if mode in ("listen", "pairs", "echo"):
        lst = socket.socket(fam, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((host, port))
        lst.listen(max(count, 16))
        held.append(lst)
        report = lst.getsockname()[1]
        for _ in range(count):
            c = socket.create_connection((host, report))
            held.append(c)
            held.append(lst.accept()[0])
        threading.Thread(target=_serve, args=(lst, held, mode == "echo"), daemon=True).start()
    elif mode == "send":
        c = socket.create_connection((host, port))
        held.append(c)
        c.sendall(b"n" * count)
        got = 0
        while got < count and (data := c.recv(65536)):
            got += len(data)
        report = c.getsockname()[1]
    elif mode == "connect":
        c = socket.create_connection((host, port))
        held.append(c)
        report = c.getsockname()[1]
    elif mode == "udp":
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, port))
        held.append(u)
        report = u.getsockname()[1]
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(f"ready {report}", flush=True)
    sys.stdin.buffer.read()  # until the parent closes it or dies
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
