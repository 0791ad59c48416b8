"""Numbers for people: decimal-prefixed counts, bytes and rates, three significant
digits at most so they fit narrow columns. One formatter for every output (the
screen, the headless summary line), so the same figure reads the same everywhere.

Pure; any thread.
"""

from __future__ import annotations

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "") -> str:
    """A compact decimal-prefixed number: 950 -> "950", 12345 -> "12.3k", 4.2e6 -> "4.2M".

    Three significant digits at most, so rates fit a 6-column cell.
    """
    v = float(value)
    sign = "-" if v < 0 else ""
    v = abs(v)
    for scale, prefix in _SI:
        if v >= scale * 0.9995:
            n = v / scale
            digits = 0 if n >= 99.95 else 1
            return f"{sign}{n:.{digits}f}{prefix}{unit}"
    if v >= 99.5 or v == int(v):
        return f"{sign}{v:.0f}{unit}"
    return f"{sign}{v:.1f}{unit}"


def human_bytes(n: float) -> str:
    """Bytes with a decimal unit: 999 -> "999B", 1234567 -> "1.2MB"."""
    return si(n, "B")


def human_rate(n: float) -> str:
    """Bytes per second: 1234567 -> "1.2MB/s"."""
    return si(n, "B/s")


def duration(seconds: float) -> str:
    """A short duration: 0.0123 -> "12ms", 75 -> "1m15s", 7384 -> "2h03m"."""
    s = max(float(seconds), 0.0)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"
