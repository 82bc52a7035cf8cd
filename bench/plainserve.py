"""Plaintext FileResponse baselines for bench/bench_download.py (the anchors in performance-anchors.md).

The URLconf of bench/settings_bench.py only: no auth, one fixed file, never part of the product's URLs.

- ``/bench/plain``: Django's FileResponse as is. Under gunicorn's default (sendfile on) the file goes out
  through ``wsgi.file_wrapper`` and ``socket.sendfile``: anchor (a).
- ``/bench/plain-1mib``: the same with ``block_size = 1 MiB``; run under ``--no-sendfile`` it is the
  plaintext Python copy loop: anchor (b).
- ``/bench/ctr-1mib``: django-encrypted-files 0.0.10 (the anchors' peer: AES-CTR, unauthenticated, one
  global key) serving the same plaintext from its own format with 1 MiB reads, under ``--no-sendfile`` (with
  sendfile gunicorn would send its ciphertext: its file object exposes the real ``fileno()``).
- ``/foundation/files/...``: the pre-DRF stream and raw-upload views (bench/foundationserve.py).
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpRequest
from django.urls import path

from erphub import health

from .foundationserve import FoundationStreamView, FoundationUploadView


def _open() -> FileResponse:
    # The response closes the file when the server is done with it.
    return FileResponse(open(settings.BENCH_PLAIN_FILE, "rb"), content_type="application/octet-stream")


def plain(request: HttpRequest) -> FileResponse:
    return _open()


def plain_1mib(request: HttpRequest) -> FileResponse:
    response = _open()
    response.block_size = 1 << 20  # Django's default is 4 KiB: ~0.5 GB/s without sendfile
    return response


def ctr_1mib(request: HttpRequest) -> FileResponse:
    from encrypted_files.base import EncryptedFile  # bench-only dependency (requirements-dev.txt)

    key = bytes.fromhex(settings.BENCH_CTR_KEY)
    response = FileResponse(
        EncryptedFile(open(settings.BENCH_CTR_FILE, "rb"), key=key),  # noqa: SIM115 — the response closes it
        content_type="application/octet-stream",
    )
    response.block_size = 1 << 20
    return response


urlpatterns = [
    path("bench/plain", plain),
    path("bench/plain-1mib", plain_1mib),
    path("bench/ctr-1mib", ctr_1mib),
    path("health", health.health),
    # bench/bench_api.py: the foundation's views, for the DRF API's comparison.
    path("foundation/files/", FoundationUploadView.as_view()),
    path("foundation/files/<str:blob_id>/stream", FoundationStreamView.as_view()),
]
