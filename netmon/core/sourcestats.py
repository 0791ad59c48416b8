"""What a source reports beyond its state: a NetFlow/IPFIX collector's counters and
the listener's connections; immutable values, made on the reactor thread by the source
and read by the UI and the JSON output (carried in
:class:`netmon.core.values.SourceStatus`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """A NetFlow/IPFIX collector's counters (cumulative) for the header and JSON.

    ``lost`` is records the exporters' sequence numbers say never arrived;
    ``malformed`` datagrams were dropped whole; ``unknown_dropped`` data sets waited
    for a template that never came; ``shed`` datagrams were not decoded in full: the
    kernel dropped them (netmon was not reading fast enough) or one reached a cap on
    the work one datagram may cause, and its rest was skipped (``shed_reasons``).
    """

    address: str
    exporters: int = 0
    datagrams: int = 0
    records: int = 0
    malformed: int = 0
    lost: int = 0
    templates: int = 0
    unknown_dropped: int = 0
    unknown_buffered: int = 0
    versions: tuple[tuple[int, int], ...] = ()  # (version, datagrams)
    shed: int = 0
    shed_reasons: tuple[tuple[str, int], ...] = ()  # ("kernel", n), (cap name, n), ...

    def summary(self) -> str:
        """One line: "2 exporters, 1,234 records, 0 lost, 1 malformed"."""
        parts = [f"{self.exporters} exporter{'s' if self.exporters != 1 else ''}",
                 f"{self.records:,} records"]
        if self.lost:
            parts.append(f"{self.lost:,} lost")
        if self.malformed:
            parts.append(f"{self.malformed:,} malformed")
        if self.shed:
            parts.append(f"{self.shed:,} shed")
        if self.unknown_dropped or self.unknown_buffered:
            parts.append(f"{self.unknown_dropped + self.unknown_buffered:,} sets "
                         "without template")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {"address": self.address, "exporters": self.exporters,
                "datagrams": self.datagrams, "records": self.records,
                "malformed": self.malformed, "lost": self.lost,
                "templates": self.templates, "unknown_dropped": self.unknown_dropped,
                "unknown_buffered": self.unknown_buffered,
                "versions": {str(v): n for v, n in self.versions}, "shed": self.shed,
                "shed_reasons": dict(self.shed_reasons)}


@dataclass(frozen=True, slots=True)
class ListenerStats:
    """The listener's state for the header and JSON: ports, open connections, refusals.

    Counters are cumulative; ``samples`` holds the latest escaped preview of each
    first-bytes class (plain text, never raw payload, never markup).
    """

    addresses: tuple[str, ...] = ()
    open: int = 0
    accepted: int = 0
    refused: int = 0
    refused_reasons: tuple[tuple[str, int], ...] = ()  # ("global-cap", n), ...
    ended: tuple[tuple[str, int], ...] = ()  # (end reason, connections)
    classes: tuple[tuple[str, int], ...] = ()  # (first-bytes class, connections)
    samples: tuple[tuple[str, str], ...] = ()  # (class, escaped preview)

    def to_json(self) -> dict:
        return {"addresses": list(self.addresses), "open": self.open,
                "accepted": self.accepted, "refused": self.refused,
                "refused_reasons": dict(self.refused_reasons), "ended": dict(self.ended),
                "classes": dict(self.classes), "samples": dict(self.samples)}
