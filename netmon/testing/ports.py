"""A free local port for test fixtures and benchmarks to start a server on.

Pure module (stdlib only), no state: any thread may call it.
"""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing is bound to right now, for a ``kind`` socket
    (``SOCK_STREAM`` for TCP, ``SOCK_DGRAM`` for UDP); the caller binds it soon after,
    so another process may in rare cases take it first."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
