"""Which users a percentage rollout includes: pure, no Django (docs/architecture.md §7).

A user's bucket is ``int(sha256(f"{salt}:{user_id}")) mod 10000``: stable across processes, hosts and
restarts (unlike Python's ``hash()``, which is salted per process — the rollout guide's bug), and uniform
enough that the share of ids included tracks the target. ``in_rollout`` compares the bucket with the rollout
in basis points (1/100 of a percent), so raising the rollout only ever adds users: every bucket below p1 is
below p2 > p1 (monotonic by construction). A new salt draws a new, independent cohort.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # basis points: 100.00 % is 10000


def bucket(salt: str, user_id: object) -> int:
    """The user's bucket in ``[0, 10000)`` for ``salt``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_rollout(salt: str, user_id: object, basis_points: int) -> bool:
    """Whether a rollout of ``basis_points`` (0–10000) includes the user."""
    if not 0 <= basis_points <= BUCKETS:
        raise ValueError(f"basis points must be within 0..{BUCKETS}, not {basis_points}")
    return bucket(salt, user_id) < basis_points
