"""The schema generator: drf-spectacular's, documenting HEAD where a view implements it."""

from __future__ import annotations

from typing import Any

from drf_spectacular import generators


class EndpointEnumerator(generators.EndpointEnumerator):
    """drf-spectacular leaves HEAD out of every schema; ours documents it where a view implements it
    itself (the stream's HEAD answers from the database, unlike a GET without a body)."""

    def get_allowed_methods(self, callback: Any) -> list[str]:
        methods = super().get_allowed_methods(callback)
        view_class = getattr(callback, "cls", None)
        if view_class is not None and "head" in vars(view_class):
            methods.append("HEAD")
        return methods


class SchemaGenerator(generators.SchemaGenerator):
    endpoint_inspector_cls = EndpointEnumerator
