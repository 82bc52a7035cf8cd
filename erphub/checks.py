"""System checks for the project's own settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register()
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG or settings.METRICS_TOKEN:
        return []
    return [
        checks.Warning(
            "METRICS_TOKEN is not set: /metrics is open to anyone who can reach the server.",
            hint="Set METRICS_TOKEN and give the same token to the Prometheus scrape job (deploy/README.md).",
            id="erphub.W001",
        )
    ]
