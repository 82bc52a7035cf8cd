"""The blobs app's settings (``settings.BLOBS``), read through one getter with these defaults (core.conf)."""

from __future__ import annotations

from typing import Any

from core.conf import AppSettings

from .ranges import MAX_RANGES

DEFAULTS: dict[str, Any] = {
    "SEGMENT_SIZE": 1 << 20,  # ciphertext segment size for new blobs (Tink's AES256_GCM_HKDF_1MB)
    "MAX_UPLOAD_BYTES": 10 * 1024**3,  # larger uploads get 413
    "STORAGE_ALIAS": "blobs",  # STORAGES alias for new blobs
    "GC_GRACE_MINUTES": 60,  # blobs_gc leaves pending uploads younger than this alone
    # /ready reports storage "nearly_full" below this much free space (uploads soon answer 507). 0 = off.
    "MIN_FREE_BYTES": 256 * 1024**2,
    "MAX_RANGES": MAX_RANGES,  # a Range header with more ranges is ignored (RFC 9110 §14.3 allows it)
    # Django reads each multipart part's headers up to 1,024 bytes and answers 400 beyond; a 1,000-character
    # file name (up to ~3,000 bytes of UTF-8 as browsers send it) must fit. Not more: Python's header
    # parameter parser is quadratic (cpython gh-136063), and anonymous multipart bodies are refused before
    # parsing (blobs.middleware.MultipartNeedsAuthMiddleware). A power of two >= 1024 (Django doubles up to
    # it). Applied in BlobsConfig.ready.
    "MAX_PART_HEADER_BYTES": 4 * 1024,
    "READ_CHUNK_BYTES": 1 << 20,
    # Object stores (blobs/storage_s3.py): the multipart upload part size (S3: >= 5 MiB; memory per upload),
    # and how far a download's background read runs ahead of the client, which is also what it keeps behind
    # for pacing's re-reads of a segment: at least one segment (memory per download: up to twice this).
    "S3_PART_BYTES": 8 * 1024**2,
    # Azure (blobs/storage_azure.py): the staged block size (>= 1 MiB; memory per upload; 50,000 blocks
    # a blob: 390 GiB at 8 MiB).
    "AZURE_BLOCK_BYTES": 8 * 1024**2,
    "READ_AHEAD_BYTES": 2 * 1024**2,  # how much a raw-body upload reads from the input stream at a time
    "LEGACY_DEPRECATED_AT": "2026-01-01T00:00:00Z",  # /legacy/files/: RFC 9745 Deprecation
    "LEGACY_SUNSET_AT": "2027-01-01T00:00:00Z",  # /legacy/files/: RFC 8594 Sunset
}


blob_setting = AppSettings("BLOBS", DEFAULTS)
