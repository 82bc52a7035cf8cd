"""System checks: a misconfigured provider fails `manage.py check` and start-up, not a request.

``erphub/wsgi.py`` runs the checks tagged ``kms`` too, because gunicorn does not run system checks when it
imports the application: a worker without a usable master key refuses to boot.
"""

from __future__ import annotations

from typing import Any

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
