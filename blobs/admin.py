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

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AutocompleteSelect, RelatedFieldWidgetWrapper
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.http.response import HttpResponseBase
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.text import capfirst

from audit.models import AuditEvent
from audit.selectors import audit_events_about
from audit.services import legal_hold_covering
from kms.exceptions import KmsError, UnwrapFailed
from kms.models import KeyRotation

from .conf import blob_setting
from .exceptions import (
    BlobError,
    BlobIntegrityError,
    BlobNotFound,
    ObjectMissing,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from .models import Blob
from .permissions import may_delete_any, may_see_any, may_transfer, may_upload, may_upload_for_others
from .selectors import blob_get_for_user, blob_key_status
from .services import blob_claim, blob_delete, blob_transfer_ownership, blob_verify
from .uploadhandler import EncryptedUploadedFile
from .views import stream_response

# The change page, grouped for a reader: what the file is first, then its integrity, then where and under
# which key it is stored (collapsed: support detail), then where an import came from.
CHANGE_FIELDSETS = (
    (
        None,
        {
            "fields": (
                "owner",
                "download",
                "status",
                "filename",
                "content_type",
                "size_display",
                "created",
                "updated",
            )
        },
    ),
    ("Integrity", {"fields": ("sha256_display", "integrity")}),
    (
        "Storage and key",
        {
            "classes": ("collapse",),
            "fields": (
                "id",
                "storage_alias",
                "storage_name",
                "segment_size",
                "key_provider",
                "key_ref",
                "key_algorithm",
            ),
        },
    ),
    ("Import", {"classes": ("collapse",), "fields": ("legacy_id", "import_source")}),
)
READ_ONLY = tuple(name for _, options in CHANGE_FIELDSETS for name in options["fields"] if name != "owner")

KEY_REF_SHOWN = 28

# Admin times say their zone: a staff member in another office must not read UTC as local time.
TIME_FORMAT = "j M Y, H:i T"


def when(value: datetime | None) -> str:
    return "—" if value is None else date_format(timezone.localtime(value), TIME_FORMAT)


def human_size(size: int) -> str:
    return filesizeformat(size)  # "300.0 MB", with a no-break space: never split over two lines


def badge(kind: str, text: str, title: str = "") -> str:
    return format_html('<span class="blob-badge blob-badge-{}" title="{}">{}</span>', kind, title, text)


def upload_limit() -> str:
    return human_size(blob_setting("MAX_UPLOAD_BYTES"))


class BlobAddForm(forms.ModelForm):
    # The global upload handler has already encrypted the file by the time this form sees it.
    file = forms.FileField(allow_empty_file=True)  # a 0-byte file is a valid blob, as through the API

    class Meta:
        model = Blob
        fields = ["owner"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = blob_setting("MAX_UPLOAD_BYTES")
        field = self.fields["file"]
        field.help_text = (
            f"Up to {human_size(limit)}. Encrypted as it uploads; plaintext never touches the server's disk."
        )
        # Read by upload-progress.js: a file over the limit is refused before a byte is sent.
        field.widget.attrs.update({"data-max-bytes": str(limit), "data-max-size": human_size(limit)})

    def clean_file(self) -> EncryptedUploadedFile:
        upload = self.cleaned_data["file"]
        if not isinstance(upload, EncryptedUploadedFile):
            raise forms.ValidationError("The upload was not received; try again.")
        return upload


class OwnerAutocomplete(AutocompleteSelect):
    """Django's autocomplete widget (select2), asking the blob admin's own owner search instead of the user
    admin's: who may choose an owner (Blob managers) need not be allowed to browse user accounts."""

    def get_url(self) -> str:
        return reverse(f"{self.admin_site.name}:blobs_blob_owner_autocomplete")


class IntegrityFilter(admin.SimpleListFilter):
    title = "integrity"
    parameter_name = "integrity"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("failed", "failed"), ("ok", "not failed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Blob]) -> QuerySet[Blob]:
        if self.value() == "failed":
            return queryset.filter(integrity_failed_at__isnull=False)
        if self.value() == "ok":
            return queryset.filter(integrity_failed_at__isnull=True)
        return queryset


# A blob's history (the admin's History button): its audit events, newest first. A much-downloaded file has
# thousands; the page shows this many and links to the rest in the audit log.
HISTORY_LIMIT = 200

EVENT_LABELS = {
    "blob.upload": "Uploaded",
    "blob.download.start": "Download started",
    "blob.download.end": "Download finished",
    "blob.verify": "Integrity check run",
    "blob.integrity_failure": "Integrity check failed",
    "blob.transfer": "Ownership transferred",
    "blob.delete": "Deleted",
    "blob.rewrap": "Key rewrapped",
    "blob.reencrypt": "Re-encrypted",
    "blob.key_export": "Data key exported",
    "blob.export.start": "Export started",
    "blob.export": "Exported",
    "blob.gc": "Removed by clean-up",
}


# The error codes events record (never messages: they can name key ids), in words.
ERROR_WORDS = {
    "integrity_error": "the stored object failed its integrity check",
    "object_missing": "the stored object is missing",
    "storage_unavailable": "storage was unavailable",
    "kms_error": "the key service failed",
    "kms_unavailable": "the key service was unavailable",
    "kms_key_not_found": "the file's key was not found",
    "kms_unwrap_failed": "the file's key would not unlock",
    "kms_key_mismatch": "the file's key did not match",
}


@dataclass(frozen=True)
class HistoryRow:
    event: AuditEvent
    label: str
    summary: str
    when: str
    url: str | None  # the event in the audit log, for who may read it


def event_summary(event: AuditEvent) -> str:
    """One line a person can read; the full details stay in the audit log."""
    details = event.details or {}
    if error := details.get("error"):
        return ERROR_WORDS.get(error, f"error: {error}")
    if event.action == "blob.download.start":
        ranges = details.get("ranges")
        if not ranges:
            return "the whole file"
        return "bytes " + ", ".join(f"{start}–{stop}" for start, stop in ranges)
    if event.action == "blob.download.end":
        sent = details.get("bytes_sent")
        return "" if sent is None else f"{human_size(sent)} sent"
    if event.action == "blob.verify":
        return "passed" if details.get("ok") else f"FAILED: {details.get('detail', '')}"
    if event.action == "blob.integrity_failure":
        return f"while reading for a {details.get('where', 'read')}"
    if event.action == "blob.transfer":
        owner = (details.get("changes") or {}).get("owner") or {}
        return f"from {owner.get('old', '?')} to {owner.get('new', '?')}"
    if event.action in {"blob.upload", "blob.delete"} and "size" in details:
        return human_size(details["size"])
    return ""


@dataclass(frozen=True)
class DownloadProblem:
    status: int
    what: str
    todo: str


def download_problem(exc: BlobError | KmsError) -> DownloadProblem:
    """What a staff member reads when a download fails before its first byte: what happened, what to do."""
    if isinstance(exc, ObjectMissing):
        return DownloadProblem(
            500,
            "The file's encrypted object is missing from storage: it was deleted, or lost in a restore.",
            "Retrying will not help. Restore the object from the latest backup (the disaster-recovery "
            "runbook), then select the file in the list and run “Verify integrity”.",
        )
    if isinstance(exc, BlobIntegrityError):
        return DownloadProblem(
            500,
            "The stored file failed its integrity check: it was changed or damaged in storage after it was "
            "uploaded. Nothing was sent, and the file is now marked “integrity failed” in the list.",
            "Do not retry. Restore the object from the latest backup, then run “Verify integrity” on it. "
            "If nobody restored or moved it, treat it as possible tampering and tell the security team.",
        )
    if isinstance(exc, UnwrapFailed):
        return DownloadProblem(
            500,
            "The file's key could not be unlocked: the key service refused its wrapped key. "
            "Nothing was sent.",
            "Ask a key administrator to check this file's key on the Key status page; the event below "
            "names the file for them.",
        )
    if isinstance(exc, KmsError):
        return DownloadProblem(
            503,
            "The key service is unavailable, so the file could not be decrypted. Nothing was sent.",
            "Try again in a few minutes. If it goes on, tell a key administrator.",
        )
    if isinstance(exc, StorageUnavailable):
        return DownloadProblem(
            503,
            "Blob storage is unavailable at the moment. Nothing was sent.",
            "Try again in a few minutes. If it goes on, tell the operators.",
        )
    return DownloadProblem(
        exc.status_code, exc.public_detail(), "Try again; if it fails again, tell the operators."
    )


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    change_list_template = "admin/blobs/blob/change_list.html"
    object_history_template = "admin/blobs/blob/object_history.html"
    list_display = ("filename", "owner", "human_size", "status", "key", "created", "download")
    list_filter = ("state", IntegrityFilter, "key_provider", "content_type", "created_at")
    search_fields = ("filename", "=id", "owner__username", "=sha256", "=legacy_id")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    # Django's delete_selected stays: it asks for confirmation and deletes through delete_queryset below.
    actions = ["verify_integrity"]

    class Media:
        css = {"all": ("erphub/admin/blobs.css",)}
        js = ("erphub/admin/upload-progress.js",)

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: Blob) -> str:
        return human_size(obj.size)

    @admin.display(description="size")
    def size_display(self, obj: Blob) -> str:
        return f"{human_size(obj.size)} ({obj.size:,} bytes)" if obj.size >= 1024 else human_size(obj.size)

    @admin.display(description="uploaded", ordering="created_at")
    def created(self, obj: Blob) -> str:
        return when(obj.created_at)

    @admin.display(description="last changed", ordering="updated_at")
    def updated(self, obj: Blob) -> str:
        return when(obj.updated_at)

    @admin.display(description="state", ordering="state")
    def status(self, obj: Blob) -> str:
        # A ready blob whose object failed authentication when read (blobs_verify clears it once it passes).
        if obj.integrity_failed_at is not None:
            return badge(
                "failed",
                "integrity failed",
                f"Reading it failed authentication on {when(obj.integrity_failed_at)}: restore it from a "
                "backup, then run Verify integrity.",
            )
        if obj.state == Blob.State.READY:
            return badge("ready", "ready")
        return badge("pending", "uploading", "Not complete yet: nobody can download it.")

    @admin.display(description="SHA-256")
    def sha256_display(self, obj: Blob) -> str:
        return format_html('<code class="blob-hash">{}</code>', obj.sha256) if obj.sha256 else "—"

    @admin.display(description="integrity check")
    def integrity(self, obj: Blob) -> str:
        if obj.integrity_failed_at is None:
            return "no failure on record"
        return format_html(
            '<span class="blob-badge blob-badge-failed">failed {}</span><div class="blob-help">Its stored '
            "object no longer authenticates. Restore it from the latest backup, then select it in the list "
            "and run “Verify integrity”: a pass clears this mark.</div>",
            when(obj.integrity_failed_at),
        )

    @admin.display(description="key")
    def key(self, obj: Blob) -> str:
        # Cloud key references are long (ARNs, resource paths): the column keeps the end, the tooltip all.
        ref = obj.key_ref if len(obj.key_ref) <= KEY_REF_SHOWN else "…" + obj.key_ref[-KEY_REF_SHOWN:]
        return format_html(
            '<span title="{}: {}">{}: {}</span>', obj.key_provider, obj.key_ref, obj.key_provider, ref
        )

    @admin.display(description="download")
    def download(self, obj: Blob) -> str:
        if obj.state != Blob.State.READY:
            return "—"
        url = reverse(f"{self.admin_site.name}:blobs_blob_download", args=[obj.pk])
        return format_html('<a class="blob-download" href="{}">Download</a>', url)

    # --- forms ------------------------------------------------------------------------------------------

    def get_form(self, request: HttpRequest, obj: Blob | None = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = BlobAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "owner":
            kwargs["widget"] = OwnerAutocomplete(db_field, self.admin_site)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        widget = getattr(field, "widget", None)
        if db_field.name == "owner" and isinstance(widget, RelatedFieldWidgetWrapper):
            # Picking an owner is the task here: no buttons to add, edit or delete user accounts beside it.
            widget.can_add_related = False
            widget.can_change_related = False
            widget.can_delete_related = False
        return field

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
        return [name for _, options in CHANGE_FIELDSETS for name in options["fields"]]

    def get_fieldsets(self, request: HttpRequest, obj: Blob | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": self.get_fields(request)})]
        return CHANGE_FIELDSETS

    def get_readonly_fields(self, request: HttpRequest, obj: Blob | None = None) -> tuple[str, ...]:
        return () if obj is None else READ_ONLY

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"owner": request.user.pk}

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "upload_limit": upload_limit()})

    def response_add(self, request: HttpRequest, obj: Blob, post_url_continue: str | None = None) -> Any:
        response = super().response_add(request, obj, post_url_continue)
        # upload-progress.js sends the form itself: it gets where to go next, not the page the redirect
        # leads to (following it inside the request would spend the "added" message on a page nobody sees).
        if request.headers.get(PROGRESS_HEADER) == "1" and isinstance(response, HttpResponseRedirect):
            return JsonResponse({"location": response.url})
        return response

    # --- changes through the services -----------------------------------------------------------------

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
        # A hold's reason and author often name a case or a person: only those who may read holds see them.
        may_read_holds = request.user.has_perm("audit.view_legalhold")
        for blob in objs:
            hold = legal_hold_covering(target_type="blob", target_id=str(blob.pk))
            if hold is None:
                continue
            if may_read_holds:
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
            else:
                held.append(format_html("{} — under legal hold #{}", blob.filename, hold.pk))
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

    # --- views of our own ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "owners/",
                self.admin_site.admin_view(self.owner_autocomplete_view),
                name=f"{info}_owner_autocomplete",
            ),
            path(
                "<path:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name=f"{info}_download",
            ),
            *super().get_urls(),
        ]

    def owner_autocomplete_view(self, request: HttpRequest) -> HttpResponse:
        """select2's search for the owner field: ``{"results": [{"id", "text"}], "pagination": {"more"}}``,
        the answer Django's own autocomplete view gives, for who may choose an owner only."""
        if not (self.may_choose_owner(request) or may_transfer(request.user)):
            raise PermissionDenied
        term = request.GET.get("term", "").strip()
        users = get_user_model().objects.filter(is_active=True).order_by("username")
        if term:
            users = users.filter(
                Q(username__icontains=term)
                | Q(first_name__icontains=term)
                | Q(last_name__icontains=term)
                | Q(email__icontains=term)
            )
        try:
            page = max(int(request.GET.get("page", "1")), 1)
        except ValueError:
            page = 1
        size = 20
        found = list(users[(page - 1) * size : page * size + 1])
        results = [{"id": str(user.pk), "text": _user_label(user)} for user in found[:size]]
        return JsonResponse({"results": results, "pagination": {"more": len(found) > size}})

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """The admin's Download: the file is always saved (``Content-Disposition: attachment``), whatever its
        type; a failure before the first byte is a page that says what happened and what to do."""
        if request.method not in {"GET", "HEAD"}:
            return HttpResponseNotAllowed(["GET", "HEAD"])
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            blob = blob_get_for_user(user=request.user, blob_id=unquote(object_id))
        except BlobNotFound:
            return self._missing(request, object_id)
        # Only ready blobs are found (an upload in progress is "no such file" too). Not gated by the rollout
        # flag: staff manage blobs whatever it says (docs/flags.md, "Not gated").
        try:
            return stream_response(request, blob, head=request.method == "HEAD", attachment=True)
        except RangeNotSatisfiable:
            raise  # a resumed download asking past the end: the usual 416
        except (BlobError, KmsError) as exc:
            event = (
                audit_events_about(target_type="blob", target_id=str(blob.pk))
                # This user's attempt (the one just made), not someone else's earlier one.
                .filter(action="blob.download.start", outcome="error", actor_id=str(request.user.pk))
                .last()
            )
            return self._download_failed(request, blob, download_problem(exc), event=event)

    def _missing(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # Django's own answer for a missing object in the admin (its change view's): a message and the list.
        self.message_user(
            request, f"No file with ID “{unquote(object_id)}”: perhaps it was deleted.", messages.WARNING
        )
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:blobs_blob_changelist"))

    def _download_failed(
        self, request: HttpRequest, blob: Blob, problem: DownloadProblem, *, event: AuditEvent | None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Download failed: {blob.filename}",
            "opts": self.opts,
            "original": blob,
            "problem": problem,
            "event": event,
            "event_url": self._event_url(request, event),
            "history_url": reverse(f"{self.admin_site.name}:blobs_blob_history", args=[blob.pk]),
        }
        return TemplateResponse(
            request, "admin/blobs/blob/download_failed.html", context, status=problem.status
        )

    @staticmethod
    def _event_url(request: HttpRequest, event: AuditEvent | None) -> str | None:
        if event is None or not request.user.has_perm(AUDIT_VIEW):
            return None
        return reverse("admin:audit_auditevent_change", args=[event.pk])

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        """The blob's audit events (upload, downloads, verifications, transfers; its deletion too, for who
        may see every blob) instead of Django's admin log, which records only the admin's own edits.

        erphub.admin._guard_history wraps this view: the model permission is checked before the lookup."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None and not may_see_any(request.user):
            return self._missing(request, object_id)
        if obj is not None and not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        target_id = str(obj.pk) if obj is not None else unquote(object_id)
        events = audit_events_about(target_type="blob", target_id=target_id)
        total = events.count()
        if obj is None and total == 0:
            return self._missing(request, object_id)
        newest = list(events.reverse()[:HISTORY_LIMIT])
        rows = [
            HistoryRow(
                event=event,
                label=EVENT_LABELS.get(event.action, event.action),
                summary=event_summary(event),
                when=when(event.timestamp),
                url=self._event_url(request, event),
            )
            for event in newest
        ]
        may_audit = request.user.has_perm(AUDIT_VIEW)
        context = {
            **self.admin_site.each_context(request),
            "title": f"History: {obj if obj is not None else target_id}",
            "subtitle": None,
            "module_name": str(capfirst(self.opts.verbose_name_plural)),
            "object": obj,
            "object_id": target_id,
            "opts": self.opts,
            "rows": rows,
            "total": total,
            "shown": len(rows),
            "audit_log_url": (
                reverse("admin:audit_auditevent_changelist") + "?" + urlencode({"q": target_id})
                if may_audit
                else None
            ),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.object_history_template, context)


def _user_label(user: Any) -> str:
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return f"{user.get_username()} — {full}" if full else user.get_username()


PROGRESS_HEADER = "X-Upload-Progress"
AUDIT_VIEW = "audit.view_auditevent"


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
