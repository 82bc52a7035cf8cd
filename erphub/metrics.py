"""``/metrics``: the Prometheus exposition of this process, or of all gunicorn workers (architecture §6, §9).

Gunicorn runs several workers, each with its own counters. With ``PROMETHEUS_MULTIPROC_DIR`` set, every
worker writes its samples to files in that directory and a scrape sums them
(:func:`erphub.scrape.exposition`).
The directory must start empty on each server start; ``erphub.gunicorn_conf`` drops a dead worker's
live-only samples.

``METRICS_TOKEN`` set: the scraper sends ``Authorization: Bearer <token>`` (RFC 6750 §2.1), compared in
constant time. Unset: the endpoint is open, for development; ``erphub.W001`` warns in production.

This view needs a free worker thread like any request, so while every thread is busy streaming a scrape here
waits. Production scrapes the dedicated listener instead (``METRICS_PORT``, :mod:`erphub.metrics_listener`,
in the gunicorn master), which serves the same body behind the same check; this one stays for development
and tests.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from .errors import error_response
from .scrape import (
    CONTENT_TYPE,
    UNAUTHORIZED_CODE,
    UNAUTHORIZED_DETAIL,
    WWW_AUTHENTICATE,
    bearer_token_matches,
    exposition,
)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token and not bearer_token_matches(request.headers.get("Authorization", ""), token):
        return error_response(
            401,
            detail=UNAUTHORIZED_DETAIL,
            code=UNAUTHORIZED_CODE,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    response = HttpResponse(exposition(settings.PROMETHEUS_MULTIPROC_DIR), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
