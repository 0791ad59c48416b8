"""HexView: a frame's bytes as Wireshark's bytes pane shows them (offset, 16 bytes in
hex, the same 16 as ASCII), with one byte range highlighted and scrolled into view.

UI thread only. Bytes are packet content: the ASCII column shows 0x20-0x7e as
themselves and every other byte as ``.``, so no raw byte reaches the terminal. Only
the rows on screen are rendered (line API), so a 64 KiB frame costs no more than a
short one when the highlight moves.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

#: Bytes per row, as Wireshark, xxd and ``tshark -x`` show them.
ROW = 16
_ASCII = bytes(c if 0x20 <= c < 0x7F else 0x2E for c in range(256)).decode("ascii")


def ascii_column(data: bytes) -> str:
    """``data`` as printable ASCII: bytes outside 0x20-0x7e become ``.``."""
    return "".join(_ASCII[b] for b in data)


def offset_digits(size: int) -> int:
    """Hex digits of the offset column: 4 up to 64 KiB, more beyond."""
    return max(4, len(f"{max(size - 1, 0):x}"))


def hex_row(data: bytes, row: int, digits: int = 4) -> str:
    """Row ``row`` of ``data`` as plain text: ``0010  45 00 ... 00 00  E.......``."""
    chunk = data[row * ROW:(row + 1) * ROW]
    cells = [f"{b:02x}" for b in chunk] + ["  "] * (ROW - len(chunk))
    hexpart = " ".join(cells[:8]) + "  " + " ".join(cells[8:])
    return f"{row * ROW:0{digits}x}  {hexpart}  {ascii_column(chunk)}"


def row_width(digits: int = 4) -> int:
    """Cells of one row: offset, two spaces, 16 hex cells, two gaps, ASCII."""
    return digits + 2 + (ROW * 3 - 1 + 1) + 2 + ROW


class HexView(ScrollView, can_focus=False):
    """The bytes of one frame; :meth:`highlight` marks the selected field's bytes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"hex-view--offset", "hex-view--highlight"}

    DEFAULT_CSS = """
    HexView {
        background: $surface;
        color: $foreground;
        scrollbar-size-vertical: 1;
    }
    HexView > .hex-view--offset { color: $text-muted; }
    HexView > .hex-view--highlight { background: $accent; color: $text; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data = b""
        self.span: tuple[int, int] = (0, 0)
        """The highlighted bytes: (start, end), end exclusive; (0, 0) for none."""
        self._digits = 4

    def show_bytes(self, data: bytes) -> None:
        """Show ``data`` (a new frame), nothing highlighted, from the top."""
        self.data = bytes(data)
        self.span = (0, 0)
        self._digits = offset_digits(len(self.data))
        rows = (len(self.data) + ROW - 1) // ROW
        self.virtual_size = Size(row_width(self._digits), rows)
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def highlight(self, start: int, length: int) -> None:
        """Mark bytes ``start`` .. ``start + length - 1`` (start < 0 or length 0: none)
        and scroll so that their first rows are on screen."""
        end = min(start + length, len(self.data))
        span = (start, end) if start >= 0 and end > start else (0, 0)
        if span == self.span:
            return
        self.span = span
        self.refresh()
        if span != (0, 0):
            first, last = span[0] // ROW, (span[1] - 1) // ROW
            height = min(last - first + 1, max(self.scrollable_content_region.height, 1))
            self.scroll_to_region(Region(0, first, 1, height), animate=False, force=True)

    def highlighted_rows(self) -> list[int]:
        """The rows holding highlighted bytes (for tests and the status line)."""
        if self.span == (0, 0):
            return []
        return list(range(self.span[0] // ROW, (self.span[1] - 1) // ROW + 1))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        row = scroll_y + y
        base = self.rich_style
        if row * ROW >= len(self.data) or width <= 0:
            return Strip.blank(width, base)
        strip = Strip(self._segments(row, base))
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _segments(self, row: int, base: Style) -> list[Segment]:
        """Row ``row`` as a few runs of text: offset, hex before / in / after the
        highlight, then the same for ASCII (a highlighted run keeps its gaps, so the
        field reads as one block, as in Wireshark)."""
        at = row * ROW
        chunk = self.data[at:at + ROW]
        text = hex_row(chunk, 0, self._digits)  # this row's text, offset fixed below
        offset = f"{at:0{self._digits}x}"
        muted = base + self.get_component_rich_style("hex-view--offset", partial=True)
        segs = [Segment(offset, muted)]
        lo, hi = max(self.span[0] - at, 0), min(self.span[1] - at, len(chunk))
        hex_at = self._digits + 2
        ascii_at = hex_at + ROW * 3 + 2  # 16 cells, their gaps, two spaces
        if lo >= hi:  # nothing of this row is highlighted
            segs.append(Segment(text[self._digits:], base))
            return segs
        lit = base + self.get_component_rich_style("hex-view--highlight", partial=True)

        def cell(i: int) -> int:  # column of byte i's first hex digit
            return hex_at + 3 * i + (1 if i >= 8 else 0)

        for a, b, c in ((self._digits, cell(lo), cell(hi - 1) + 2),
                        (cell(hi - 1) + 2, ascii_at + lo, ascii_at + hi)):
            segs.append(Segment(text[a:b], base))
            segs.append(Segment(text[b:c], lit))
        segs.append(Segment(text[ascii_at + hi:], base))
        return segs
