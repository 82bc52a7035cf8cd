"""``/health`` (the process is up) and ``/ready`` (it can serve: database, blob storage, key provider).

Neither waits on the key service: ``/health`` touches nothing external, and ``/ready`` reads what the process
last learned about the key provider (kms.health: real traffic's calls, failures at once, and a background
round-trip when nothing is recent). Storage below ``BLOBS["MIN_FREE_BYTES"]`` free (one statvfs) is reported
as nearly full. Bodies are JSON and name what failed, never secrets.
"""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from blobs.conf import blob_setting
from blobs.exceptions import StorageUnavailable
from blobs.storage import blob_store
from kms.exceptions import KeyMismatch, KmsError
from kms.health import provider_health
from kms.registry import default_alias
from kms.services import kms_confirm_active_key


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except DatabaseError as exc:
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    try:
        store = blob_store(blob_setting("STORAGE_ALIAS"))
        store.check()
        checks["storage"] = {"ok": True}
        free, floor = store.free_bytes(), blob_setting("MIN_FREE_BYTES")
        if free is not None and free < floor:
            # Uploads fail with 507 soon or already: say so (issue 15 item 19), but stay ready. The volume is
            # shared by every pod (architecture.md §11), so failing here would take the whole Service out,
            # downloads included, over a condition that only refuses uploads.
            checks["storage"] = {"ok": True, "nearly_full": True, "detail": "free space below MIN_FREE_BYTES"}
    except StorageUnavailable as exc:
        checks["storage"] = {"ok": False, "detail": exc.detail}
    alias = default_alias()
    kms = provider_health(alias)
    age = None if kms.age_seconds is None else round(kms.age_seconds, 1)
    checks["kms"] = {"ok": kms.ok, "provider": alias, "checked_seconds_ago": age}
    if kms.age_seconds is None:
        checks["kms"]["detail"] = "key provider not checked yet"
    elif not kms.ok:
        checks["kms"]["detail"] = "key provider round-trip failed"
    elif checks["database"]["ok"]:
        try:
            kms_confirm_active_key(alias=alias)
        except KeyMismatch:
            checks["kms"].update(ok=False, detail="master key differs from the one recorded for its id")
        except (KmsError, DatabaseError):
            checks["kms"].update(ok=False, detail="master key check failed")
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
