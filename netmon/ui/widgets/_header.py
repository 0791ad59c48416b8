"""HeaderBar: two lines saying what netmon reads, how fast, and what it lost.

UI thread only. Redrawn only when the shown snapshot or the pause state changes; all
text from outside (source names, details) goes through ``safe_text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from netmon.core.text import safe_text
from netmon.core.units import duration, human_rate, si
from netmon.core.values import Snapshot
from netmon.ui.format import (
    grouped,
)
from netmon.ui.widgets._live_table import text_strip


@dataclass(frozen=True, slots=True)
class ViewState:
    """What a header shows: the snapshot on screen and, when paused, the newest one."""

    shown: Snapshot | None = None
    latest: Snapshot | None = None
    paused: bool = False

    @property
    def pending_snapshots(self) -> int:
        if not self.paused or self.shown is None or self.latest is None:
            return 0
        return max(self.latest.seq - self.shown.seq, 0)

    @property
    def pending_packets(self) -> int:
        if not self.paused or self.shown is None or self.latest is None:
            return 0
        return max(self.latest.totals.packets - self.shown.totals.packets, 0)


def source_state(snap: Snapshot) -> str:
    """One word for the sources' state ("running", "finished", "failed", ...)."""
    if snap.finished:
        return "finished"
    states = [s.state for s in snap.sources]
    for worst in ("failed", "restarting", "reconnecting", "starting"):
        if worst in states:
            return worst
    return states[0] if states else "running"


_TONES = {"running": "good", "failed": "bad"}


class HeaderBar(Widget):
    """Source, state, rates and loss counters, plus the pause and SSH notes."""

    DEFAULT_CSS = """
    HeaderBar {
        dock: top;
        height: 2;
        background: $panel;
        color: $foreground;
    }
    HeaderBar > .header--title { color: $primary; text-style: bold; }
    HeaderBar > .header--good { color: $success; text-style: bold; }
    HeaderBar > .header--bad { color: $error; text-style: bold; }
    HeaderBar > .header--neutral { color: $warning; text-style: bold; }
    HeaderBar > .header--value { text-style: bold; }
    HeaderBar > .header--muted { color: $text-muted; }
    HeaderBar > .header--paused {
        background: $warning;
        color: $background;
        text-style: bold;
    }
    App:nocolor HeaderBar > .header--paused { text-style: reverse bold; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "header--title", "header--good", "header--bad", "header--neutral",
        "header--value", "header--muted", "header--paused",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = ViewState()
        self.context = ""
        """Where the user is (e.g. "cluster 3 › flows"), shown after the state."""

    def show(self, state: ViewState) -> None:
        if state != self.state:
            self.state = state
            self.refresh()

    def set_context(self, context: str) -> None:
        if context != self.context:
            self.context = context
            self.refresh()

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"header--{name}")

    def _first_line(self) -> Text:
        snap = self.state.shown
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(" netmon ", self._style("title"))
        if snap is None:
            line.append("waiting for the first snapshot…", self._style("muted"))
            return line
        if len(snap.sources) > 1 and not snap.finished:
            # Several sources (SSH hosts, collectors): each with its own state.
            for i, src in enumerate(snap.sources):
                line.append((", " if i else "") + safe_text(src.name, 32) + " ")
                line.append(src.state, self._style(_TONES.get(src.state, "neutral")))
        else:
            names = ", ".join(safe_text(s.name, 40) for s in snap.sources) or "no source"
            line.append(names + " ")
            state = source_state(snap)
            line.append(state, self._style(_TONES.get(state, "neutral")))
        line.append("  ")
        line.append(si(snap.pkt_rate), self._style("value"))
        line.append(" pkt/s  ")
        line.append(human_rate(snap.byte_rate), self._style("value"))
        # A finished replay shows what the whole capture averaged, and says so.
        line.append(" average  " if snap.averaged else "  ")
        line.append(grouped(snap.totals.flows_live), self._style("value"))
        line.append(" flows  ")
        line.append(f"{len(snap.clusters)}", self._style("value"))
        line.append(" clusters")
        return line

    def _second_line(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        state, snap = self.state, self.state.shown
        line.append(" ")
        if state.paused:
            line.append(" PAUSED ", self._style("paused"))
            line.append(f" {state.pending_snapshots} updates, "
                        f"{si(state.pending_packets)} pkts pending ", self._style("neutral"))
        if snap is not None:
            t = snap.totals
            dropped = sum(s.dropped for s in snap.sources)
            for label, value in (("drops", dropped), ("evicted", t.flows_evicted),
                                 ("undecodable", t.skipped)):
                line.append(f"{label} ")
                line.append(si(value), self._style("bad" if value else "value"))
                line.append("  ")
            failed = [s for s in snap.sources
                      if s.state in ("failed", "restarting", "reconnecting") and s.detail]
            if failed:
                line.append(safe_text(failed[0].detail, 60) + "  ", self._style("bad"))
            listening = [s for s in snap.sources if s.state == "running" and s.detail
                         and (s.listener is not None or s.collector is not None)]
            for src in listening[:2]:  # listener connections, collector records and loss
                line.append(safe_text(src.detail, 60) + "  ", self._style("neutral"))
            if snap.ssh_excluded:
                line.append(f"excluding ssh {safe_text(snap.ssh_excluded, 48)}  ",
                            self._style("muted"))
            of = " of capture" if snap.clock == "capture" else ""
            line.append(f"up {duration(snap.elapsed)}{of}  ", self._style("muted"))
        if self.context:
            line.append(safe_text(self.context), self._style("muted"))
        return line

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y > 1:
            return Strip.blank(width, base)
        text = self._first_line() if y == 0 else self._second_line()
        text.truncate(width, overflow="ellipsis")
        return text_strip(text, self.app.console, base, width)
