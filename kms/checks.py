"""System checks: a misconfigured provider fails `manage.py check` and start-up, not a request."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import registry


@checks.register("kms")
def check_providers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    try:
        registry.default_alias()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="kms.E001"))
    for alias in registry.provider_aliases():
        try:
            registry.get_provider(alias)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), obj=alias, id="kms.E002"))
    return errors
