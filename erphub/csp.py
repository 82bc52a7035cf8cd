"""Content-Security-Policy for every response that does not bring its own (CSP Level 3, W3C).

HTML pages (the admin, the login page, ``/files/``, Swagger UI at ``/api/docs/``) run only scripts and styles
served from this origin: none of them is inline, so ``'unsafe-inline'`` is never needed and an injected
``<script>`` or ``onclick=`` does not run. Everything else (the API's JSON, errors included) is data, never a
document: it may load nothing at all. A response that already sets a policy keeps it — the stream's plaintext
answers send ``sandbox`` (blobs/views.py ``STREAM_HEADERS``), which is stricter for what they hold.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

HEADER = "Content-Security-Policy"

# CSP3 §6: each fetch directive names where one kind of resource may come from; default-src covers the rest.
PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",  # files only: no inline script, no eval (§6.1.1 script-src)
        "style-src 'self'",  # files only: no <style> blocks, no style="" attributes
        # Swagger UI's and the admin's stylesheets draw their icons from data: URLs.
        "img-src 'self' data:",
        "object-src 'none'",  # no plugins
        "base-uri 'none'",  # §6.3.1: an injected <base> cannot re-point relative script URLs
        "form-action 'self'",  # §6.4.1: forms post only here (Chromium also checks their redirects)
        "frame-ancestors 'none'",  # §6.4.2: never framed (X-Frame-Options: DENY, for older browsers)
    )
)

# Not a document: a JSON body opened in a browser tab may load and run nothing, and gets a unique origin.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"


def policy_for(content_type: str) -> str:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return PAGE_POLICY if media_type == "text/html" else DATA_POLICY


class ContentSecurityPolicyMiddleware:
    """Adds the policy for the response's media type unless the view set one (issue 15 item 10)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = policy_for(response.get("Content-Type", ""))
        return response
