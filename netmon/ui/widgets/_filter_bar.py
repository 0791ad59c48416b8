"""FilterBar: the one-line input that ``/`` opens for netmon's filter language.

UI thread only. Hidden until opened; Enter applies (posts :class:`FilterBar.Applied`),
Esc closes it unchanged (:class:`FilterBar.Closed`). The engine parses the filter and
answers a bad one with a one-line error, which the screen shows.

Keys arrive in bursts when the UI thread is busy (or over a slow SSH link), and
Textual runs a widget's key *bindings* only after the key has bubbled up to the app,
later than the characters that follow it. So the bar takes the keyboard synchronously
when it opens, runs its own bindings (Enter, Esc, Backspace, ...) in the order the keys
came, hands the keyboard back synchronously when it closes, and passes on keys that
were already queued for it: "/port 53⏎p" filters and then pauses, however fast it is
typed.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input

PLACEHOLDER = "host 10.0.0.1 and not port 22 · proto udp or cluster 3 · Enter applies, Esc closes"


class FilterBar(Input):
    """Type a filter; Enter applies it, an empty one clears it."""

    DEFAULT_CSS = """
    FilterBar {
        dock: bottom;
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
        margin: 0 0 1 0;
        background: $panel;
    }
    FilterBar.-open { display: block; }
    FilterBar:focus { border: none; background: $panel; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=True),
    ]

    class Applied(Message):
        """The user pressed Enter with ``value`` as the filter."""

        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    class Closed(Message):
        """The bar closed without a change."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder=PLACEHOLDER, id=id, select_on_focus=False)
        self._return_to: Widget | None = None

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def open(self, current: str) -> None:
        """Show the bar holding ``current`` and take the keyboard now (not on the next
        message, so keys already queued behind ``/`` land here)."""
        if self.is_open:  # "/" typed inside the bar is text; queue it behind the rest
            self.post_message(events.Key("slash", "/"))
            return
        self._return_to = self.screen.focused
        self.value = current
        self.cursor_position = len(current)
        self.add_class("-open")
        self.screen.set_focus(self)

    def _hand_back(self) -> None:
        self.remove_class("-open")
        target = self._return_to
        self.screen.set_focus(target if target is not None and target.is_attached else None)

    def action_close(self) -> None:
        self._hand_back()
        self.post_message(self.Closed())

    async def action_submit(self) -> None:
        self._hand_back()
        self.post_message(self.Applied(" ".join(self.value.split())))

    async def _on_key(self, event: events.Key) -> None:
        if not self.is_open:
            # Typed after Enter/Esc but queued here before the bar closed: pass it on
            # to whatever has the keyboard now.
            event.stop()
            event.prevent_default()
            target = self.screen.focused
            if target is not None and target is not self:
                target.post_message(events.Key(event.key, event.character))
            return
        bindings = self._bindings.key_to_bindings.get(event.key, ())
        if bindings and not event.is_printable:
            event.stop()
            event.prevent_default()
            await self.run_action(bindings[0].action)
            return
        await super()._on_key(event)
