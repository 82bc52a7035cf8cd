"""System checks for the BLOBS settings: a value every upload or download would trip over fails
``manage.py check`` (and start-up), not each request with a 500."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core import checks

from . import crypto
from .conf import blob_setting


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@checks.register("blobs")
def check_blob_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    segment_size = blob_setting("SEGMENT_SIZE")
    try:
        crypto.StreamParams(segment_size=segment_size)
    except crypto.ParameterError as exc:
        errors.append(
            checks.Error(
                f"BLOBS['SEGMENT_SIZE'] (BLOB_SEGMENT_SIZE) = {segment_size!r} is not a valid segment size: "
                f"{exc}.",
                hint="Use the default 1048576 (1 MiB) unless you have measured a reason not to.",
                id="blobs.E001",
            )
        )
    for name, env, error_id in (
        ("MAX_UPLOAD_BYTES", "BLOB_MAX_UPLOAD_BYTES", "blobs.E002"),
        ("MAX_RANGES", None, "blobs.E003"),
    ):
        value = blob_setting(name)
        if not _positive_int(value):
            source = f" ({env})" if env else ""
            errors.append(
                checks.Error(f"BLOBS[{name!r}]{source} = {value!r} must be a positive integer.", id=error_id)
            )
    header_limit = blob_setting("MAX_PART_HEADER_BYTES")
    if not (_positive_int(header_limit) and header_limit >= 1024 and header_limit & (header_limit - 1) == 0):
        errors.append(
            checks.Error(
                f"BLOBS['MAX_PART_HEADER_BYTES'] = {header_limit!r} must be a power of two of at least 1024: "
                "Django's multipart parser doubles its header window from 1,024 bytes up to it.",
                id="blobs.E005",
            )
        )
    for name in ("LEGACY_DEPRECATED_AT", "LEGACY_SUNSET_AT"):
        value = blob_setting(name)
        try:
            parsed = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors.append(
                checks.Error(
                    f"BLOBS[{name!r}] ({name}) = {value!r} is not an ISO 8601 date-time with a time zone.",
                    hint="For example 2027-01-01T00:00:00Z.",
                    id="blobs.E004",
                )
            )
    errors.extend(_object_store_checks())
    return errors


def _object_store_checks() -> list[checks.CheckMessage]:
    # Only where an S3 alias is configured: the filesystem store has no parts and reads no ahead.
    from django.conf import settings

    entries = [entry for entry in settings.STORAGES.values() if isinstance(entry, dict)]
    backends = [str(entry.get("BACKEND", "")) for entry in entries]
    if not any(backend.endswith("s3.S3Storage") for backend in backends):
        return []
    from .storage_s3 import MIN_PART_BYTES

    messages: list[checks.CheckMessage] = []
    part = blob_setting("S3_PART_BYTES")
    if not (_positive_int(part) and part >= MIN_PART_BYTES):
        messages.append(
            checks.Error(
                f"BLOBS['S3_PART_BYTES'] = {part!r}: S3 takes no multipart part under {MIN_PART_BYTES} "
                "(5 MiB).",
                id="blobs.E006",
            )
        )
    ahead, segment = blob_setting("READ_AHEAD_BYTES"), blob_setting("SEGMENT_SIZE")
    if _positive_int(ahead) and _positive_int(segment) and ahead < segment:
        messages.append(
            checks.Warning(
                f"BLOBS['READ_AHEAD_BYTES'] = {ahead} is less than a segment ({segment}): a slow client's "
                "download from S3 fetches a segment again for every piece cut from it.",
                hint="Keep READ_AHEAD_BYTES at least one segment (the default is two 1 MiB segments).",
                id="blobs.W001",
            )
        )
    return messages
