"""The Prometheus scrape, without Django: the exposition and the bearer-token check (DESIGN §9).

Shared by ``/metrics`` on the app port (:mod:`erphub.metrics`, answered by a gunicorn worker thread) and by
the dedicated metrics listener (:mod:`erphub.metrics_listener`, in the gunicorn master, which never sets
Django up). Both answer the same body to the same token, and refuse the same way.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

CONTENT_TYPE = CONTENT_TYPE_LATEST
# RFC 6750 §3: a 401 names the scheme; no error code without credentials, a wrong one is not told apart.
WWW_AUTHENTICATE = 'Bearer realm="metrics"'
UNAUTHORIZED_DETAIL = "A valid metrics bearer token is required."
UNAUTHORIZED_CODE = "not_authenticated"


def bearer_token_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token (RFC 6750 §2.1)."""
    scheme, _, credentials = authorization.partition(" ")
    # RFC 9110 §11.1: the scheme name is case-insensitive; the token is compared as bytes, in constant time.
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def exposition(multiproc_dir: str | None) -> bytes:
    """The text exposition: every worker's samples summed (``multiproc_dir``), else this process's.

    With ``PROMETHEUS_MULTIPROC_DIR`` every worker writes its samples to files there; a fresh registry holding
    only ``MultiProcessCollector`` sums them (the default registry would show only the process asking).
    """
    if not multiproc_dir:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
