"""netmon's terminal UI (Textual, main thread). Imports only :mod:`netmon.core`: never
Twisted, scikit-learn or the engine (import-linter contracts in pyproject.toml).

``make_app(settings, feed, link)`` builds the app; ``feed`` delivers snapshots
(:class:`SnapshotFeed`), ``link`` answers drill-down questions
(:class:`~netmon.core.link.EngineLink`). Tests use :class:`FixedFeed` and
:class:`netmon.testing.fake_engine.FakeLink`.

The names below load on first use (PEP 562), so importing a light module such as
:mod:`netmon.ui.format` does not start Textual.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it.
_EXPORTS = {
    "MIN_SIZE": "app", "NetmonApp": "app", "make_app": "app",
    "FixedFeed": "feed", "SnapshotFeed": "feed",
    "ExportFinished": "messages", "FlowsListed": "messages", "HostsListed": "messages",
    "PacketDissected": "messages", "PacketsListed": "messages",
    "SnapshotPublished": "messages", "SourceFailed": "messages",
    "DEFAULT_THEME": "themes", "THEME_ORDER": "themes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
