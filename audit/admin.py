"""The audit log in the admin, for auditors: read-only list and detail, filters, search, export of the
selection as JSON lines, and the chain's verification status. Nobody (superusers included) can add,
change or delete an event here; the database would refuse anyway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Min, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from core.actors import Actor

from .exceptions import CheckpointError, HoldInvalid
from .holds import legal_hold_create, legal_hold_release, legal_hold_validate
from .models import AuditEvent, LegalHold, LegalHoldRelease, PurgeAnchor
from .recording import audit_record, event_line
from .sealed import unseal_all
from .verification import audit_chain_status

# The changelist shows the chain's status; walking it on every page view would cost O(events since the last
# checkpoint) each time. Cached per chain head for this long (a tampered row can look verified this long at
# most; audit_verify and its alert are the real control).
STATUS_CACHE_SECONDS = 60


def _chain_status() -> Any:
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    key = f"audit:chain-status:{head[0]}:{head[1]}" if head else "audit:chain-status:empty"
    status = cache.get(key)
    if status is None:
        status = audit_chain_status()
        cache.set(key, status, STATUS_CACHE_SECONDS)
    return status


def _shortened(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters on screen, whole in the tooltip (a UUID: its first 8 digits)."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: max(8, length - 5)])


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    # Fits 1280 px beside the admin's menu and the filters without sideways scrolling: one "target" column,
    # long ids and names cut short on screen (in full on hover and on the detail page; searchable in full).
    # The client address is on the detail page and searchable, not a column.
    list_display = ("number", "when", "who", "what", "target", "outcome")
    list_display_links = ("number", "when")
    list_filter = ("outcome", "action", "actor_type", "target_type", ("timestamp", admin.DateFieldListFilter))
    search_fields = ("=actor", "=actor_id", "action", "=target_id", "=request_id", "=remote_addr", "=hash")
    date_hierarchy = "timestamp"
    ordering = ("-sequence",)
    show_full_result_count = False  # COUNT(*) over years of events on every page is wasted work
    actions = ["export_jsonl"]
    # The detail page: every stored field but ``details``, which the template shows below them, pretty and
    # with sealed values opened (change_view). ``sequence`` and ``timestamp`` are not editable, so Django
    # would leave them out of a read-only page unless named here (the time as stored, to the microsecond).
    fields = (
        ("sequence", "exact_time"),
        ("actor_type", "actor_id", "actor"),
        "action",
        ("target_type", "target_id"),
        "outcome",
        ("remote_addr", "request_id"),
        "user_agent",
        "prev_hash",
        "hash",
    )
    readonly_fields = tuple(name for row in fields for name in ((row,) if isinstance(row, str) else row))

    @admin.display(description="timestamp (UTC)")
    def exact_time(self, event: AuditEvent) -> str:
        # To the microsecond, as stored and hashed (docs/audit.md): the admin's date format drops seconds.
        return event.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    @admin.display(description="#", ordering="sequence")
    def number(self, event: AuditEvent) -> int:
        return event.sequence

    @admin.display(description="time (UTC)", ordering="timestamp")
    def when(self, event: AuditEvent) -> str:
        stamp = event.timestamp.astimezone(UTC)
        return format_html("{}<br>{}", stamp.strftime("%Y-%m-%d"), stamp.strftime("%H:%M:%S"))

    @admin.display(description="actor", ordering="actor")
    def who(self, event: AuditEvent) -> str:
        return _shortened(event.actor, 20)

    @admin.display(description="action", ordering="action")
    def what(self, event: AuditEvent) -> str:
        # May break after a dot (role.<wbr>permissions_add) when the column is narrow.
        return format_html_join(mark_safe(".<wbr>"), "{}", ((part,) for part in event.action.split(".")))

    @admin.display(description="target", ordering="target_type")
    def target(self, event: AuditEvent) -> str:
        if not event.target_type:
            return "—"
        return format_html("{}<br>{}", event.target_type, _shortened(event.target_id, 13))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        if not request.user.has_perm("audit.export_auditevent"):
            actions.pop("export_jsonl", None)
        return actions

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        try:
            context["chain_status"] = _chain_status()
        except CheckpointError as exc:
            context["chain_error"] = exc.detail
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        event = self.get_object(request, object_id)
        # Whoever may read the log may read its sealed values (docs/audit.md, "Sealed details"): the view
        # permission, checked here before anything is opened; Django's view checks it again.
        if event is not None and self.has_view_permission(request, event):
            context["details"] = self._details(request, event)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _details(self, request: HttpRequest, event: AuditEvent) -> dict[str, Any]:
        shown = unseal_all(event.details)
        if shown.opened:
            # Opening personal data is itself an access: recorded like a download, with what was opened.
            audit_record(
                action="audit.unseal",
                actor=Actor.for_user(request.user),
                target_type="audit_event",
                target_id=str(event.sequence),
                request=request,
                details={"fields": shown.opened},
            )
        return {
            "json": json.dumps(shown.details, indent=2, ensure_ascii=False, sort_keys=True),
            "opened": shown.opened,
            "failed": shown.failed,
        }

    @admin.action(description="Export selected events (JSON lines)", permissions=["export"])
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        events = queryset.order_by("sequence")
        bounds = events.aggregate(count=Count("pk"), first=Min("sequence"), last=Max("sequence"))
        audit_record(
            action="audit.export",
            actor=Actor.for_user(request.user),
            target_type="audit_event",
            request=request,
            details={"via": "admin", **bounds},
        )

        def lines() -> Iterator[str]:
            for event in events.iterator(chunk_size=2000):
                yield event_line(event) + "\n"

        response = StreamingHttpResponse(lines(), content_type="application/jsonl; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.jsonl"'
        return response

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("audit.export_auditevent")


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ("reason", "target_type", "target_id", "since", "until")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            legal_hold_validate(
                target_type=data.get("target_type", ""),
                target_id=data.get("target_id", ""),
                since=data.get("since"),
                until=data.get("until"),
            )
        except HoldInvalid as exc:
            # A hold naming nothing is the model's constraint too, which says so in the same words (its
            # violation_error_message): only the errors about one field are added here.
            if exc.field is not None:
                self.add_error(exc.field, exc.detail)
        return data


class LegalHoldReleaseForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the hold ends (recorded in the audit log). Once released, the hold keeps nothing: "
        "the files it named can be deleted and its events purged after the retention period.",
    )


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Holds are placed and released here (by auditors) but never changed or deleted: a release is a row
    of its own (audit/holds.py), and both are audited."""

    form = LegalHoldForm
    list_display = (
        "id",
        "created_at",
        "created_by",
        "reason",
        "target_type",
        "target_id",
        "since",
        "until",
        "status",
    )
    list_display_links = ("id", "created_at")
    fields = ("reason", "target_type", "target_id", "since", "until")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("audit.release_legalhold")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else ("created_at", "created_by", *self.fields, "status")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is None else ("created_at", "created_by", *self.fields, "status")

    @admin.display(description="status")
    def status(self, obj: LegalHold) -> str:
        release = getattr(obj, "release", None) if obj.pk else None
        if release is None:
            return mark_safe("<strong>Active</strong>")
        when = date_format(release.released_at, "DATETIME_FORMAT")
        return format_html("Released {} by {}: {}", when, release.released_by, release.reason)

    def get_list_display(self, request: HttpRequest) -> Any:
        # The status column offers "Release…" only to those who may release (per request: the ModelAdmin
        # is shared by every thread).
        may_release = self.has_release_permission(request)

        @admin.display(description="status")
        def status(obj: LegalHold) -> str:
            shown = self.status(obj)
            if may_release and getattr(obj, "release", None) is None:
                url = reverse("admin:audit_legalhold_release", args=[obj.pk])
                return format_html('{} — <a href="{}">Release…</a>', shown, url)
            return shown

        return (*self.list_display[:-1], status)

    def get_queryset(self, request: HttpRequest) -> QuerySet[LegalHold]:
        return super().get_queryset(request).select_related("release")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {}), "may_release": self.has_release_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def save_model(self, request: HttpRequest, obj: LegalHold, form: Any, change: bool) -> None:
        hold = legal_hold_create(
            actor=Actor.for_user(request.user),
            reason=obj.reason,
            target_type=obj.target_type,
            target_id=obj.target_id,
            since=obj.since,
            until=obj.until,
        )
        obj.pk = hold.pk
        obj._state.adding = False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/release/",
                self.admin_site.admin_view(self.release_view),
                name="audit_legalhold_release",
            ),
            *super().get_urls(),
        ]

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_release_permission(request):
            raise PermissionDenied
        hold = self.get_object(request, object_id)
        if hold is None:
            raise Http404("No such legal hold.")
        form = LegalHoldReleaseForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                legal_hold_release(
                    hold=hold, actor=Actor.for_user(request.user), reason=form.cleaned_data["reason"]
                )
            except HoldInvalid as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"Legal hold #{hold.pk} released.", messages.SUCCESS)
                return redirect("admin:audit_legalhold_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Release legal hold #{hold.pk}",
            "opts": self.model._meta,
            "hold": hold,
            "form": form,
            "already_released": LegalHoldRelease.objects.filter(hold=hold).exists(),
        }
        return TemplateResponse(request, "admin/audit/legalhold/release.html", context)


@admin.register(PurgeAnchor)
class PurgeAnchorAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "cutoff", "retention_days", "created_at", "hash")
