"""JWT endpoints (simplejwt): obtain, refresh with rotation, blacklist (logout).

Access tokens live minutes (``SIMPLE_JWT``); a refresh returns a new refresh token and blacklists the
old one, so a stolen refresh token works once at most. A deactivated user is refused by every endpoint
and by ``JWTAuthentication`` at once; a password change revokes every token (``CHECK_REVOKE_TOKEN``).
``flushexpiredtokens`` (simplejwt's command) removes expired blacklist rows: deploy/ runs it on a schedule.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import tokens as jwt_tokens
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenBlacklistSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.utils import datetime_from_epoch, get_md5_hash_password

from audit.services import audit_record
from core.actors import Actor
from core.schema import error_responses

from . import login_throttle


def check_claims(payload: dict[str, Any]) -> None:
    """Refuse (``TokenError``, answered 401) a validly signed token whose claims no token of ours has.

    Only this server can sign, so such a token means a leaked signing key or a bug; either way it must be
    refused, not reach a query: simplejwt looks the user up with the claim as it is, and ``"abc"`` or
    ``[1]`` for an integer primary key raised ValueError/TypeError there (500; issue 15, item 4), while
    ``true`` or ``1.5`` would have named user 1. The blacklist reads ``jti`` before checking it is present.
    """
    jti = payload.get(jwt_settings.JTI_CLAIM)
    if not isinstance(jti, str) or not jti:
        raise TokenError("Token has no id")
    user_id = payload.get(jwt_settings.USER_ID_CLAIM)
    # simplejwt writes an int primary key as an int and any other as a str (RefreshToken.for_user).
    if isinstance(user_id, bool) or not isinstance(user_id, int | str):
        raise TokenError("Token contained no recognizable user identification")
    field = get_user_model()._meta.get_field(jwt_settings.USER_ID_FIELD)
    assert isinstance(field, models.Field)  # USER_ID_FIELD names a column, never a relation
    try:
        value = field.to_python(user_id)
        field.run_validators(value)  # an integer beyond the column's range, among others
    except ValidationError:
        raise TokenError("Token contained no recognizable user identification") from None
    if value is None or str(value) != str(user_id):  # one spelling per user: not " 1" or "01"
        raise TokenError("Token contained no recognizable user identification")


class AccessToken(jwt_tokens.AccessToken):
    """simplejwt's access token (``AUTH_TOKEN_CLASSES``), refused before any lookup if its claims are odd."""

    def verify(self) -> None:
        check_claims(self.payload)
        super().verify()


class RefreshToken(jwt_tokens.RefreshToken):
    """simplejwt's refresh token, for the refresh and blacklist endpoints: the same check, before its
    blacklist lookup."""

    access_token_class = AccessToken

    def verify(self) -> None:
        check_claims(self.payload)
        super().verify()


def _actor_from_token(raw: str) -> Actor:
    """The user a token that was just accepted (or minted) here names."""
    from rest_framework_simplejwt.state import token_backend

    try:
        # decode() takes the encoded token (a str); the stubs name simplejwt's Token class.
        user_id = token_backend.decode(raw, verify=True).get(jwt_settings.USER_ID_CLAIM)  # type: ignore[arg-type]
    except TokenError:
        return Actor.anonymous()
    user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
    return Actor.for_user(user) if user is not None else Actor(type="user", id=str(user_id), name="")


def _audited(action: str, request: Request, call: Any, *, user: Any = None) -> Response:
    """Run the token view; record the outcome (never a token, never a password). A failed obtain is also
    recorded by the auth signal (``auth.login_failed``) with the attempted username. ``user`` returns the
    user the view's serializer loaded, if it did: the actor without reading the user again (issue 14)."""
    try:
        response: Response = call()
    except exceptions.APIException as exc:
        audit_record(
            action=action,
            actor=Actor.anonymous(),
            target_type="token",
            outcome="denied",
            details={"code": str(exc.get_codes()) if hasattr(exc, "get_codes") else type(exc).__name__},
            request=request,
        )
        raise
    if response.status_code == 200:
        data = response.data if isinstance(response.data, dict) else {}
        sent = request.data if hasattr(request.data, "get") else {}
        known = user() if user is not None else None
        raw = data.get("access") or sent.get("refresh")  # logout answers {}: the revoked token names the user
        if known is not None:
            actor = Actor.for_user(known)
        else:
            actor = _actor_from_token(raw) if isinstance(raw, str) else Actor.anonymous()
        audit_record(action=action, actor=actor, target_type="token", target_id=actor.id, request=request)
    return response


def _is_unicode(text: str) -> bool:
    """JSON can carry lone surrogates ("\\ud800"), which no database column or log line can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh, with three gaps closed.

    - Replay: simplejwt checks the blacklist when it reads the token and blacklists it later with
      ``get_or_create``, so concurrent requests with one refresh token all pass and each mints a new token
      family. Here using a refresh token is one atomic claim — creating its ``BlacklistedToken`` (a
      one-to-one row) — and every request but the one that created it is refused.
    - Revocation: simplejwt checks the password-hash claim on access tokens only; a refresh token stolen
      before a password change would keep minting access tokens.
    - A deleted user: simplejwt's ``.get()`` would be a 500.
    """

    token_class = RefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            refresh = self.token_class(attrs["refresh"])  # signature, expiry, type, blacklist (a first pass)
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        user_id = refresh.get(jwt_settings.USER_ID_CLAIM)
        if user_id is None:
            raise InvalidToken("Token contained no recognizable user identification.")
        user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not jwt_settings.USER_AUTHENTICATION_RULE(user):
            raise exceptions.AuthenticationFailed(
                "No active account found for the given token.", "no_active_account"
            )
        claim = str(refresh.get(jwt_settings.REVOKE_TOKEN_CLAIM, ""))
        # Bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500 before).
        if not hmac.compare_digest(claim.encode(), get_md5_hash_password(user.password).encode()):
            raise InvalidToken("Token has been revoked.")
        self._claim(refresh, user)
        self.user = user
        data = {"access": str(refresh.access_token)}
        # ROTATE_REFRESH_TOKENS and BLACKLIST_AFTER_ROTATION are on (settings): a new refresh token. Recorded
        # here with the user in hand: simplejwt's outstand() reads the user again and get_or_creates a row
        # whose jti was just drawn (issue 14: three statements fewer).
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        data["refresh"] = str(refresh)
        OutstandingToken.objects.create(
            user=user,
            jti=refresh[jwt_settings.JTI_CLAIM],
            token=data["refresh"],
            created_at=refresh.current_time,
            expires_at=datetime_from_epoch(refresh["exp"]),
        )
        return data

    @staticmethod
    def _claim(refresh: RefreshToken, user: Any) -> None:
        jti = refresh[jwt_settings.JTI_CLAIM]
        try:
            with transaction.atomic():
                outstanding, _ = OutstandingToken.objects.get_or_create(
                    jti=jti,
                    defaults={
                        "user": user,
                        "token": str(refresh),
                        "expires_at": datetime_from_epoch(refresh["exp"]),
                    },
                )
                BlacklistedToken.objects.create(token=outstanding)
        except IntegrityError:
            raise InvalidToken("Token is blacklisted") from None


class TokenObtainPairSerializer(jwt_serializers.TokenObtainPairSerializer):
    """simplejwt's login, with ``last_login`` set by one UPDATE (``UPDATE_LAST_LOGIN`` is off): its
    ``update_last_login`` saves the user, and django-auditlog reads the whole row again before every save
    of a user to diff fields that last_login is not among (audit/apps.py). simplejwt's class name, so that
    the OpenAPI component keeps its name."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        data: dict[str, str] = super().validate(attrs)
        user = self.user
        assert user is not None  # super().validate() refused the login otherwise
        user.last_login = timezone.now()
        get_user_model()._default_manager.filter(pk=user.pk).update(last_login=user.last_login)
        return data


class BlacklistSerializer(TokenBlacklistSerializer):
    token_class = RefreshToken


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="Bearer token for `Authorization`; lives minutes.")
    refresh = serializers.CharField(
        help_text="Exchange at /api/token/refresh/; revoke at /api/token/blacklist/."
    )


@extend_schema(
    tags=["auth"],
    summary="Log in: a JWT access/refresh pair",
    responses={200: TokenPairSerializer, **error_responses(400, 401, 429)},
)
class TokenObtainView(jwt_views.TokenObtainPairView):
    serializer_class = TokenObtainPairSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        self.serializer = super().get_serializer(*args, **kwargs)
        return self.serializer

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if isinstance(username, str) and not _is_unicode(username):
            raise exceptions.ValidationError({"username": ["Not valid text."]})
        address = login_throttle.client_address(request)
        if isinstance(username, str) and login_throttle.is_locked_out(username=username, address=address):
            # The backend would refuse anyway; say so honestly here, where a 429 can carry Retry-After.
            raise exceptions.Throttled(wait=login_throttle.throttle_setting("WINDOW_SECONDS"))
        # A success clears the attempt count in the authentication backend.
        return _audited(
            "auth.token_issue",
            request,
            lambda: super(TokenObtainView, self).post(request, *args, **kwargs),
            user=lambda: getattr(self.serializer, "user", None),
        )


@extend_schema(
    tags=["auth"],
    summary="Exchange a refresh token for a new pair (the old refresh token stops working)",
    responses={200: TokenPairSerializer, **error_responses(400, 401)},
)
class TokenRefreshView(jwt_views.TokenRefreshView):
    serializer_class = RefreshSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        self.serializer = super().get_serializer(*args, **kwargs)
        return self.serializer

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return _audited(
            "auth.token_refresh",
            request,
            lambda: super(TokenRefreshView, self).post(request, *args, **kwargs),
            user=lambda: getattr(self.serializer, "user", None),
        )


@extend_schema(
    tags=["auth"],
    summary="Log out: revoke a refresh token",
    responses={200: OpenApiResponse(description="Revoked."), **error_responses(400, 401)},
)
class TokenBlacklistView(jwt_views.TokenBlacklistView):
    serializer_class = BlacklistSerializer

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return _audited(
            "auth.token_revoke",
            request,
            lambda: super(TokenBlacklistView, self).post(request, *args, **kwargs),
        )
