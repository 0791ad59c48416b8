"""Untrusted text made safe for a terminal: the one function every output uses.

Pure (stdlib only); any thread. Text from outside netmon (file, interface, host and
source names, addresses, config keys and values, environment values, the stderr of
capture tools and ssh, packet dissections) can hold escape sequences that retitle,
clear or reprogram a terminal. Everything netmon puts on a terminal, the screen as
well as stdout/stderr (messages, the headless summary line, ``netmon interfaces``,
log lines), goes through :func:`safe_text`: capped with :data:`NAME_MAX` where one
value is quoted into a message (so the message's own words survive), and again, as
the last word, by :func:`print_line` or :class:`SafeFormatter` when a line is
printed. JSON output needs
nothing more: ``json.dumps`` writes control characters as ``\\u00XX``.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any, TextIO

#: Characters of one untrusted value quoted inside a message (a file name, a host).
NAME_MAX = 200
#: Characters of one printed line (a message quoting a few capped values fits).
LINE_MAX = 1000


def safe_text(text: object, max_len: int = 0) -> str:
    """``text`` with every character a terminal could act on made visible and inert.

    Control characters (C0, DEL, C1, which include ESC and CSI), format characters
    (bidi overrides, zero-width joiners), surrogates, private-use and unassigned code
    points, and line/paragraph separators become ``\\xNN``/``\\uNNNN`` escapes; tabs
    and odd spaces become one space. So the result is one line. ``max_len`` > 0 cuts
    the result to that many characters with an ellipsis.
    """
    s = text if isinstance(text, str) else str(text)
    if not s.isprintable():
        s = "".join(ch if ch.isprintable() else _neutral(ch) for ch in s)
    if max_len > 0 and len(s) > max_len:
        s = s[: max(max_len - 1, 0)] + "…"
    return s


def _neutral(ch: str) -> str:
    if ch == "\t" or unicodedata.category(ch) == "Zs":
        return " "
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def print_line(text: object, file: TextIO | None = None) -> None:
    """Print ``text`` to ``file`` (stdout) as one safe line of at most LINE_MAX
    characters: how netmon writes every message, warning and summary line."""
    print(safe_text(text, LINE_MAX), file=file, flush=True)


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines are safe on a terminal.

    A record's message becomes one inert line (a newline in it cannot forge a second
    log line); a traceback keeps its lines, each made inert on its own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record), LINE_MAX)

    def formatException(self, ei: Any) -> str:
        return _safe_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _safe_lines(super().formatStack(stack_info))


def _safe_lines(text: str) -> str:
    # Only "\n" breaks a traceback's lines; "\r", "\x85" and the rest stay escaped.
    return "\n".join(safe_text(line, LINE_MAX) for line in text.split("\n"))


#: Payload bytes as ``tshark -z follow,...,ascii`` prints them: printable ASCII,
#: CR and LF as they are, every other byte a dot.
_FOLLOW_ASCII = bytes(b if 0x20 <= b < 0x7F or b in (0x0A, 0x0D) else 0x2E
                      for b in range(256))


def payload_ascii(data: bytes, *, keep_cr: bool = True) -> str:
    """Payload bytes as text by tshark's follow ASCII rule: nothing a terminal acts on
    is left but LF, and CR unless ``keep_cr`` is False (then CRs are dropped, so CRLF
    line ends print as one line break)."""
    text = data.translate(_FOLLOW_ASCII).decode("ascii")
    return text if keep_cr else text.replace("\r", "")
