"""Writing what netmon saw: the export bundle (CSV, JSON, BPF) and ``--flows-out``.
Atomic file writers; imports flows and core only."""
