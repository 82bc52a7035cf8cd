"""The key status page for key administrators (issue 4): blobs per provider and key reference, how many
need a rewrap to reach the active key, and the rotation runs (kms.KeyRotation), newest first.

It is the KeyRotation changelist with the status above it, so it sits in the admin's menu like any model;
only users with ``kms.view_key_status`` (the "Key administrators" role, kms/roles.py) see it. Rotation
records are written by the commands only: nobody adds, changes or deletes them here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from blobs.selectors import blob_key_status

from .models import KeyRotation

STATUS_PERMISSION = "kms.view_key_status"


@admin.register(KeyRotation)
class KeyRotationAdmin(admin.ModelAdmin):
    change_list_template = "admin/kms/keyrotation/change_list.html"
    list_display = (
        "finished_at",
        "kind",
        "outcome",
        "target_provider",
        "target_key_ref",
        "selection",
        "examined",
        "changed",
        "skipped",
        "failed",
        "actor",
    )
    list_filter = ("kind", "outcome", "target_provider")
    date_hierarchy = "finished_at"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(STATUS_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: KeyRotation | None = None) -> bool:
        return request.user.has_perm(STATUS_PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: KeyRotation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: KeyRotation | None = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The permission check comes first (in the changelist view); the status query runs only for those
        # allowed to see it, when the template renders it.
        context = {
            **(extra_context or {}),
            "title": "Key status",
            "key_status": blob_key_status,
            "last_rotation": KeyRotation.objects.first,
        }
        return super().changelist_view(request, extra_context=context)
