"""Names for flows: passive names from the wire, and the local processes owning sockets."""
