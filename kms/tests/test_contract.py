"""The key-provider contract (kms/base.py), run against every provider (one contract suite for every backend).

local; AWS against moto's KMS server over real HTTP; Vault against a real OpenBao dev server; GCP's real
client against the in-process gRPC fake; Azure's real SDK against the HTTPS fake (bearer challenge included).
Attempts are counted through ``kms_calls_total``, the metric the retry wrapper records per attempt.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from kms.base import WrappedKey
from kms.exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed
from kms.tests.conftest import calls


def ctx() -> dict[str, str]:
    return {"blob_id": str(uuid.uuid4())}


def test_round_trip(backend):
    provider = backend.provider()
    data_key, context = os.urandom(32), ctx()
    wrapped = provider.wrap(data_key, context=context)
    assert data_key not in wrapped.ciphertext
    assert wrapped.key_ref
    assert provider.unwrap(wrapped, context=context) == data_key
    # A second provider instance (another worker) reads it from the row's fields alone.
    again = WrappedKey(bytes(wrapped.ciphertext), wrapped.key_ref, wrapped.algorithm)
    assert backend.provider().unwrap(again, context=context) == data_key


def test_key_ref_is_the_exact_key_version(backend):
    wrapped = backend.provider().wrap(os.urandom(32), context=ctx())
    expected = {
        "local": r"^mk-[0-9a-f]{8}$",
        "aws": r"^arn:aws:kms:eu-west-1:\d{12}:key/[0-9a-f-]{36}$",
        "vault": r"^vault:v1$",
        "gcp": r"^projects/erphub/locations/global/keyRings/blobs/cryptoKeys/k-[0-9a-f]{8}"
        r"/cryptoKeyVersions/1$",
        "azure": r"^https://127\.0\.0\.1:\d+/keys/k-[0-9a-f]{8}/[0-9a-f]{32}$",
    }[backend.name]
    assert re.match(expected, wrapped.key_ref), wrapped.key_ref


def test_another_blobs_context_is_refused_once(backend):
    provider = backend.provider()
    wrapped = provider.wrap(os.urandom(32), context=ctx())
    before = calls(backend.alias, "unwrap")
    with pytest.raises(UnwrapFailed) as info:
        provider.unwrap(wrapped, context=ctx())
    assert info.value.provider == backend.alias
    assert calls(backend.alias, "unwrap") - before == 1  # permanent: not retried
    assert calls(backend.alias, "unwrap", "unwrap_failed") >= 1


def test_tampered_wrapped_key_is_refused(backend):
    provider = backend.provider()
    context = ctx()
    wrapped = provider.wrap(os.urandom(32), context=context)
    flipped = bytearray(wrapped.ciphertext)
    flipped[-3] ^= 0x01  # inside the ciphertext/tag, past any version prefix
    if backend.name == "vault":  # base64 text: change one character to another base64 character
        flipped[-3] = ord("A") if flipped[-3] != ord("A") else ord("B")
    with pytest.raises(UnwrapFailed):
        provider.unwrap(WrappedKey(bytes(flipped), wrapped.key_ref, wrapped.algorithm), context=context)


def test_rotation_keeps_old_blobs_readable_and_rewrap_moves_them(backend):
    provider = backend.provider()
    old_key, old_context = os.urandom(32), ctx()
    old = provider.wrap(old_key, context=old_context)

    backend.rotate_key()
    # Remote KMSs rotate server-side, so the same provider object sees it; local keys are configuration.
    current = backend.provider() if backend.name == "local" else provider

    new_key, new_context = os.urandom(32), ctx()
    new = current.wrap(new_key, context=new_context)
    assert new.key_ref != old.key_ref
    assert current.unwrap(old, context=old_context) == old_key  # by its recorded reference
    assert current.unwrap(new, context=new_context) == new_key

    moved = current.rewrap(old, context=old_context)
    assert moved.key_ref == new.key_ref
    assert moved.ciphertext != old.ciphertext
    assert current.unwrap(moved, context=old_context) == old_key
    with pytest.raises(UnwrapFailed):
        current.rewrap(old, context=new_context)  # rewrap checks the context as unwrap does


def test_missing_key_is_key_not_found_and_not_retried(backend):
    provider = backend.provider()
    context = ctx()
    wrapped = provider.wrap(os.urandom(32), context=context)
    overrides, missing = backend.missing_key(wrapped)
    other = backend.provider(**overrides)
    before = calls(backend.alias, "unwrap")
    with pytest.raises(KeyNotFound):
        other.unwrap(missing, context=context)
    assert calls(backend.alias, "unwrap") - before == 1


def test_transient_errors_are_retried_then_succeed(cloud_backend):
    provider = cloud_backend.provider()
    data_key, context = os.urandom(32), ctx()
    before_failed = calls(cloud_backend.alias, "wrap", "unavailable")
    before_ok = calls(cloud_backend.alias, "wrap", "success")
    cloud_backend.fail_next(2)
    wrapped = provider.wrap(data_key, context=context)
    assert calls(cloud_backend.alias, "wrap", "unavailable") - before_failed == 2
    assert calls(cloud_backend.alias, "wrap", "success") - before_ok == 1

    # Warm up: Azure's CryptographyClient fetches the key version's public half once, swallowing errors.
    assert provider.unwrap(wrapped, context=context) == data_key
    cloud_backend.fail_next(1)
    before = calls(cloud_backend.alias, "unwrap")
    assert provider.unwrap(wrapped, context=context) == data_key
    assert calls(cloud_backend.alias, "unwrap") - before == 2


def test_persistent_transient_errors_end_as_key_unavailable(cloud_backend):
    provider = cloud_backend.provider(max_attempts=3)
    cloud_backend.fail_next(10)
    before = calls(cloud_backend.alias, "wrap", "unavailable")
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context=ctx())
    assert info.value.transient
    assert info.value.retry_after > 0  # the app answers 503 with Retry-After
    assert calls(cloud_backend.alias, "wrap", "unavailable") - before == 3
    cloud_backend.fail_next(0)


def test_a_kms_that_never_answers_fails_within_our_timeout(cloud_backend, black_hole):
    provider = cloud_backend.provider(
        **cloud_backend.hung_options(black_hole.port), connect_timeout=0.3, read_timeout=0.3, max_attempts=2
    )
    before = calls(cloud_backend.alias, "wrap", "unavailable")
    started = time.monotonic()
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context=ctx())
    elapsed = time.monotonic() - started
    assert info.value.transient
    assert calls(cloud_backend.alias, "wrap", "unavailable") - before == 2
    # Bounded by our timeouts (2 attempts of well under 2 s each), not the SDK's minutes. Generous on purpose.
    assert elapsed < 10, elapsed
