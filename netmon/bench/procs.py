"""Process attribution benchmark: ``python -m netmon.bench procs [--procs N --pairs K]``.

Runs on the main thread; forks N child processes (each names itself, holds a TCP
listener and K loopback connections to itself: 2K+1 sockets, and waits on a pipe),
then times :class:`~netmon.names.procscan.ProcessScanner` refreshes:

- cold: a new scanner, every process's fd links read;
- steady: nothing changed since the last refresh;
- busy: one process that opened sockets before opens 2x25 more (the common case: a
  browser's new connections);
- new: a process started since the last refresh, with 2x25 sockets;
- hidden: a socket appears in a process that has not gained one lately (the fd walk
  goes through every process);

and look-ups per second on the resulting table, beside the baselines of the same
run: ``psutil.net_connections()`` (a full scan, no namespaces) and ``ss -tunap``.
Children are killed and reaped in a finally block.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from netmon.names.procs import TCP
from netmon.names.procscan import ProcessScanner
from netmon.testing.sockproc import set_comm

LO = socket.inet_aton("127.0.0.1")


def _child(name: str, pairs: int, cmd_fd: int, ack_fd: int) -> None:
    set_comm(name.encode())
    held = []
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(256)
    held.append(lst)

    def connect(n: int) -> None:
        for _ in range(n):
            held.append(socket.create_connection(lst.getsockname()))
            held.append(lst.accept()[0])

    connect(pairs)
    os.write(ack_fd, lst.getsockname()[1].to_bytes(2, "big"))
    while os.read(cmd_fd, 1):  # each byte: 25 more connections; EOF: exit
        connect(25)
        os.write(ack_fd, b"ok")


#: The benchmark's ends of every child's pipes: a new child closes the ones it
#: inherited, or each child would hold all earlier children's fds (and the fd walk
#: would measure those).
_PARENT_FDS: set[int] = set()


class _Child:
    def __init__(self, name: str, pairs: int) -> None:
        cmd_r, self.cmd = os.pipe()
        self.ack, ack_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns into the benchmark
            code = 0
            try:
                for fd in (self.cmd, self.ack, *_PARENT_FDS):
                    os.close(fd)
                _child(name, pairs, cmd_r, ack_w)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(cmd_r)
        os.close(ack_w)
        _PARENT_FDS.update((self.cmd, self.ack))
        self.port = int.from_bytes(os.read(self.ack, 2), "big")

    def more(self) -> None:
        os.write(self.cmd, b"+")
        os.read(self.ack, 2)

    def close(self) -> None:
        _PARENT_FDS.difference_update((self.cmd, self.ack))
        os.close(self.cmd)
        os.close(self.ack)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def _ms(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench procs")
    parser.add_argument("--procs", type=int, default=300, help="child processes")
    parser.add_argument("--pairs", type=int, default=5,
                        help="loopback connections each child holds (2 sockets each)")
    args = parser.parse_args(argv)
    children: list[_Child] = []
    try:
        for i in range(args.procs):
            children.append(_Child(f"nm-bench-{i}", args.pairs))
        scanner = ProcessScanner()
        cold = _ms(scanner.refresh)
        table = scanner.refresh()
        steady = _ms(scanner.refresh, repeat=5)
        busy_child = children[-1]  # gained sockets in the cold walk: near the front
        busy_child.more()
        busy = _ms(scanner.refresh)
        fresh = _Child("nm-bench-new", 25)
        children.append(fresh)
        new = _ms(scanner.refresh)
        children[0].more()  # walked long ago, not among the recent owners
        hidden = _ms(scanner.refresh)
        table = scanner.refresh()
        assert table.lookup(TCP, LO, fresh.port, LO, 1).pid == fresh.pid
        keys = [(TCP, LO, c.port, LO, 1) for c in children] * 100
        t = time.perf_counter()
        for k in keys:
            table.lookup(*k)
        per_lookup = (time.perf_counter() - t) / len(keys) * 1e6
        # What the hot path does: both ends of a flow key (KEY_DTYPE layout).
        lo16 = bytes(12) + LO
        flow_keys = [bytes((TCP, 4)) + lo16 + c.port.to_bytes(2, "big") + lo16
                     + (40000).to_bytes(2, "big") + bytes(2) for c in children] * 100
        t = time.perf_counter()
        for k in flow_keys:
            table.owners(k)
        per_key = (time.perf_counter() - t) / len(flow_keys) * 1e6
        print(f"{table.processes} processes, {table.sockets} sockets, "
              f"{table.namespaces} network namespace(s)")
        print(f"refresh: cold {cold:.1f} ms, steady {steady:.1f} ms, busy process +50 "
              f"sockets {busy:.1f} ms, new process {new:.1f} ms, socket in an idle "
              f"process {hidden:.1f} ms; look-up {per_lookup:.2f} us, both ends of a flow "
              f"key {per_key:.2f} us")
        _baselines()
    finally:
        for child in children:
            child.close()
    return 0


def _baselines() -> None:
    try:
        import psutil
    except ImportError:
        print("baseline psutil.net_connections: psutil is not installed")
    else:
        ms = _ms(lambda: psutil.net_connections("inet"), repeat=3)
        print(f"baseline psutil.net_connections('inet'): {ms:.1f} ms")
    if shutil.which("ss"):
        ms = _ms(lambda: subprocess.run(["ss", "-tunap"], capture_output=True, check=True),
                 repeat=3)
        print(f"baseline ss -tunap (a process of its own): {ms:.1f} ms")
