"""The audit app's services, the one place other apps import them from.

Each is defined in the module of its job and only re-exported here:

- ``recording``: ``audit_record`` (in the caller's transaction), ``audit_record_after`` (after the fact,
  retried), and ``request_context`` (from ``context``) for code that records outside the middleware;
- ``verification``: ``audit_chain_status``, ``audit_checkpoint``;
- ``holds``: ``legal_hold_create``, ``legal_hold_release``, ``legal_hold_covering``, ``register_hold_target``;
- ``retention``: ``audit_purge``;
- ``export``: ``audit_export``, ``audit_export_verify``.

The audit app's own modules import from those modules directly.
"""

from __future__ import annotations

from .context import request_context
from .export import audit_export, audit_export_verify
from .holds import (
    HoldTarget,
    legal_hold_covering,
    legal_hold_create,
    legal_hold_release,
    register_hold_target,
)
from .recording import audit_record, audit_record_after
from .retention import audit_purge
from .verification import audit_chain_status, audit_checkpoint

__all__ = [
    "HoldTarget",
    "audit_chain_status",
    "audit_checkpoint",
    "audit_export",
    "audit_export_verify",
    "audit_purge",
    "audit_record",
    "audit_record_after",
    "legal_hold_covering",
    "legal_hold_create",
    "legal_hold_release",
    "register_hold_target",
    "request_context",
]
