"""Ingest sources (Twisted, reactor thread): capture files, stdin and live capture."""

from netmon.sources.base import Source, SourceError
from netmon.sources.capture import CaptureSpec, LiveCapture
from netmon.sources.files import FileSource, StdinSource

__all__ = ["CaptureSpec", "FileSource", "LiveCapture", "Source", "SourceError", "StdinSource"]
