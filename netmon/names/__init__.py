"""Names for flows: pure parsers of DNS answers, TLS/QUIC SNI, HTTP request Host and SSH
banners, the bounded cache of address -> name they feed, and the local processes owning
sockets (read from /proc).

Layer: sits beside ``netflow`` and ``ingest`` (imports only ``core``, the stdlib, numpy and
cryptography); ``flows`` and above may import it. Every parser takes bytes (one datagram,
or a payload prefix fed chunk by chunk), bounds what it buffers, never raises on garbage,
and returns frozen values whose strings are capped and safe for a terminal.
"""
