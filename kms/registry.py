"""Key providers by alias, configured like STORAGES (architecture.md §4).

``KMS_PROVIDERS = {alias: {"BACKEND": "dotted.path", "OPTIONS": {...}}}``; ``KMS_DEFAULT_PROVIDER`` names
the alias that wraps new data keys. Providers are built lazily, once per process, and rebuilt when
``override_settings`` changes either setting (Django's own storages handler does the same).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .base import KeyProvider

_lock = threading.Lock()
_providers: dict[str, KeyProvider] = {}


def provider_aliases() -> list[str]:
    return list(settings.KMS_PROVIDERS)


def get_provider(alias: str) -> KeyProvider:
    provider = _providers.get(alias)
    if provider is not None:
        return provider
    with _lock:
        provider = _providers.get(alias)
        if provider is None:
            provider = _providers[alias] = _build(alias)
    return provider


def default_alias() -> str:
    alias = settings.KMS_DEFAULT_PROVIDER
    if alias not in settings.KMS_PROVIDERS:
        raise ImproperlyConfigured(
            f"KEY_PROVIDER / KMS_DEFAULT_PROVIDER is {alias!r}, but KMS_PROVIDERS only configures "
            f"{sorted(settings.KMS_PROVIDERS)}."
        )
    return alias


def default_provider() -> KeyProvider:
    return get_provider(default_alias())


def _build(alias: str) -> KeyProvider:
    try:
        config: Mapping[str, Any] = settings.KMS_PROVIDERS[alias]
    except KeyError:
        raise ImproperlyConfigured(
            f"Key provider {alias!r} is not configured in KMS_PROVIDERS ({sorted(settings.KMS_PROVIDERS)})."
        ) from None
    backend = config.get("BACKEND")
    if not backend:
        raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}] has no BACKEND.")
    try:
        cls = import_string(backend)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"KMS_PROVIDERS[{alias!r}]: cannot import {backend!r} ({exc}). "
            "Install its SDK from requirements.txt."
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, KeyProvider)):
        raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}]: {backend!r} is not a KeyProvider.")
    return cls(alias=alias, **config.get("OPTIONS", {}))


def reset() -> None:
    with _lock:
        built = list(_providers.values())
        _providers.clear()
    for provider in built:
        provider.close()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"KMS_PROVIDERS", "KMS_DEFAULT_PROVIDER"}:
        reset()
