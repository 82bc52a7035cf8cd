"""Immutable, tamper-evident audit log (DESIGN §8)."""
