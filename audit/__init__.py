"""Immutable, tamper-evident audit log (architecture.md §8)."""
