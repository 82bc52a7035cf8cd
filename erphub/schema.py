"""The schema generator: drf-spectacular's, documenting HEAD where a view implements it."""

from __future__ import annotations

from typing import Any

from drf_spectacular import generators
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


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


# Swagger UI's "Authorize" dialog lists the schemes in the schema's order, and drf-spectacular sorts them by
# name: the session cookie came first, and a token pasted there was sent as a cookie named sessionid (401).
SECURITY_SCHEME_DESCRIPTIONS = {
    "jwtAuth": (
        "Paste the access token from POST /api/token/ (the value of \"access\", without \"Bearer \"). "
        "Sent as Authorization: Bearer <token>."
    ),
    "cookieAuth": (
        "The session of a browser signed in to this site (/accounts/login/): the browser sends it by itself, "
        "there is nothing to paste here. A JWT belongs in jwtAuth above."
    ),
}


def security_schemes_jwt_first(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the JWT scheme first (the API's own authentication, as in
    REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES), each scheme saying what goes in it."""
    schemes = result.get("components", {}).get("securitySchemes")
    if schemes:
        ordered = sorted(schemes.items(), key=lambda item: item[0] != "jwtAuth")
        result["components"]["securitySchemes"] = {
            name: {**scheme, "description": SECURITY_SCHEME_DESCRIPTIONS[name]}
            if name in SECURITY_SCHEME_DESCRIPTIONS
            else scheme
            for name, scheme in ordered
        }
    return result


class JWTScheme(SimpleJWTScheme):
    """drf-spectacular's bearer scheme for simplejwt, for our subclass (extensions match the exact class)."""

    target_class = "erphub.authentication.JWTAuthentication"
