"""Running the terminal UI against the real engine: the feed adapter and the runner.

Runs on the main thread (Textual's); the engine keeps its reactor thread. The engine
publishes snapshots through :class:`EngineFeed`, which hands them to the app's
thread-safe ``publish``; the UI's questions go through
:class:`netmon.engine.link.EngineUILink`. When the app exits, the engine is stopped and
joined, so the capture process and flows-out are dealt with as in headless mode.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from netmon.core.errors import EXIT_BAD_INPUT, EXIT_USAGE, SourceError
from netmon.core.settings import Settings
from netmon.core.text import NAME_MAX, SafeFormatter, print_line, safe_text
from netmon.core.values import Snapshot
from netmon.engine.engine import Engine
from netmon.sources.base import Source


class EngineFeed:
    """The engine as a :class:`netmon.ui.feed.SnapshotFeed`: started by the app."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._publish: Callable[[Snapshot], None] | None = None
        self.final: Snapshot | None = None

    def deliver(self, snap: Snapshot) -> None:
        """Engine callback (reactor thread): never blocks."""
        if snap.finished:
            self.final = snap
        publish = self._publish
        if publish is not None:
            publish(snap)

    def start(self, publish: Callable[[Snapshot], None]) -> None:
        self._publish = publish
        if self.engine is not None:
            self.engine.start()

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop("quit")


def state_dir() -> Path:
    """XDG state directory for netmon's log."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base) / "netmon"


def log_to_file() -> str:
    """Send logging to a file while the screen is in use (never to the terminal)."""
    path = state_dir() / "netmon.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path)
    except OSError:
        handler = logging.NullHandler()
        path = Path(os.devnull)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    # Inert lines: the log is read on a terminal (tail, cat) too.
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return str(path)


def take_terminal_for_keys(settings: Settings) -> None:
    """With a capture piped into standard input (``-r -``), the keyboard must come from
    the terminal instead: the stdin source already holds its own copy of the pipe."""
    if settings.read != "-":
        return
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        raise SourceError("a capture on standard input needs a terminal for the keys: "
                          "run with --headless or --json", EXIT_USAGE) from None
    os.dup2(fd, 0)
    os.close(fd)


def run_tui(settings: Settings, sources: list[Source]) -> int:
    """Run the UI until the user quits; return netmon's exit code."""
    if not sys.stdout.isatty():
        raise SourceError("standard output is not a terminal: use --headless or --json",
                          EXIT_USAGE)
    take_terminal_for_keys(settings)
    from netmon.engine.link import EngineUILink
    from netmon.ui import make_app

    feed = EngineFeed()
    try:
        engine = Engine(settings, sources, feed.deliver)
    except OSError as exc:  # --flows-out in a missing or read-only directory
        raise SourceError(f"cannot write {safe_text(settings.flows_out, NAME_MAX)}: "
                          f"{exc.strerror}", EXIT_BAD_INPUT) from None
    feed.engine = engine
    log_path = log_to_file()
    logging.getLogger().setLevel(settings.log_level.upper())
    app = make_app(settings, feed, EngineUILink(engine))
    try:
        app.run()
    finally:
        engine.stop("quit")
        engine.join(15.0)
    code = engine.result.report(settings.flows_out, sys.stderr)
    if code is not None:
        print_line(f"netmon: log: {log_path}", sys.stderr)
        return code
    return app.return_code or 0
