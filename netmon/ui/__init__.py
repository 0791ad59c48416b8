"""netmon's terminal UI (Textual, main thread). Imports neither Twisted nor sklearn.

``make_app(settings, feed, link)`` builds the app; ``feed`` delivers snapshots
(:class:`SnapshotFeed`), ``link`` answers drill-down questions
(:class:`~netmon.queries.EngineLink`). Tests use :class:`FixedFeed` and
``netmon.ui.fake.FakeLink``.
"""

from netmon.ui.app import MIN_SIZE, NetmonApp, make_app
from netmon.ui.feed import FixedFeed, SnapshotFeed
from netmon.ui.messages import (
    ExportFinished,
    FlowsListed,
    HostsListed,
    PacketDissected,
    PacketsListed,
    SnapshotPublished,
    SourceFailed,
)
from netmon.ui.themes import DEFAULT_THEME, THEME_ORDER

__all__ = ["DEFAULT_THEME", "MIN_SIZE", "THEME_ORDER", "ExportFinished", "FixedFeed",
           "FlowsListed", "HostsListed", "NetmonApp", "PacketDissected", "PacketsListed",
           "SnapshotFeed", "SnapshotPublished", "SourceFailed", "make_app"]
