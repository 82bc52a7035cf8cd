"""The audit log in the admin, for auditors: read-only list and detail, filters, search, export of the
selection as JSON lines, and the chain's verification status. Nobody (superusers included) can add,
change or delete an event here; the database would refuse anyway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core.cache import cache
from django.db.models import Count, Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from core.actors import Actor

from .exceptions import CheckpointError
from .holds import legal_hold_create
from .models import AuditEvent, LegalHold, PurgeAnchor
from .recording import audit_record, event_line
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


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "sequence",
        "timestamp",
        "actor",
        "action",
        "target_type",
        "target_id",
        "outcome",
        "remote_addr",
    )
    list_filter = ("outcome", "action", "actor_type", "target_type", ("timestamp", admin.DateFieldListFilter))
    search_fields = ("=actor", "=actor_id", "action", "=target_id", "=request_id", "=remote_addr", "=hash")
    date_hierarchy = "timestamp"
    ordering = ("-sequence",)
    show_full_result_count = False  # COUNT(*) over years of events on every page is wasted work
    actions = ["export_jsonl"]

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


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Holds can be placed (by auditors) but never changed or lifted here: they are append-only."""

    list_display = ("created_at", "created_by", "reason", "target_type", "target_id", "since", "until")
    fields = ("reason", "target_type", "target_id", "since", "until")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

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


@admin.register(PurgeAnchor)
class PurgeAnchorAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "cutoff", "retention_days", "created_at", "hash")
