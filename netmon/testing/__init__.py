"""Builders and fakes for tests and benchmarks: frames and synthetic captures, NetFlow
datagrams, a fake engine for the UI, a throwaway sshd. Never imported by product code
(an import-linter contract says so)."""
