"""Immutable, tamper-evident audit log (DESIGN §8). Not installed yet: it lands with its own issue."""
