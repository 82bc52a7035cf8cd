"""Vault/OpenBao specifics beyond the contract: the version prefix is the key reference and is checked."""

from __future__ import annotations

import os

import pytest

from kms.base import WrappedKey
from kms.exceptions import KeyUnavailable, UnwrapFailed
from kms.providers.vault import key_ref_of
from kms.tests.conftest import calls


def test_key_ref_of_a_transit_ciphertext():
    assert key_ref_of("vault:v12:abc=") == "vault:v12"
    assert key_ref_of("vault:abc") is None
    assert key_ref_of("") is None


def test_a_ciphertext_disagreeing_with_its_recorded_version_is_refused_without_a_call(vault):
    provider = vault.provider()
    wrapped = provider.wrap(os.urandom(32), context={"blob_id": "b"})
    before = calls("vault", "unwrap")
    with pytest.raises(UnwrapFailed):
        provider.unwrap(
            WrappedKey(wrapped.ciphertext, "vault:v2", wrapped.algorithm), context={"blob_id": "b"}
        )
    assert calls("vault", "unwrap") == before


def test_the_context_is_sent_for_key_derivation(vault, bao_server):
    # Decrypting the stored ciphertext directly with Vault and the same base64 context gives the data key.
    import base64

    from kms.base import encode_context

    server, _proxy = bao_server
    data_key = os.urandom(32)
    context = {"blob_id": "b"}
    wrapped = vault.provider().wrap(data_key, context=context)
    answer = server.client.secrets.transit.decrypt_data(
        name=vault.options["key"],
        ciphertext=wrapped.ciphertext.decode(),
        context=base64.b64encode(encode_context(context)).decode(),
    )
    assert base64.b64decode(answer["data"]["plaintext"]) == data_key


def test_an_untrusted_certificate_is_refused_not_retried(vault, azure_fake):
    # A TLS server with a self-signed certificate (the Azure fake) where Vault is expected; system CAs only.
    provider = vault.provider(url=azure_fake.url, verify=True)
    before = calls("vault", "wrap")
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context={"blob_id": "b"})
    assert "TLS certificate" in str(info.value)
    assert not info.value.transient
    assert calls("vault", "wrap") - before == 1


def test_the_shipped_policy_allows_exactly_what_the_provider_does(vault, bao_server):
    # deploy/kms/vault/erphub-transit.hcl, with this test's key name, on the real OpenBao server.
    from pathlib import Path

    server, _proxy = bao_server
    key = vault.options["key"]
    hcl = (Path(__file__).resolve().parents[2] / "deploy/kms/vault/erphub-transit.hcl").read_text()
    server.client.sys.create_or_update_policy(name=f"p-{key}", policy=hcl.replace("erphub-blobs", key))
    token = server.client.auth.token.create(policies=[f"p-{key}"], ttl="10m")["auth"]["client_token"]

    provider = vault.provider(token=token)
    context = {"blob_id": "b"}
    data_key = os.urandom(32)
    wrapped = provider.wrap(data_key, context=context)
    assert provider.unwrap(wrapped, context=context) == data_key
    server.client.secrets.transit.rotate_key(name=key)
    assert provider.rewrap(wrapped, context=context).key_ref == "vault:v2"

    before = calls("vault", "wrap")
    with pytest.raises(KeyUnavailable) as info:  # another key (and no upsert of a missing one)
        vault.provider(token=token, key=f"{key}-other").wrap(data_key, context=context)
    assert not info.value.transient
    assert calls("vault", "wrap") - before == 1
