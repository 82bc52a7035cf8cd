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
    return errors
