"""API authentication: simplejwt's bearer tokens, their user loaded by a compiled query.

Its own module, not erphub/tokens.py: DRF resolves ``DEFAULT_AUTHENTICATION_CLASSES`` when its views are
imported, and the token views import DRF's views.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from rest_framework_simplejwt import authentication as jwt_authentication
from rest_framework_simplejwt import exceptions as jwt_exceptions
from rest_framework_simplejwt import tokens as jwt_tokens
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from core.db import CompiledQuery, Param


class JWTAuthentication(jwt_authentication.JWTAuthentication):
    """simplejwt's bearer authentication (``Authorization: Bearer <access token>``), its checks unchanged: the
    token's user must exist and be active (``CHECK_USER_IS_ACTIVE``), and its password hash claim must match
    (``CHECK_REVOKE_TOKEN``: a password change revokes every token).

    Two differences. The user is loaded by a query compiled once (``core.db.CompiledQuery``): every API
    request runs it, and building the ORM query cost more than the query (issue 14). The password claim is
    compared in constant time (``hmac.compare_digest``), since it is derived from the password hash; and a
    user id claim of the wrong type (a token signed with our key by something else) is a 401, not a 500.
    """

    def get_user(self, validated_token: jwt_tokens.Token) -> Any:
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken(_("Token contained no recognizable user identification")) from None
        try:
            found = _user_lookup().rows({"user_id": user_id})
        except (TypeError, ValueError, OverflowError, ValidationError):  # OverflowError: SQLite's int64
            raise InvalidToken(_("Token contained no recognizable user identification")) from None
        if len(found) != 1:
            raise jwt_exceptions.AuthenticationFailed(_("User not found"), code="user_not_found")
        user = found[0]
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise jwt_exceptions.AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if jwt_settings.CHECK_REVOKE_TOKEN:
            claim = validated_token.get(jwt_settings.REVOKE_TOKEN_CLAIM)
            expected = get_md5_hash_password(user.password)
            if not isinstance(claim, str) or not hmac.compare_digest(claim.encode(), expected.encode()):
                raise jwt_exceptions.AuthenticationFailed(
                    _("The user's password has been changed."), code="password_changed"
                )
        return user


@functools.cache
def _user_lookup() -> CompiledQuery[Any]:
    user_model = get_user_model()
    field = user_model._meta.get_field(jwt_settings.USER_ID_FIELD)
    return CompiledQuery(
        user_model,
        lambda user_id: user_model._default_manager.filter(
            **{jwt_settings.USER_ID_FIELD: user_id}
        ).order_by(),
        user_id=Param(-0x5EED0123, field=field),  # type: ignore[arg-type]
    )
