"""``/metrics``: the Prometheus exposition of this process, or of all gunicorn workers (architecture §6, §9).

Gunicorn runs several workers, each with its own counters. With ``PROMETHEUS_MULTIPROC_DIR`` set, every
worker writes its samples to files in that directory and a scrape sums them through a fresh registry holding
only ``MultiProcessCollector`` (the default registry would show only the worker that answered).
The directory must start empty on each server start; ``erphub.gunicorn_conf`` drops a dead worker's
live-only samples.

``METRICS_TOKEN`` set: the scraper sends ``Authorization: Bearer <token>`` (RFC 6750 §2.1), compared in
constant time. Unset: the endpoint is open, for development; ``erphub.W001`` warns in production.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from .errors import error_response


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    # RFC 6750 §2.1 / RFC 9110 §11.1: the scheme name is case-insensitive; the token is compared as bytes.
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def exposition(multiproc_dir: str | None) -> bytes:
    """The text exposition: every worker's samples summed (``multiproc_dir``), else this process's."""
    if not multiproc_dir:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    return generate_latest(registry)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token and not _authorized(request, token):
        # RFC 6750 §3: a 401 names the scheme; no error code without credentials, a wrong one is not told.
        return error_response(
            401,
            detail="A valid metrics bearer token is required.",
            code="not_authenticated",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    response = HttpResponse(exposition(settings.PROMETHEUS_MULTIPROC_DIR), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
