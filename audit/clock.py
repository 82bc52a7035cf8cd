"""The clock the audit log is stamped with: events, purge cut-offs, export manifests.

Injectable: a test that needs old events replaces ``now`` here, and every module reads it as
``clock.now()``, so that one replacement moves them all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

now: Callable[[], datetime] = timezone.now
