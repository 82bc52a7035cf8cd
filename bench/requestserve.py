"""URLconf of bench/bench_requests.py: the product's URLs plus a plaintext range view of the same file.

Bench-only (bench/settings_requests.py), never deployed. ``/bench/plain-range`` answers ``Range: bytes=a-b``
from the plaintext file with plain Django (no authentication, no audit, no decryption): what a range request
costs Django itself, the floor the audited API is compared against.
"""

from __future__ import annotations

import re

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


urlpatterns = [path("bench/plain-range", plain_range), *product_urlpatterns]
