"""NetmonApp: the terminal UI on the main thread, and :func:`make_app` that builds it.

Threads: everything here runs on the UI (main) thread except :meth:`NetmonApp.publish`,
which the feed calls on its own thread (the engine's reactor) and which only posts a
:class:`SnapshotPublished` message. Questions to the engine go through
:class:`~netmon.ui.link.EngineBridge`; its answers come back as messages too. Nothing
here blocks on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding, BindingType

from netmon.core.link import (
    EngineLink,
    ExportRequest,
    ExportResult,
    PacketExportRequest,
    PacketExportResult,
)
from netmon.core.text import safe_text
from netmon.core.values import Snapshot
from netmon.ui.feed import SnapshotFeed
from netmon.ui.link import EngineBridge
from netmon.ui.messages import ExportFinished, PacketsExported, SnapshotPublished, SourceFailed
from netmon.ui.screens import HelpScreen, MainScreen, NetmonScreen, TooSmallScreen
from netmon.ui.themes import DEFAULT_THEME, NETMON_THEMES, next_theme
from netmon.ui.widgets import ViewState

if TYPE_CHECKING:  # netmon.core.settings pulls in the sources (Twisted); the UI must not
    from netmon.core.settings import Settings

#: Below this terminal size (columns, rows) netmon shows only a plain message.
MIN_SIZE = (60, 16)
#: Signals that end the app as cleanly as ``q`` (SIGHUP: the SSH session dropped).
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class NetmonApp(App[None]):
    """Live clusters, drill-down to packets, on a snapshot feed and an engine link."""

    CSS_PATH = "netmon.tcss"
    TITLE = "netmon"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("f10", "quit", "Quit", show=False),  # htop's keys, for their users
        Binding("f1", "help", "Help", show=False),
        # A monitor quits on Ctrl-C like top or iftop (Textual would only hint at ctrl+q).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("p,space", "toggle_pause", "Pause"),
        Binding("t", "next_theme", "Theme"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, settings: Settings, feed: SnapshotFeed, link: EngineLink) -> None:
        super().__init__()
        for theme in NETMON_THEMES:
            self.register_theme(theme)
        self.settings = settings
        self.feed = feed
        self.engine = EngineBridge(link)
        self.tick = float(getattr(settings, "tick", 0.5) or 0.5)
        """Seconds between snapshots (the x step of the rate chart)."""
        self.export_dir = getattr(settings, "export_dir", "") or os.getcwd()
        """Where ``e`` writes its files."""
        self.view = ViewState()
        """The snapshot on screen, the newest one, and whether the view is paused."""
        wanted = getattr(settings, "theme", "") or self.auto_theme()
        self._bad_theme = "" if wanted in self.available_themes else wanted
        self.theme = wanted if not self._bad_theme else DEFAULT_THEME
        self._failed: set[str] = set()
        self._warned: set[str] = set()
        self._finished_seen = False
        self._stopped = False
        self.exit_signal: int | None = None
        """The signal that ended the app, if one did (its exit code is 128 + it)."""

    def auto_theme(self) -> str:
        """The theme for an empty ``theme`` setting: the terminal's own 16 colours when
        that is all it has (TERM without 256 colours, the Linux console), else the
        default."""
        return "netmon-ansi" if self.console.color_system == "standard" else DEFAULT_THEME

    # ------------------------------------------------------------ lifecycle
    async def on_mount(self) -> None:
        await self.push_screen(MainScreen())
        if self._bad_theme:
            self.notify(f"unknown theme '{safe_text(self._bad_theme, 40)}'; using "
                        f"{DEFAULT_THEME}",
                        severity="warning", markup=False)
        self._check_size(*self.size)
        self._catch_signals(install=True)
        self.feed.start(self.publish)

    def publish(self, snapshot: Snapshot) -> None:
        """The feed's callback (any thread): hand the snapshot to the UI thread."""
        self.post_message(SnapshotPublished(snapshot))

    def stop_engine(self) -> None:
        """Stop the feed and tell the engine to stop (once; never blocks on the engine)."""
        if self._stopped:
            return
        self._stopped = True
        self.feed.stop()
        self.engine.stop()

    async def action_quit(self) -> None:
        self.stop_engine()
        self.exit()

    def on_unmount(self) -> None:
        self._catch_signals(install=False)
        self.stop_engine()

    def _catch_signals(self, install: bool) -> None:
        """SIGTERM/SIGHUP quit like ``q`` (engine stopped, terminal restored)."""
        loop = asyncio.get_running_loop()
        for sig in EXIT_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if install:  # only possible on the main thread
                    loop.add_signal_handler(sig, self._on_exit_signal, sig)
                else:
                    loop.remove_signal_handler(sig)

    def _on_exit_signal(self, sig: int) -> None:
        self.exit_signal = sig
        self.stop_engine()
        self.exit(return_code=128 + sig)

    # ------------------------------------------------------------ snapshots
    def on_snapshot_published(self, message: SnapshotPublished) -> None:
        snap = message.snapshot
        self._note_news(snap)
        if self.view.paused:
            self.view = replace(self.view, latest=snap)
        else:
            self.view = ViewState(shown=snap, latest=snap)
        self._show_view()

    def _show_view(self) -> None:
        screen = self.screen
        if isinstance(screen, NetmonScreen):
            screen.show_view(self.view)

    def _note_news(self, snap: Snapshot) -> None:
        for source in snap.sources:
            if source.state == "failed" and source.name not in self._failed:
                self._failed.add(source.name)
                self.post_message(SourceFailed(source.name, source.detail))
        for warning in snap.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.notify(safe_text(warning, 200), severity="warning", timeout=8,
                            markup=False)
        if snap.finished and self._failed and not snap.totals.packets:
            # Nothing was ever counted and the source failed (bad interface, no
            # permission): there is nothing to look at; leave so the error is printed.
            self.stop_engine()
            self.exit()
            return
        if snap.finished and not self._finished_seen:
            self._finished_seen = True
            self.notify("input finished: the last view stays up; q quits", timeout=8,
                        markup=False)

    def on_source_failed(self, message: SourceFailed) -> None:
        reason = f": {safe_text(message.reason, 200)}" if message.reason else ""
        self.notify(f"{safe_text(message.name)} failed{reason}", severity="error",
                    timeout=15, markup=False)

    # ------------------------------------------------------------ keys
    def action_toggle_pause(self) -> None:
        if self.view.paused:
            self.view = ViewState(shown=self.view.latest, latest=self.view.latest)
        else:
            self.view = replace(self.view, paused=True)
        self._show_view()

    def action_next_theme(self) -> None:
        self.theme = next_theme(self.theme)
        self.notify(f"theme {self.theme}", timeout=2, markup=False)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen | TooSmallScreen):
            self.push_screen(HelpScreen())

    def start_export(self, request: ExportRequest) -> None:
        self.notify(f"exporting to {safe_text(request.directory)}…", timeout=3, markup=False)
        self.engine.export(request, self)

    def on_export_finished(self, message: ExportFinished) -> None:
        result = message.result
        if result.error:
            self.notify(f"export failed: {safe_text(result.error, 200)}", severity="error",
                        timeout=10, markup=False)
            return
        self.notify(export_written(result), title="export", timeout=12, markup=False)

    def start_packet_export(self, request: PacketExportRequest) -> None:
        what = (f"flow {request.flow_id}" if request.flow_id is not None
                else f"cluster {request.cluster_id}")
        self.notify(f"writing the kept packets of {what} to {safe_text(request.directory)}…",
                    timeout=3, markup=False)
        self.engine.export_packets(request, self)

    def on_packets_exported(self, message: PacketsExported) -> None:
        result = message.result
        if result.error:
            self.notify(f"no pcapng written: {safe_text(result.error, 300)}",
                        severity="error", timeout=10, markup=False)
            return
        self.notify(packets_written(result), title="packets", timeout=12, markup=False)

    # ------------------------------------------------------------ size
    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        top = self.screen_stack[-1] if self.screen_stack else None
        if small and not isinstance(top, TooSmallScreen):
            self.push_screen(TooSmallScreen(MIN_SIZE))
        elif small and isinstance(top, TooSmallScreen):
            top.show_size(width, height)
        elif not small and isinstance(top, TooSmallScreen):
            self.pop_screen()


def make_app(settings: Settings, feed: SnapshotFeed, link: EngineLink) -> NetmonApp:
    """The UI for ``settings``, showing what ``feed`` publishes and asking ``link``.

    Nothing starts until the app runs: on mount it calls ``feed.start(app.publish)``;
    on quit it calls ``feed.stop()`` and ``link.stop()``.
    """
    return NetmonApp(settings, feed, link)


def export_written(result: ExportResult) -> str:
    """What an export wrote, in lines that fit a notification: the directory once, then
    the file names, the rows each holds, and which cluster the BPF is for."""
    dirs = {os.path.dirname(p) for p in result.paths}
    names = [os.path.basename(p) for p in result.paths]
    where = safe_text(dirs.pop()) + "/" if len(dirs) == 1 else ""
    lines = [f"wrote {result.flows:,} flows and {result.clusters:,} clusters",
             *([f"to {where}"] if where else []),
             *(f"  {safe_text(n if where else p)}" for n, p in zip(names, result.paths,
                                                                  strict=True))]
    if result.bpf:
        lines.append(f"BPF matching cluster {result.bpf_cluster}'s flows "
                     f"(to capture only them): {safe_text(result.bpf, 300)}")
    return "\n".join(lines)


def packets_written(result: PacketExportResult) -> str:
    """"wrote 64 packets of 3 flows to /x.pcapng (120 packets of these flows were not
    kept)": exactly what the file holds and what it lacks."""
    def count(n: int, noun: str) -> str:
        return f"{n:,} {noun}{'' if n == 1 else 's'}"

    text = (f"wrote {count(result.packets, 'packet')} of {count(result.flows, 'flow')} to "
            f"{safe_text(result.path)}")
    if result.not_kept:
        these = "this flow" if result.flows == 1 else "these flows"
        was = "was" if result.not_kept == 1 else "were"
        text += f" ({count(result.not_kept, 'packet')} of {these} {was} not kept)"
    return text
