"""One JSON line per request, for central logging (ELK, Splunk, CloudWatch): written when the response is
really over — for a streamed download when its body ends (completed, aborted by the client, or failed),
not when the view returns — with what an operator searches by:

``{"event": "request", "request_id", "method", "route", "status", "outcome", "bytes", "duration_ms",
"user_id", "blob_id", "remote_addr", ...}``

Never logged: headers (credentials, cookies, tokens), query strings (file names), bodies. ``route`` is the
URL pattern, not the path, so a line names the blob only through ``blob_id``. Rendered by structlog
(``LOGGING`` in settings: logger ``erphub.access``); the request id is the one the audit events carry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import structlog
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from audit.context import request_context
from blobs.metrics import ABORTED, ERROR, SUCCESS  # one vocabulary for how a transfer ended

logger = structlog.get_logger("erphub.access")


class AccessLogMiddleware:
    """Right inside the request-context middleware: the line carries its request id and client address."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        try:
            response = self.get_response(request)
        except BaseException:
            _log(request, None, started, outcome=ERROR, sent=0)
            raise
        if isinstance(response, FileResponse) and response.file_to_stream is not None:
            # A file the server may send with sendfile (wsgi.file_wrapper; static files): replacing its
            # body would lose that path. Django closes the response when the server is done with it.
            _log_on_close(request, response, started)
        elif isinstance(response, StreamingHttpResponse) and not response.is_async:
            body = cast(Iterator[bytes], response.streaming_content)
            response.streaming_content = _counted(body, request, response, started)
        else:
            sent = len(response.content) if isinstance(response, HttpResponse) else 0
            outcome = SUCCESS if response.status_code < 500 else ERROR
            _log(request, response, started, outcome=outcome, sent=sent)
        return response


def _log_on_close(request: HttpRequest, response: FileResponse, started: float) -> None:
    close = response.close
    logged = False

    def close_and_log() -> None:
        nonlocal logged
        try:
            close()
        finally:
            if not logged:
                logged = True
                sent = int(response.get("Content-Length") or 0)  # the file, as handed to the server
                _log(request, response, started, outcome=SUCCESS, sent=sent)

    response.close = close_and_log  # type: ignore[method-assign]  # Django's WSGI handler calls this one


def _counted(
    body: Iterator[bytes], request: HttpRequest, response: HttpResponseBase, started: float
) -> Generator[bytes, None, None]:
    sent = 0
    outcome = ERROR
    try:
        for chunk in body:
            sent += len(chunk)  # bytes handed to the server, as the audit event and the metrics count them
            yield chunk
        outcome = SUCCESS
    except GeneratorExit:
        outcome = ABORTED  # the server closed the body early: the client went away
        raise
    finally:
        _log(request, response, started, outcome=outcome, sent=sent)


def _log(
    request: HttpRequest, response: HttpResponseBase | None, started: float, *, outcome: str, sent: int
) -> None:
    match = request.resolver_match
    kwargs = match.kwargs if match is not None else {}
    user = getattr(request, "user", None)
    context = request_context(request)
    fields: dict[str, Any] = {
        "request_id": context.request_id,
        "method": request.method,
        "route": match.route if match is not None else None,
        "status": response.status_code if response is not None else 500,
        "outcome": outcome,
        "bytes": sent,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "user_id": str(user.pk) if user is not None and user.is_authenticated else None,
        "blob_id": str(kwargs["blob_id"]) if "blob_id" in kwargs else None,
        "remote_addr": context.remote_addr,
    }
    logger.info("request", **fields)
