"""URLconf of bench/bench_requests.py: the product's URLs plus a plaintext range view of the same file.

Bench-only (bench/settings_requests.py), never deployed. ``/bench/plain-range`` answers ``Range: bytes=a-b``
from the plaintext file with plain Django (no authentication, no audit, no decryption): what a range request
costs Django itself, the floor the audited API is compared against.

``/bench/floor-range/{blob_id}`` is the audited 1-byte range's unskippable work (bench/bench_floor.py's
``_framework_free_range``: PyJWT, a DB-API connection of its own for the user, the blob and the durable
start event in the product's chain, one segment decrypted) inside a plain Django view, under the product's
middleware like ``/bench/plain-range``: a per-request floor for any path that keeps Django's handler (each
access's one event committed alone: no group commit). Each concurrent request takes an instance (its own
database connection) from this process's free list: at most as many per process as the event worker admits at
once (``SERVER_MAX_ACTIVE_REQUESTS``, 8).
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from erphub.urls import urlpatterns as product_urlpatterns

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def plain_range(request: HttpRequest) -> HttpResponse:
    match = _RANGE.fullmatch(request.headers.get("Range", ""))
    with open(settings.BENCH_PLAIN_FILE, "rb") as handle:
        if match is None:
            return HttpResponse(handle.read(), content_type="application/octet-stream")
        start, end = int(match[1]), int(match[2])
        handle.seek(start)
        response = HttpResponse(
            handle.read(end - start + 1), status=206, content_type="application/octet-stream"
        )
        response["Content-Range"] = f"bytes {start}-{end}/*"
        return response


# Idle floor instances of this process, by blob: a greenlet takes one for its request and puts it back.
_floors: dict[str, list[Any]] = {}


def floor_range(request: HttpRequest, blob_id: str) -> HttpResponse:
    from django.contrib.auth.models import User

    from bench.bench_floor import _framework_free_range

    match = _RANGE.fullmatch(request.headers.get("Range", ""))
    if match is None or match[1] != match[2]:
        return HttpResponse("one 1-byte range only", status=400)
    idle = _floors.setdefault(blob_id, [])
    if idle:
        run = idle.pop()
    else:
        reader = User.objects.get(username="reader")
        run, _ = _framework_free_range(token="", blob_id=blob_id, reader=reader, queue_writers=True)
    try:
        headers, body = run(int(match[1]), authorization=request.headers.get("Authorization", ""))
    finally:
        idle.append(run)
    response = HttpResponse(body, status=206)
    for name, value in headers:
        response[name] = value
    return response


urlpatterns = [
    path("bench/plain-range", plain_range),
    path("bench/floor-range/<str:blob_id>", floor_range),
    *product_urlpatterns,
]
