"""kms services: recording key rotation runs (keyword-only, one operation each; STYLE.md)."""

from __future__ import annotations

import getpass
import os
from datetime import datetime

from .models import KeyRotation


def cli_actor() -> str:
    """The actor a management command acts as, named like the audit log's system actors (DESIGN §8)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"system:cli:{user}"


def key_rotation_record(
    *,
    kind: str,
    outcome: str,
    started_at: datetime,
    finished_at: datetime,
    actor: str,
    target_provider: str,
    target_key_ref: str,
    selection: str = "",
    examined: int = 0,
    changed: int = 0,
    skipped: int = 0,
    failed: int = 0,
) -> KeyRotation:
    return KeyRotation.objects.create(
        kind=kind,
        outcome=outcome,
        started_at=started_at,
        finished_at=finished_at,
        actor=actor,
        target_provider=target_provider,
        target_key_ref=target_key_ref,
        selection=selection,
        examined=examined,
        changed=changed,
        skipped=skipped,
        failed=failed,
    )
