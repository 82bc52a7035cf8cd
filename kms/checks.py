"""System checks: a misconfigured provider fails `manage.py check` and start-up, not a request.

Building each provider is the check: a missing SDK, a missing or unknown option is ImproperlyConfigured
with the fix in its message (kms.E002). Remote providers make no network call here (credentials are
resolved on first use); ``manage.py kms_check`` is the round-trip. Options that switch off TLS or challenge
verification exist for test doubles and are warned about (kms.W001).

``erphub/wsgi.py`` runs the checks tagged ``kms`` too, because gunicorn does not run system checks when it
imports the application: a worker without a usable master key refuses to boot.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import registry
from .exceptions import KmsError


@checks.register("kms")
def check_providers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    try:
        registry.default_alias()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="kms.E001"))
    for alias in registry.provider_aliases():
        try:
            provider = registry.get_provider(alias)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), obj=alias, id="kms.E002"))
            continue
        try:
            # Loads the keys of providers that hold them (local); None, without a call, for a remote KMS.
            provider.active_key_ref()
        except KmsError as exc:
            errors.append(checks.Error(str(exc), obj=alias, id="kms.E003"))
    return errors


# Option values that only a test double on 127.0.0.1 should need.
_TEST_ONLY_OPTIONS = {"verify": False, "insecure": True, "verify_challenge_resource": False}


@checks.register("kms")
def check_transport_security(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    warnings: list[checks.CheckMessage] = []
    for alias, config in settings.KMS_PROVIDERS.items():
        options = config.get("OPTIONS") or {}
        for name, risky in _TEST_ONLY_OPTIONS.items():
            if name in options and options[name] is risky:
                warnings.append(
                    checks.Warning(
                        f"KMS_PROVIDERS[{alias!r}] sets {name}={risky!r}: wrapped keys travel without "
                        "verified TLS or vault identity.",
                        hint="Use it only against a local test double; point verify at a CA bundle instead.",
                        obj=alias,
                        id="kms.W001",
                    )
                )
    return warnings
