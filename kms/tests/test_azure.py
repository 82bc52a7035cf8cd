"""Azure specifics beyond the contract: the bearer challenge, the context bound inside the payload, TLS."""

from __future__ import annotations

import os

import pytest

from kms.base import WrappedKey
from kms.exceptions import KeyUnavailable, UnwrapFailed
from kms.providers.azure import ALGORITHM, open_payload, seal_payload
from kms.tests.conftest import AZURE_TOKEN, calls
from kms.tests.fakes import StaticTokenCredential


def test_payload_binds_the_context():
    data_key = os.urandom(32)
    sealed = seal_payload(data_key, {"blob_id": "a"})
    assert len(sealed) == 64
    assert open_payload(sealed, {"blob_id": "a"}) == data_key
    assert open_payload(sealed, {"blob_id": "b"}) is None
    assert open_payload(sealed[:-1], {"blob_id": "a"}) is None


def test_the_sdk_answers_the_bearer_challenge_with_our_credential(azure, azure_fake):
    credential = StaticTokenCredential(AZURE_TOKEN)
    provider = azure.provider(credential=credential)
    challenges = azure_fake.challenges
    wrapped = provider.wrap(os.urandom(32), context={"blob_id": "a"})
    assert wrapped.algorithm == ALGORITHM
    # The SDK caches a vault's challenge process-wide, so count challenges over the session; the tenant it
    # asks our credential for can only have come from the fake's WWW-Authenticate header.
    assert azure_fake.challenges >= 1
    del challenges
    scopes, kwargs = credential.requests[0]
    assert scopes == ("https://vault.azure.net/.default",)
    assert kwargs.get("tenant_id") == azure_fake.TENANT


def test_a_token_the_vault_does_not_accept_is_not_retried(azure):
    provider = azure.provider(credential=StaticTokenCredential("stolen-or-expired"))
    before = calls("azure", "wrap")
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context={"blob_id": "a"})
    assert not info.value.transient
    assert calls("azure", "wrap") - before == 1


def test_an_untrusted_certificate_is_refused(azure):
    provider = azure.provider(verify=True)  # system CAs: the fake's self-signed cert fails
    before = calls("azure", "wrap")
    with pytest.raises(KeyUnavailable) as info:
        provider.wrap(os.urandom(32), context={"blob_id": "a"})
    assert "TLS certificate" in str(info.value)
    assert not info.value.transient
    assert calls("azure", "wrap") - before == 1


def test_a_key_ref_from_another_vault_is_refused_without_a_call(azure):
    provider = azure.provider()
    before = calls("azure", "unwrap")
    with pytest.raises(UnwrapFailed):
        provider.unwrap(
            WrappedKey(b"x" * 256, "https://elsewhere.vault.azure.net/keys/k/0123", ALGORITHM), context={}
        )
    assert calls("azure", "unwrap") == before


def test_the_default_credential_is_azure_identitys_and_is_closed_with_the_provider(azure_fake, monkeypatch):
    # No credential option: DefaultAzureCredential, built without any network call, released on close.
    from azure.identity import DefaultAzureCredential

    from kms.providers.azure import AzureKeyVaultKeyProvider

    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    provider = AzureKeyVaultKeyProvider(alias="azure", vault_url=azure_fake.url, key_name="k")
    assert isinstance(provider._credential, DefaultAzureCredential)
    provider.close()
