"""kms services: recording key rotation runs (keyword-only, one operation each)."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from django.db import transaction

from core.actors import Actor

from .base import WrappedKey
from .exceptions import KeyMismatch, UnwrapFailed
from .models import KeyRotation, MasterKeyCheck
from .registry import get_provider

#: ``witness(alias, key_ref)`` -> one existing wrapped key under that key and its context, or None. Apps that
#: store wrapped keys register one (blobs does), so that a key id's first check is proven, not just trusted.
KeyWitness = Callable[[str, str], tuple[WrappedKey, Mapping[str, str]] | None]
_witnesses: list[KeyWitness] = []

_confirmed_lock = threading.Lock()
_confirmed: set[tuple[str, str, bytes]] = set()  # (alias, key_ref, check value) already matched here


def key_rotation_record(
    *,
    kind: str,
    outcome: str,
    started_at: datetime,
    finished_at: datetime,
    actor: Actor,
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
        actor=actor.name,
        target_provider=target_provider,
        target_key_ref=target_key_ref,
        selection=selection,
        examined=examined,
        changed=changed,
        skipped=skipped,
        failed=failed,
    )


def kms_confirm_key(*, alias: str, key_ref: str) -> None:
    """Refuse a master key whose bytes differ from those recorded for its id (KeyMismatch, a 503).

    Providers that hold their own keys have no check value and pass. The first check of an id records it;
    a match is remembered in the process, so this costs one query per key id and worker.
    """
    check = get_provider(alias).key_check(key_ref)
    if check is None:
        return
    token = (alias, key_ref, check)
    with _confirmed_lock:
        if token in _confirmed:
            return
    with transaction.atomic():  # a savepoint: a failing query must not poison the caller's transaction
        row = MasterKeyCheck.objects.filter(provider=alias, key_ref=key_ref).first()
        if row is None:
            # Nothing recorded yet (a new id, or data from before the record existed): if something is
            # already wrapped under this id, the configured key must open it before it is recorded.
            _prove_with_witness(alias=alias, key_ref=key_ref)
            row, _ = MasterKeyCheck.objects.get_or_create(
                provider=alias, key_ref=key_ref, defaults={"check_value": check}
            )
    if not hmac.compare_digest(bytes(row.check_value), check):
        raise KeyMismatch(
            f"Master key {key_ref!r} is not the key this installation recorded under that id on "
            f"{row.recorded_at:%Y-%m-%d}: restore the original bytes for {key_ref!r} from backup, or give "
            "a new key a new id (manage.py local_master_key --add). Nothing is wrapped under it meanwhile.",
            provider=alias,
            key_ref=key_ref,
        )
    with _confirmed_lock:
        _confirmed.add(token)


def register_key_witness(witness: KeyWitness) -> None:
    if witness not in _witnesses:
        _witnesses.append(witness)


def _prove_with_witness(*, alias: str, key_ref: str) -> None:
    for witness in _witnesses:
        found = witness(alias, key_ref)
        if found is None:
            continue
        wrapped, context = found
        try:
            get_provider(alias).unwrap(wrapped, context=context)
        except UnwrapFailed:
            raise KeyMismatch(
                f"Master key {key_ref!r} does not open the data keys already wrapped under that id: restore "
                f"the original bytes for {key_ref!r} from backup, or give a new key a new id "
                "(manage.py local_master_key --add). Nothing is wrapped under it meanwhile.",
                provider=alias,
                key_ref=key_ref,
            ) from None
        return


def kms_wrap(*, alias: str, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
    """Wrap ``data_key`` with the provider ``alias``, refusing a wrong master key under a known id
    (:func:`kms_confirm_key`) before the wrapped key is handed out to be stored anywhere."""
    wrapped = get_provider(alias).wrap(data_key, context=context)
    kms_confirm_key(alias=alias, key_ref=wrapped.key_ref)
    return wrapped


def kms_confirm_active_key(*, alias: str) -> None:
    """:func:`kms_confirm_key` for the key new wraps would use, where the provider knows it without a call."""
    key_ref = get_provider(alias).active_key_ref()
    if key_ref is not None:
        kms_confirm_key(alias=alias, key_ref=key_ref)
