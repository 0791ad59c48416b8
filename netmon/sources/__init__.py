"""Ingest sources on the Twisted reactor thread: capture files and stdin, live capture
(dumpcap/tshark), SSH hosts, the TCP listener and the NetFlow/IPFIX collector, all
behind :class:`netmon.sources.base.Source`; plus interface discovery and the
listener's first-bytes classifier (pure)."""
