"""Providers by alias in the STORAGES shape; configuration mistakes are ImproperlyConfigured and checks."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from kms import checks, registry
from kms.providers.local import LocalKeyProvider

LOCAL = "kms.providers.local.LocalKeyProvider"


def local_config(key_id: str = "mk-1") -> dict:
    return {"BACKEND": LOCAL, "OPTIONS": {"keys": f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"}}


class NotAProvider:
    def __init__(self, **options):
        pass


def test_storages_shaped_config_builds_each_alias(settings):
    settings.KMS_PROVIDERS = {"local": local_config("mk-a"), "legacy": local_config("mk-old")}
    settings.KMS_DEFAULT_PROVIDER = "local"
    assert registry.provider_aliases() == ["local", "legacy"]
    local, legacy = registry.get_provider("local"), registry.get_provider("legacy")
    assert isinstance(local, LocalKeyProvider)
    assert (local.alias, legacy.alias) == ("local", "legacy")
    assert local.active_key_ref() == "mk-a"
    assert legacy.active_key_ref() == "mk-old"
    assert registry.default_alias() == "local"
    assert registry.default_provider() is local
    assert registry.get_provider("local") is local  # built once, then cached


def test_options_are_optional(settings):
    settings.KMS_PROVIDERS = {"local": {"BACKEND": LOCAL}}
    assert isinstance(registry.get_provider("local"), LocalKeyProvider)


def test_unknown_option_is_improperly_configured_naming_the_accepted_ones(settings):
    settings.KMS_PROVIDERS = {"local": {"BACKEND": LOCAL, "OPTIONS": {"keys": "x", "region": "eu-west-1"}}}
    with pytest.raises(ImproperlyConfigured) as info:
        registry.get_provider("local")
    message = str(info.value)
    assert "'region'" in message
    assert "KMS_PROVIDERS['local']" in message
    for accepted in ("create_if_missing", "key_file", "keys"):
        assert accepted in message


def test_bad_backend_path_says_how_to_fix_it(settings):
    settings.KMS_PROVIDERS = {"cloud": {"BACKEND": "kms.providers.nonexistent.CloudProvider"}}
    with pytest.raises(ImproperlyConfigured) as info:
        registry.get_provider("cloud")
    message = str(info.value)
    assert "kms.providers.nonexistent.CloudProvider" in message
    assert "Install its SDK from requirements.txt" in message


def test_backend_that_is_not_a_key_provider(settings):
    settings.KMS_PROVIDERS = {"odd": {"BACKEND": f"{__name__}.NotAProvider"}}
    with pytest.raises(ImproperlyConfigured, match="is not a KeyProvider"):
        registry.get_provider("odd")


def test_missing_backend(settings):
    settings.KMS_PROVIDERS = {"odd": {"OPTIONS": {}}}
    with pytest.raises(ImproperlyConfigured, match="has no BACKEND"):
        registry.get_provider("odd")


def test_unconfigured_alias(settings):
    settings.KMS_PROVIDERS = {"local": local_config()}
    with pytest.raises(ImproperlyConfigured, match="'aws' is not configured"):
        registry.get_provider("aws")


def test_default_alias_must_be_configured(settings):
    settings.KMS_PROVIDERS = {"local": local_config()}
    settings.KMS_DEFAULT_PROVIDER = "aws"
    with pytest.raises(ImproperlyConfigured) as info:
        registry.default_alias()
    assert "'aws'" in str(info.value)
    assert "['local']" in str(info.value)


def test_override_settings_resets_the_cache(settings):
    settings.KMS_PROVIDERS = {"local": local_config("mk-outer")}
    outer = registry.get_provider("local")
    with override_settings(KMS_PROVIDERS={"local": local_config("mk-inner")}):
        inner = registry.get_provider("local")
        assert inner is not outer
        assert inner.active_key_ref() == "mk-inner"
    restored = registry.get_provider("local")
    assert restored is not inner
    assert restored.active_key_ref() == "mk-outer"


def test_changing_the_default_alias_resets_the_cache(settings):
    settings.KMS_PROVIDERS = {"local": local_config()}
    first = registry.get_provider("local")
    settings.KMS_DEFAULT_PROVIDER = "local"
    assert registry.get_provider("local") is not first


def test_system_checks_pass_for_a_good_config(settings):
    settings.KMS_PROVIDERS = {"local": local_config()}
    settings.KMS_DEFAULT_PROVIDER = "local"
    assert checks.check_providers() == []


def test_system_check_e001_default_alias_not_configured(settings):
    settings.KMS_PROVIDERS = {"local": local_config()}
    settings.KMS_DEFAULT_PROVIDER = "vault"
    errors = checks.check_providers()
    assert [e.id for e in errors] == ["kms.E001"]
    assert "'vault'" in errors[0].msg


def test_system_check_e002_names_the_broken_alias(settings):
    settings.KMS_PROVIDERS = {
        "local": local_config(),
        "broken": {"BACKEND": LOCAL, "OPTIONS": {"typo_option": 1}},
    }
    settings.KMS_DEFAULT_PROVIDER = "local"
    errors = checks.check_providers()
    assert [(e.id, e.obj) for e in errors] == [("kms.E002", "broken")]
    assert "typo_option" in errors[0].msg


def test_manage_py_check_fails_on_a_broken_provider(settings):
    settings.KMS_PROVIDERS = {"local": {"BACKEND": "kms.providers.nope.Provider"}}
    settings.KMS_DEFAULT_PROVIDER = "local"
    with pytest.raises(SystemCheckError, match=r"kms\.E002"):
        call_command("check", tags=["kms"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keys": "garbage"}, "BLOB_MASTER_KEYS: entry 1 is not 'id:base64key'"),
        ({"keys": None, "key_file": "/nonexistent/master.key"}, "/nonexistent/master.key cannot be read"),
        ({}, "No local master key is configured"),
    ],
    ids=["garbage-env-keys", "missing-key-file", "no-key-at-all"],
)
def test_system_check_e003_when_the_local_provider_cannot_load_its_keys(settings, options, message):
    settings.KMS_PROVIDERS = {"local": {"BACKEND": LOCAL, "OPTIONS": options}}
    settings.KMS_DEFAULT_PROVIDER = "local"
    errors = checks.check_providers()
    assert [(e.id, e.obj) for e in errors] == [("kms.E003", "local")]
    assert message in errors[0].msg
    with pytest.raises(SystemCheckError, match=r"kms\.E003"):
        call_command("check", tags=["kms"])


def test_system_check_loads_the_keys_of_every_configured_provider(settings):
    # An old provider that still unwraps old blobs is checked too, not only the default.
    settings.KMS_PROVIDERS = {"local": local_config(), "legacy": {"BACKEND": LOCAL, "OPTIONS": {"keys": "x"}}}
    settings.KMS_DEFAULT_PROVIDER = "local"
    assert [(e.id, e.obj) for e in checks.check_providers()] == [("kms.E003", "legacy")]


@pytest.mark.parametrize(
    ("backend", "options", "missing"),
    [
        ("kms.providers.aws.AwsKmsKeyProvider", {"region": "eu-west-1"}, "KMS_KEY_ID"),
        ("kms.providers.azure.AzureKeyVaultKeyProvider", {"key_name": "k"}, "AZURE_VAULT_URL"),
        ("kms.providers.gcp.GcpKmsKeyProvider", {}, "KMS_KEY_NAME"),
        ("kms.providers.vault.VaultTransitKeyProvider", {"url": "http://127.0.0.1:1"}, "VAULT_TOKEN"),
    ],
    ids=["aws", "azure", "gcp", "vault"],
)
def test_a_cloud_provider_without_its_required_option_is_e002_naming_the_variable(
    settings, backend, options, missing
):
    settings.KMS_PROVIDERS = {"local": local_config(), "cloud": {"BACKEND": backend, "OPTIONS": options}}
    settings.KMS_DEFAULT_PROVIDER = "local"
    errors = checks.check_providers()
    assert [(e.id, e.obj) for e in errors] == [("kms.E002", "cloud")]
    assert missing in errors[0].msg


@pytest.mark.parametrize(
    "backend",
    [
        "kms.providers.aws.AwsKmsKeyProvider",
        "kms.providers.azure.AzureKeyVaultKeyProvider",
        "kms.providers.gcp.GcpKmsKeyProvider",
        "kms.providers.vault.VaultTransitKeyProvider",
    ],
)
def test_cloud_providers_refuse_unknown_options(settings, backend):
    settings.KMS_PROVIDERS = {"cloud": {"BACKEND": backend, "OPTIONS": {"retries": 99}}}
    with pytest.raises(ImproperlyConfigured) as info:
        registry.get_provider("cloud")
    assert "'retries'" in str(info.value)
    assert "read_timeout" in str(info.value)  # the accepted ones are listed


def test_test_only_transport_options_are_warned_about(settings):
    settings.KMS_PROVIDERS = {
        "local": local_config(),
        "vault": {"BACKEND": "kms.providers.vault.VaultTransitKeyProvider", "OPTIONS": {"verify": False}},
    }
    warnings = checks.check_transport_security()
    assert [(w.id, w.obj) for w in warnings] == [("kms.W001", "vault")]
    assert "verify=False" in warnings[0].msg
    settings.KMS_PROVIDERS = {"local": local_config()}
    assert checks.check_transport_security() == []
