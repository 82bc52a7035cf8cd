"""Signals kms sends to the layers above it (docs/architecture.md: kms imports no app above it).

``master_key_changed`` is sent by ``manage.py local_master_key`` after it created a key file or added a
key: ``action`` (``kms.master_key_create`` / ``kms.master_key_add``), ``key_id``, ``path`` and ``actor``
(a ``core.actors.Actor``) — never key material. The audit app records it; a receiver returns whether it
recorded the change, so the command can say when nothing did (the very first key of a new install is made
before ``migrate`` has created the audit log).
"""

from __future__ import annotations

from django.dispatch import Signal

master_key_changed = Signal()
