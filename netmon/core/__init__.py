"""Layer 0: frozen value types, the UI<->engine link types, errors and settings.

Pure (stdlib and numpy): any thread may import it, and everything else may import it.
It imports nothing else of netmon."""
