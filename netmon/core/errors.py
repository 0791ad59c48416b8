"""Errors a user can cause, and netmon's exit codes.

Pure module (no twisted, no textual), so every layer can raise and report them. Each
is shown as one line on stderr and ends netmon with its exit code.
"""

from __future__ import annotations


class SourceError(Exception):
    """A failure the user can cause or fix: shown as one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# Exit codes, so scripts can tell failures apart (documented in the README).
EXIT_INTERNAL = 1  # a bug in netmon (its traceback is in the log); what was counted is kept
EXIT_USAGE = 2
EXIT_NO_TOOL = 3
EXIT_PERMISSION = 4
EXIT_NO_INTERFACE = 5
EXIT_BAD_FILTER = 6
EXIT_BAD_INPUT = 7
EXIT_LISTEN = 8  # cannot listen: port in use, privileged port, no such address
EXIT_CAPTURE_FAILED = 9
EXIT_SSH = 10  # ssh cannot log in, or does not trust the host key
