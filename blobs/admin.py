"""Staff UI for blobs: upload, list, download link, verify, transfer ownership, delete — every change
through the blob services (never a bare ``queryset.delete()`` that would orphan objects) — and the key
status page.

The key status page (blobs per provider and key reference, how many need a rewrap to reach the active
key, and the rotation runs, newest first) is the ``kms.KeyRotation`` changelist with the status above it,
so it sits in the admin's menu under Key management like any model. It is registered here, one layer
above kms, because the status counts blobs. Only users with ``kms.view_key_status`` (the "Key
administrators" role, kms/roles.py) see it. Rotation records are written by the commands only: nobody
adds, changes or deletes them here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html

from audit.services import legal_hold_covering
from kms.exceptions import KmsError
from kms.models import KeyRotation

from .models import Blob
from .permissions import may_delete_any, may_transfer, may_upload, may_upload_for_others
from .selectors import blob_key_status
from .services import blob_claim, blob_delete, blob_transfer_ownership, blob_verify
from .uploadhandler import EncryptedUploadedFile

FORMAT_FIELDS = (
    "id",
    "filename",
    "content_type",
    "size",
    "sha256",
    "state",
    "created_at",
    "updated_at",
    "segment_size",
    "storage_alias",
    "storage_name",
    "key_provider",
    "key_ref",
    "key_algorithm",
    "legacy_id",
    "import_source",
)


class BlobAddForm(forms.ModelForm):
    # The global upload handler has already encrypted the file by the time this form sees it.
    file = forms.FileField(
        allow_empty_file=True,  # a 0-byte file is a valid blob, as through the API
        help_text="Encrypted as it uploads; plaintext never touches the server's disk.",
    )

    class Meta:
        model = Blob
        fields = ["owner"]

    def clean_file(self) -> EncryptedUploadedFile:
        upload = self.cleaned_data["file"]
        if not isinstance(upload, EncryptedUploadedFile):
            raise forms.ValidationError("The upload was not received; try again.")
        return upload


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ("filename", "owner", "human_size", "key", "state", "integrity", "created_at")
    list_filter = ("state", "key_provider", "content_type", "created_at")
    search_fields = ("filename", "=id", "owner__username", "=sha256", "=legacy_id")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    # Django's delete_selected stays: it asks for confirmation and deletes through delete_queryset below.
    actions = ["verify_integrity"]
    autocomplete_fields = ()
    raw_id_fields = ("owner",)

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: Blob) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="integrity", ordering="integrity_failed_at")
    def integrity(self, obj: Blob) -> str:
        # A ready blob whose object failed authentication when read (blobs_verify clears it once it passes).
        if obj.integrity_failed_at is None:
            return "ok"
        when = date_format(obj.integrity_failed_at, "DATETIME_FORMAT")
        return format_html('<strong class="errornote">failed {}</strong>', when)

    @admin.display(description="key")
    def key(self, obj: Blob) -> str:
        return f"{obj.key_provider}: {obj.key_ref}"

    @admin.display(description="download")
    def download(self, obj: Blob) -> str:
        if obj.state != Blob.State.READY:
            return "—"
        return format_html('<a href="{}">Download</a>', reverse("blobs:stream", args=[obj.pk]))

    def get_form(self, request: HttpRequest, obj: Blob | None = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = BlobAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    @staticmethod
    def may_choose_owner(request: HttpRequest) -> bool:
        return may_upload_for_others(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_upload(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Blob | None = None) -> bool:
        return may_transfer(request.user)  # the owner is the only editable field

    def has_delete_permission(self, request: HttpRequest, obj: Blob | None = None) -> bool:
        return may_delete_any(request.user)

    def get_fields(self, request: HttpRequest, obj: Blob | None = None) -> list[Any]:
        if obj is None:
            return ["file", "owner"] if self.may_choose_owner(request) else ["file"]
        return ["owner", "download", "integrity", *FORMAT_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj: Blob | None = None) -> tuple[str, ...]:
        return () if obj is None else ("download", "integrity", *FORMAT_FIELDS)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"owner": request.user.pk}

    def save_model(self, request: HttpRequest, obj: Blob, form: forms.ModelForm, change: bool) -> None:
        if change:
            # Only the owner is editable: ownership transfer goes through its service.
            blob_transfer_ownership(blob=obj, new_owner=form.cleaned_data["owner"])
            return
        user = request.user
        assert user.is_authenticated  # the admin site lets in signed-in staff only
        owner = form.cleaned_data["owner"] if self.may_choose_owner(request) else user
        blob = blob_claim(upload=form.cleaned_data["file"].upload, owner=owner)
        for field in Blob._meta.concrete_fields:
            setattr(obj, field.attname, getattr(blob, field.attname))
        obj._state.adding = False

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, Any, list[str]]:
        # A blob under a legal hold is "protected": Django's delete page and the bulk delete action then
        # refuse before anything is deleted, and the templates (admin/blobs/blob/) say why and what to do.
        # blob_delete checks again (a hold placed in between), and so does every other path.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        held = []
        for blob in objs:
            hold = legal_hold_covering(target_type="blob", target_id=str(blob.pk))
            if hold is not None:
                held.append(
                    format_html(
                        "{} — under legal hold #{} ({}), placed by {} on {}",
                        blob.filename,
                        hold.pk,
                        hold.reason,
                        hold.created_by,
                        date_format(hold.created_at, "DATETIME_FORMAT"),
                    )
                )
        return deleted, counts, perms_needed, [*protected, *held]

    def delete_model(self, request: HttpRequest, obj: Blob) -> None:
        blob_delete(blob=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Blob]) -> None:
        for blob in queryset:
            blob_delete(blob=blob)

    @admin.action(description="Verify integrity (decrypt and check SHA-256)", permissions=["view"])
    def verify_integrity(self, request: HttpRequest, queryset: QuerySet[Blob]) -> None:
        good = 0
        for blob in queryset.filter(state=Blob.State.READY):
            try:
                result = blob_verify(blob=blob)
            except KmsError:
                self.message_user(
                    request, f"{blob.filename}: the key service is unavailable.", messages.ERROR
                )
                continue
            if result.ok:
                good += 1
            else:
                self.message_user(
                    request, f"{blob.filename} ({blob.pk}): FAILED — {result.detail}", messages.ERROR
                )
        self.message_user(
            request, f"{good} blob(s) verified OK.", messages.SUCCESS if good else messages.WARNING
        )


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
