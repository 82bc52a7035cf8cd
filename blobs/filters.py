"""Query filters for ``GET /secure/files/``. Unknown parameters are ignored; invalid values are a 400
naming the parameter (django-filter's validation, mapped by ``erphub.errors``)."""

from __future__ import annotations

import django_filters

from .models import Blob


class BlobFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(
        field_name="filename",
        lookup_expr="icontains",
        max_length=255,
        help_text="Filename contains (any case).",
    )
    content_type = django_filters.CharFilter(
        max_length=255, help_text="Exact content type, e.g. `image/png`."
    )
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after (ISO 8601)."
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Created before (ISO 8601)."
    )
    # Narrows what the caller may already see: for an owner that is only their own files, so asking for
    # someone else's name returns an empty page — the same as for a name that does not exist.
    owner = django_filters.CharFilter(
        field_name="owner__username", max_length=150, help_text="Owner's username (managers)."
    )
    ordering = django_filters.OrderingFilter(
        fields=(("created_at", "created"), ("filename", "filename"), ("size", "size")),
        help_text="Sort key: created, filename or size; prefix with - to reverse. Default: -created.",
    )

    class Meta:
        model = Blob
        fields: list[str] = []
