"""JWT endpoints: obtain, use, refresh with rotation, blacklist; expired, malformed and revoked tokens."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from blobs.tests.factories import make_blob, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456!"
OBTAIN = reverse("token-obtain")
REFRESH = reverse("token-refresh")
BLACKLIST = reverse("token-blacklist")
COLLECTION = reverse("blobs:collection")


@pytest.fixture
def user():
    return make_user("carol", perms=())


def obtain(username="carol", password=PASSWORD, **extra):
    return Client().post(
        OBTAIN, {"username": username, "password": password}, content_type="application/json", **extra
    )


def bearer(token, *, raise_request_exception: bool = True) -> Client:
    return Client(raise_request_exception=raise_request_exception, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_obtain_and_use_a_token(user):
    blob = make_blob(user)
    response = obtain()
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access", "refresh"}
    claims = jwt.decode(pair["access"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 15 * 60  # access tokens live minutes
    assert claims["aud"] == "erphub"
    assert bearer(pair["access"]).get(reverse("blobs:detail", args=[blob.pk])).status_code == 200


def test_wrong_password_is_401_without_saying_which_part_was_wrong(user):
    wrong = obtain(password="nope")
    unknown = obtain(username="nobody")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "no_active_account"


def test_refresh_rotates_and_the_old_refresh_token_is_dead(user):
    pair = obtain().json()
    first = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh"] != pair["refresh"]
    assert bearer(rotated["access"]).get(COLLECTION).status_code == 200
    replay = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert replay.status_code == 401
    assert replay.json()["code"] == "token_not_valid"
    again = Client().post(REFRESH, {"refresh": rotated["refresh"]}, content_type="application/json")
    assert again.status_code == 200


def test_blacklist_is_logout(user):
    pair = obtain().json()
    out = Client().post(BLACKLIST, {"refresh": pair["refresh"]}, content_type="application/json")
    assert out.status_code == 200
    assert BlacklistedToken.objects.count() == 1
    after = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert after.status_code == 401


def test_expired_access_token_is_401(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(minutes=1))
    response = bearer(token).get(COLLECTION)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"
    assert "messages" not in response.json()  # simplejwt's detail list would echo the token's claims
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        jwt.encode(
            {"user_id": "1", "token_type": "access", "aud": "erphub"},
            "a-different-signing-key-of-32-bytes!",
            algorithm="HS256",
        ),
        jwt.encode({"user_id": "1", "token_type": "access"}, "", algorithm="none"),
    ],
    ids=["garbage", "three-parts", "foreign-signature", "alg-none"],
)
def test_malformed_or_forged_tokens_are_401(user, token):
    response = bearer(token).get(COLLECTION)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_a_refresh_token_is_not_an_access_token(user):
    assert bearer(RefreshToken.for_user(user)).get(COLLECTION).status_code == 401


def test_a_password_change_revokes_tokens(user):
    pair = obtain().json()
    user.set_password("a-new-password-1")
    user.save()
    assert bearer(pair["access"]).get(COLLECTION).status_code == 401
    assert (
        Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json").status_code
        == 401
    )


def test_deactivated_user_is_refused_everywhere(user):
    pair = obtain().json()
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert bearer(pair["access"]).get(COLLECTION).status_code == 401
    assert (
        Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json").status_code
        == 401
    )
    assert obtain().status_code == 401


def test_a_deleted_users_refresh_token_is_401_not_500(user):
    pair = obtain().json()
    OutstandingToken.objects.filter(user=user).delete()  # what deleting a user cascades to
    get_user_model().objects.filter(pk=user.pk).delete()
    response = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert response.status_code == 401


@pytest.mark.parametrize("payload", [{}, {"username": "carol"}, {"refresh": ""}])
def test_missing_fields_are_400_naming_them(user, payload):
    for url in (OBTAIN, REFRESH, BLACKLIST):
        response = Client().post(url, payload, content_type="application/json")
        assert response.status_code in {400, 401}
        if response.status_code == 400:
            assert response.json()["code"] == "invalid"
            assert response.json()["detail"].split(":")[0] in {"username", "password", "refresh"}


def test_flushexpiredtokens_removes_expired_rows(user):
    pair = obtain().json()
    Client().post(BLACKLIST, {"refresh": pair["refresh"]}, content_type="application/json")
    live = RefreshToken.for_user(user)  # outstanding, not expired
    OutstandingToken.objects.exclude(jti=live["jti"]).update(
        expires_at=OutstandingToken.objects.get(jti=live["jti"]).created_at - timedelta(days=1)
    )
    call_command("flushexpiredtokens")
    assert list(OutstandingToken.objects.values_list("jti", flat=True)) == [live["jti"]]
    assert BlacklistedToken.objects.count() == 0


def test_a_refresh_token_racing_itself_mints_one_family(user, monkeypatch):
    """Concurrent refreshes with one token all get past the blacklist *read*; only the atomic claim (the
    one-to-one BlacklistedToken row) may let exactly one through. Simulated deterministically: the second
    request is made as if its read had happened before the first request's write."""
    from rest_framework_simplejwt.tokens import BlacklistMixin

    pair = obtain().json()
    first = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert first.status_code == 200
    monkeypatch.setattr(BlacklistMixin, "check_blacklist", lambda self: None)  # the racing request's view
    second = Client().post(REFRESH, {"refresh": pair["refresh"]}, content_type="application/json")
    assert second.status_code == 401
    assert second.json()["code"] == "token_not_valid"
    jti = jwt.decode(pair["refresh"], options={"verify_signature": False})["jti"]
    assert BlacklistedToken.objects.filter(token__jti=jti).count() == 1


# --- validly signed tokens with claims no user can have (issue 15, item 4) ----------------------------------

ODD_USER_IDS = ["abc", [1], {"id": 1}, True, 1.5, "", "1; DROP", 2**70, None]


def _signed(token_class, user, **claims):
    """A token signed with the real key, whose claims are then set (None: removed)."""
    token = token_class.for_user(user)
    for name, value in claims.items():
        if value is None:
            del token[name]
        else:
            token[name] = value
    return str(token)


@pytest.mark.parametrize("user_id", ODD_USER_IDS, ids=repr)
def test_a_signed_access_token_naming_no_possible_user_is_401(user, user_id):
    response = bearer(_signed(AccessToken, user, user_id=user_id), raise_request_exception=False).get(
        COLLECTION
    )
    assert response.status_code == 401, response.content[:300]
    assert response.json()["code"] in {"token_not_valid", "user_not_found"}
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("user_id", ODD_USER_IDS, ids=repr)
@pytest.mark.parametrize("url", [REFRESH, BLACKLIST], ids=["refresh", "blacklist"])
def test_a_signed_refresh_token_naming_no_possible_user_is_401(user, url, user_id):
    refresh = _signed(RefreshToken, user, user_id=user_id)
    response = Client(raise_request_exception=False).post(
        url, {"refresh": refresh}, content_type="application/json"
    )
    assert response.status_code == 401, response.content[:300]
    assert not BlacklistedToken.objects.exists()


@pytest.mark.parametrize(
    "claims", [{"jti": None}, {"jti": [1]}, {"jti": {"a": 1}}, {"exp": "soon"}, {"token_type": [1]}], ids=repr
)
@pytest.mark.parametrize("url", [REFRESH, BLACKLIST], ids=["refresh", "blacklist"])
def test_a_signed_refresh_token_with_odd_claims_is_401(user, url, claims):
    refresh = _signed(RefreshToken, user, **claims)
    response = Client(raise_request_exception=False).post(
        url, {"refresh": refresh}, content_type="application/json"
    )
    assert response.status_code == 401, response.content[:300]


@pytest.mark.parametrize(
    "claims", [{"jti": None}, {"jti": [1]}, {"exp": "soon"}, {"token_type": [1]}], ids=repr
)
def test_a_signed_access_token_with_odd_claims_is_401(user, claims):
    client = Client(
        raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {_signed(AccessToken, user, **claims)}"
    )
    assert client.get(COLLECTION).status_code == 401


@pytest.mark.parametrize("claim", [None, "", "0" * 32, [1], 123, {"a": 1}], ids=repr)
def test_an_access_token_whose_password_claim_does_not_match_is_401(user, claim):
    # erphub.authentication compares the claim in constant time; a non-string claim is refused, not a 500.
    access = _signed(AccessToken, user, hash_password=claim)
    response = bearer(access, raise_request_exception=False).get(COLLECTION)
    assert response.status_code == 401, response.content[:300]
    assert response.json()["code"] == "password_changed"


def test_an_access_token_of_a_deleted_user_is_401(user):
    access = _signed(AccessToken, user)
    get_user_model().objects.filter(pk=user.pk).delete()
    response = bearer(access, raise_request_exception=False).get(COLLECTION)
    assert response.status_code == 401
    assert response.json()["code"] == "user_not_found"


@pytest.mark.parametrize("claim", ["é", "\u2603" * 32, ""], ids=repr)
def test_a_refresh_token_whose_password_claim_does_not_match_is_401(user, claim):
    # A non-ASCII claim made hmac.compare_digest raise TypeError on str: a 500.
    refresh = _signed(RefreshToken, user, hash_password=claim)
    response = Client(raise_request_exception=False).post(
        REFRESH, {"refresh": refresh}, content_type="application/json"
    )
    assert response.status_code == 401, response.content[:300]
