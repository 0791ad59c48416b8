"""The ``netmon`` command: argument parsing, wiring of sources and engine, and the
headless and terminal runners. Main thread; the top of the layers."""
