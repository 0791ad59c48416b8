"""LiveTable: a light, keyboard-driven table for data that is replaced every tick.

UI thread only. DESIGN "UI cost facts" measured a 50-row DataTable at ~100 ms per
update; this widget keeps rows as pre-formatted cells, renders only the visible lines
(Line API), caches each row's strip until its cells change, and keeps the cursor on
the same row *key* when the rows are replaced or reordered.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

Cell = str | Text
Row = tuple[Hashable, Sequence[Cell]]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``width`` cells at least; ``flex`` > 0 takes a share of spare width
    (up to ``max_width`` when that is set). ``priority`` 0 is always shown; when the
    minimum widths do not fit, the columns of the highest priority number go first."""

    key: str
    title: str
    width: int
    align: Literal["left", "right"] = "left"
    flex: int = 0
    max_width: int = 0
    priority: int = 0


def min_width(c: Column, sort_key: str = "") -> int:
    """A column's least width: its own; the sorted one's holds its title and arrow."""
    return max(c.width, len(c.title) + 1) if c.key == sort_key else c.width


def shown_columns(columns: Sequence[Column], total: int,
                  hidden: frozenset[str] | set[str] = frozenset(),
                  sort_key: str = "") -> list[bool]:
    """Which of ``columns`` fit in ``total`` cells at their minimum widths: the
    ``hidden`` ones never, then the least important dropped (rightmost first among
    equals) until the rest fit."""
    show = [c.key not in hidden for c in columns]

    def need() -> int:
        n = sum(show)
        return sum(min_width(c, sort_key) for c, s in zip(columns, show, strict=True) if s) \
            + max(n - 1, 0)

    droppable = sorted((i for i, c in enumerate(columns) if c.priority and show[i]),
                       key=lambda i: (-columns[i].priority, -i))
    for i in droppable:
        if need() <= total:
            break
        show[i] = False
    return show


def column_widths(columns: Sequence[Column], total: int,
                  hidden: frozenset[str] | set[str] = frozenset(),
                  sort_key: str = "") -> list[int]:
    """Widths for ``columns`` in ``total`` cells (one space between columns); 0 for a
    column not shown (``hidden``, or dropped for room: see :func:`shown_columns`).
    The ``sort_key`` column's header keeps its title and the sort arrow whole."""
    show = shown_columns(columns, total, hidden, sort_key)
    if not all(show):
        picked = [c for c, s in zip(columns, show, strict=True) if s]
        it = iter(column_widths(picked, total, sort_key=sort_key))
        return [next(it) if s else 0 for s in show]
    widths = [min_width(c, sort_key) for c in columns]
    spare = total - sum(widths) - max(len(columns) - 1, 0)
    flexible = [i for i, c in enumerate(columns) if c.flex > 0]
    while spare > 0 and flexible:
        weight = sum(columns[i].flex for i in flexible)
        given = 0
        for i in list(flexible):
            c = columns[i]
            share = max(1, spare * c.flex // weight)
            if c.max_width:
                share = min(share, c.max_width - widths[i])
            share = min(share, spare - given)
            widths[i] += share
            given += share
            if c.max_width and widths[i] >= c.max_width:
                flexible.remove(i)
        if given == 0:
            break
        spare -= given
    if spare < 0:  # too narrow: shrink flexible columns, rightmost first, to 3 cells
        order = [i for i in reversed(range(len(columns))) if columns[i].flex]
        order += [i for i in reversed(range(len(columns))) if not columns[i].flex]
        for i in order:
            cut = min(-spare, max(widths[i] - 3, 0))
            widths[i] -= cut
            spare += cut
            if spare >= 0:
                break
    return widths


def text_strip(text: Text, console: Console, style: Style, width: int) -> Strip:
    """One line of Rich text as a strip of exactly ``width`` cells over ``style``.

    (Rich drops ``Text.style`` when a text has no spans, so the style is applied to
    the segments here.)
    """
    return Strip(text.render(console)).apply_style(style).adjust_cell_length(width, style)


class LiveTable(Widget, can_focus=True):
    """A table with a header line, a row cursor that follows its row key, and no
    per-cell objects. Subclasses fill it with :meth:`set_rows`."""

    DEFAULT_CSS = """
    LiveTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
    }
    LiveTable > .live-table--header {
        background: $panel;
        color: $text-muted;
        text-style: bold;
    }
    LiveTable > .live-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LiveTable:focus > .live-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    LiveTable > .live-table--empty {
        color: $text-muted;
        text-style: italic;
    }
    App:nocolor LiveTable > .live-table--cursor {
        text-style: reverse bold;
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header", "live-table--cursor", "live-table--empty",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    cursor = reactive(0, repaint=False, init=False)
    """Index of the highlighted row."""

    empty_text = reactive("", layout=False)
    """What the table says when it has no rows (e.g. "waiting for the engine…")."""

    class _Keyed(Message):
        """A message about one of the table's rows or columns (by its key)."""

        def __init__(self, table: LiveTable, key: Hashable) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LiveTable:
            return self.table

    class Selected(_Keyed):
        """Enter was pressed on a row (``key``: the row's)."""

    class HeaderClicked(_Keyed):
        """A column's title was clicked (``key``: the column's; screens sort by it)."""

    class NothingSelected(Message):
        """Enter was pressed on an empty table (a screen may say why it is empty)."""

        def __init__(self, table: LiveTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> LiveTable:
            return self.table

    def __init__(self, columns: Sequence[Column] = (), *, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._columns: tuple[Column, ...] = tuple(columns)
        self._keys: list[Hashable] = []
        self._cells: list[tuple[Cell, ...]] = []
        self._index: dict[Hashable, int] = {}
        self._cache: dict[Hashable, tuple[tuple[Cell, ...], int, Strip]] = {}
        self._top = 0
        self._cursor_key: Hashable | None = None
        self._widths: tuple[tuple[int, str] | int, list[int]] = (-1, [])
        self._hidden: frozenset[str] = frozenset()
        self.sort_key = ""
        """Column key whose header shows the sort arrow."""
        self.sort_descending = True

    # ------------------------------------------------------------ data
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_key(self) -> Hashable | None:
        """Key of the highlighted row (None when the table is empty)."""
        return self._keys[self.cursor] if self._keys else None

    @property
    def keys(self) -> list[Hashable]:
        return list(self._keys)

    def row(self, key: Hashable) -> tuple[Cell, ...] | None:
        i = self._index.get(key)
        return None if i is None else self._cells[i]

    def set_columns(self, columns: Sequence[Column]) -> None:
        self._columns = tuple(columns)
        self._cache.clear()
        self._widths = (-1, [])
        self.refresh()

    def hide_columns(self, keys: frozenset[str]) -> None:
        """Show every column but these (as room allows)."""
        if keys != self._hidden:
            self._hidden = keys
            self._cache.clear()
            self._widths = (-1, [])
            self.refresh()

    def column_at(self, x: int) -> str | None:
        """The key of the column under screen cell ``x`` of this table."""
        at = 0
        for column, w in zip(self._columns, self._column_widths(self.size.width), strict=True):
            if not w:
                continue
            if at <= x < at + w + 1:
                return column.key
            at += w + 1
        return None

    def set_rows(self, rows: Sequence[Row]) -> bool:
        """Replace all rows; the cursor stays on the same key when it is still there
        (else on the same position). Returns False, and repaints nothing, when the
        rows are what the table already shows."""
        keys = [k for k, _ in rows]
        cells = [tuple(c) for _, c in rows]
        if keys == self._keys and cells == self._cells:
            return False
        old_key = self._cursor_key
        # A table as tall as its rows (height: auto) is laid out again when they change.
        resized = len(keys) != len(self._keys)
        self._keys, self._cells = keys, cells
        self._index = {k: i for i, k in enumerate(keys)}
        if len(self._cache) > 4 * len(keys) + 64:
            self._cache = {k: v for k, v in self._cache.items() if k in self._index}
        pos = self._index.get(old_key, min(self.cursor, max(len(keys) - 1, 0)))
        self.set_reactive(LiveTable.cursor, pos)
        self._cursor_key = self.cursor_key
        self._scroll_to_cursor()
        self.refresh(layout=resized)
        return True

    def move_cursor_to(self, key: Hashable) -> bool:
        """Put the cursor on ``key``; False when no row has that key."""
        i = self._index.get(key)
        if i is None:
            return False
        self.cursor = i
        return True

    # ------------------------------------------------------------ cursor
    @property
    def _visible_rows(self) -> int:
        return max(self.size.height - 1, 1)

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self._keys) - 1)) if self._keys else 0

    def watch_cursor(self, _old: int, _new: int) -> None:
        self._cursor_key = self.cursor_key
        self._scroll_to_cursor()
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        visible = self._visible_rows
        top = min(self._top, max(len(self._keys) - visible, 0))
        if self.cursor < top:
            top = self.cursor
        elif self.cursor >= top + visible:
            top = self.cursor - visible + 1
        self._top = max(top, 0)

    def action_cursor(self, step: int) -> None:
        self.cursor += step

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(self._visible_rows - 1, 1)

    def action_jump(self, where: int) -> None:
        self.cursor = where if where >= 0 else len(self._keys) - 1

    def action_select(self) -> None:
        if self._keys:
            self.post_message(self.Selected(self, self._keys[self.cursor]))
        else:
            self.post_message(self.NothingSelected(self))

    def on_resize(self, _event: events.Resize) -> None:
        self._scroll_to_cursor()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._top = max(0, min(self._top + 3, len(self._keys) - self._visible_rows))
        self.refresh()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._top = max(self._top - 3, 0)
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            key = self.column_at(event.x)
            if key is not None:
                self.post_message(self.HeaderClicked(self, key))
            return
        row = self._top + event.y - 1
        if event.y >= 1 and row < len(self._keys):
            if row == self.cursor and event.chain > 1:
                self.action_select()
            self.cursor = row

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._keys) + 1

    # ------------------------------------------------------------ rendering
    def _column_widths(self, width: int) -> list[int]:
        if self._widths[0] != (width, self.sort_key):
            self._widths = ((width, self.sort_key),
                            column_widths(self._columns, width, self._hidden, self.sort_key))
            self._cache.clear()
        return self._widths[1]

    def _strip(self, cells: Sequence[Cell], widths: list[int], style: Style,
               width: int) -> Strip:
        line = Text(style=style, no_wrap=True, end="")
        first = True
        for column, w, cell in zip(self._columns, widths, cells, strict=False):
            if not w:  # not shown at this width
                continue
            if not first:
                line.append(" ")
            first = False
            text = cell.copy() if isinstance(cell, Text) else Text(cell)
            text.truncate(w, overflow="ellipsis")
            pad = w - text.cell_len
            if pad > 0:
                if column.align == "right":
                    line.append(" " * pad)
                    line.append_text(text)
                    continue
                text.append(" " * pad)
            line.append_text(text)
        return text_strip(line, self.app.console, style, width)

    def _header_cells(self) -> list[str]:
        arrow = "▼" if self.sort_descending else "▲"
        return [c.title + (arrow if c.key == self.sort_key and self.sort_key else "")
                for c in self._columns]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        widths = self._column_widths(width)
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("live-table--header")
            return self._strip(self._header_cells(), widths, style, width)
        i = self._top + y - 1
        if i >= len(self._keys):
            if not self._keys and y == 1 and self.empty_text:
                style = base + self.get_component_rich_style("live-table--empty")
                return text_strip(Text(" " + self.empty_text), self.app.console, style, width)
            return Strip.blank(width, base)
        key, cells = self._keys[i], self._cells[i]
        if i == self.cursor:
            # The cursor's colours go over the cells' own (a cluster's colour could be
            # the cursor's background); its text style stays.
            cursor = self.get_component_rich_style("live-table--cursor")
            over = Style(color=cursor.color, bgcolor=cursor.bgcolor)
            strip = self._strip(cells, widths, base + cursor, width)
            return Strip([Segment(text, (seg_style or base) + over, control)
                          for text, seg_style, control in strip], strip.cell_length)
        cached = self._cache.get(key)
        if cached is not None and cached[1] == width and cached[0] == cells:
            return cached[2]
        strip = self._strip(cells, widths, base, width)
        self._cache[key] = (cells, width, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()
