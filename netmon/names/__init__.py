"""Passive names from the wire: DNS answers, TLS/QUIC SNI, HTTP Host, banners."""
