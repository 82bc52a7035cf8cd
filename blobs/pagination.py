"""Page-number pagination whose bad input is a 400 naming the parameter, not a silent default."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request


def _positive_int(request: Request, name: str, *, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    # isascii: str.isdigit() is also true for "²" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        limit = f" between 1 and {maximum}" if maximum is not None else ""
        raise exceptions.ValidationError({name: [f"Must be a whole number{limit}."]})
    return int(raw)


class BlobPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        return _positive_int(request, self.page_size_query_param, maximum=self.max_page_size) or (
            self.page_size or 50
        )

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        _positive_int(request, self.page_query_param)  # "page=abc" is a 400; "page=999" stays DRF's 404
        return super().paginate_queryset(queryset, request, view)
