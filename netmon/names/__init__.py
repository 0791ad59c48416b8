"""Names for flows: passive names from the wire (DNS answers, TLS/QUIC SNI, HTTP Host,
banners) and the local processes owning sockets."""
