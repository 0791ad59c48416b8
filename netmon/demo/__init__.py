"""``netmon demo``: labelled loopback traffic (real Twisted servers and clients) and the
sources that capture it. Runs on the engine's reactor thread."""
