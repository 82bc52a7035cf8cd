"""One settings getter shape for every app (DRF's ``api_settings``, waffle's ``get_setting``).

An app declares its settings once — a dict of defaults, each with a comment — and reads them through
``AppSettings(...)``: ``blob_setting = AppSettings("BLOBS", DEFAULTS)``, then ``blob_setting("MAX_RANGES")``.
A deployment sets ``settings.BLOBS = {...}`` with only the keys it changes (``erphub/settings.py`` is the only
place that reads the environment); a dict-valued default is merged the same way one level down. A key the
defaults do not have is a typo: refused at start-up (``validate()`` from the app's ``ready()``) and on every
``override_settings``, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


class AppSettings:
    def __init__(self, name: str, defaults: Mapping[str, Any]) -> None:
        self.name = name
        self.defaults = defaults
        setting_changed.connect(self._on_setting_changed, weak=False)

    def __call__(self, key: str) -> Any:
        if key not in self.defaults:
            raise KeyError(f"Unknown {self.name} setting {key!r}")
        default = self.defaults[key]
        value = self._configured().get(key, default)
        if isinstance(default, dict):
            return {**default, **value}
        return value

    def _configured(self) -> Mapping[str, Any]:
        value = getattr(settings, self.name, None) or {}
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"{self.name} must be a dict of settings, not {type(value).__name__}.")
        return value

    def validate(self) -> None:
        """Refuse unknown keys (here and inside dict-valued settings), naming the known ones."""
        configured = self._configured()
        unknown = set(configured) - set(self.defaults)
        if unknown:
            raise ImproperlyConfigured(
                f"{self.name}: unknown key(s) {sorted(unknown)}; known: {sorted(self.defaults)}."
            )
        for key, default in self.defaults.items():
            if isinstance(default, dict) and key in configured:
                value = configured[key]
                if not isinstance(value, Mapping):
                    raise ImproperlyConfigured(f"{self.name}[{key!r}] must be a dict, not {value!r}.")
                if unknown := set(value) - set(default):
                    raise ImproperlyConfigured(
                        f"{self.name}[{key!r}]: unknown key(s) {sorted(unknown)}; known: {sorted(default)}."
                    )

    def _on_setting_changed(self, *, setting: str, **kwargs: Any) -> None:
        if setting == self.name:
            self.validate()
