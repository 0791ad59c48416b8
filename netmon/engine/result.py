"""How a run ended: errors, warnings, the ``--flows-out`` outcome and an internal
error, and the one place that reports them and picks the exit code.

Filled on the engine's reactor thread; read and reported on the main thread after
:meth:`netmon.engine.engine.Engine.join` (the reactor thread is gone by then).
"""

from __future__ import annotations

from typing import Any

from netmon.core.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, SourceError
from netmon.core.text import NAME_MAX, print_line, safe_text


class EngineResult:
    """How a run ended: filled on the reactor thread, read after :meth:`Engine.join`."""

    def __init__(self) -> None:
        self.errors: list[SourceError] = []
        self.warnings: list[str] = []
        self.stop_reason = ""
        self.flows_written = 0
        self.flows_out_error = ""
        self.internal_error = ""  # a bug that stopped a part of netmon (not the counting)

    @property
    def exit_code(self) -> int:
        return self.errors[0].exit_code if self.errors else 0

    def report(self, flows_out: str, err: Any) -> int | None:
        """Print warnings, the flows-out outcome and errors, one line each, to ``err``
        (after the screen is gone, or at the end of a headless run); return the exit
        code they call for, or None when nothing went wrong."""
        for warning in self.warnings:
            if not (self.internal_error and self.internal_error in warning):  # once, below
                print_line(f"netmon: warning: {warning}", err)
        if self.flows_out_error:
            print_line(f"netmon: {self.flows_out_error}", err)
        elif flows_out:
            print_line(f"netmon: wrote {self.flows_written} flows to "
                       f"{safe_text(flows_out, NAME_MAX)}", err)
        if self.internal_error:
            print_line(f"netmon: internal error: {self.internal_error}; every packet was "
                       "still counted (the log has the traceback: please report it)", err)
        for error in self.errors:
            print_line(f"netmon: {error.message}", err)
        if self.errors:
            return self.exit_code
        if self.flows_out_error:
            return EXIT_BAD_INPUT
        return EXIT_INTERNAL if self.internal_error else None
