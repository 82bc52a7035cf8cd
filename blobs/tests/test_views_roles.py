"""Roles × endpoints × own/other's blob, over JWT and session: status codes, and that nothing of another
owner's blob (id, name, size) leaks into any body or header of a caller who may not see it."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from rest_framework_simplejwt.tokens import RefreshToken

from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user, pattern
from erphub import roles

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(256),
]

SECRET_NAME = "merger-plan-zebra.xlsx"
SECRET_SIZE = 4321


# actor -> how it is made; "upload" and "others" say what the role allows.
ACTORS = {
    "anonymous": None,
    "no-role": {"roles": ()},
    "blob-user": {"roles": (roles.BLOB_USERS,)},
    "blob-manager": {"roles": (roles.BLOB_MANAGERS,)},
    "auditor": {"roles": (roles.AUDITORS,)},
    "key-admin": {"roles": (roles.KEY_ADMINISTRATORS,)},
    "superuser": {"roles": (), "is_superuser": True},
}
CAN_UPLOAD = {"blob-user", "blob-manager", "superuser"}
SEES_OTHERS = {"blob-manager", "superuser"}


def client_for(actor: str, user, transport: str) -> Client:
    client = Client()
    if user is None:
        return client
    if transport == "jwt":
        token = RefreshToken.for_user(user).access_token
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    else:
        client.force_login(user)
    return client


def expected(actor: str, endpoint: str, whose: str) -> int:
    if actor == "anonymous":
        return 410 if endpoint == "legacy" else 401
    if endpoint == "legacy":
        return 410
    if endpoint == "upload":
        return 201 if actor in CAN_UPLOAD else 403
    if endpoint == "list":
        return 200
    visible = whose == "own" or actor in SEES_OTHERS
    if not visible:
        return 404
    return {"detail": 200, "stream": 200, "head": 200, "delete": 204}[endpoint]


def call(client: Client, endpoint: str, blob: Blob | None):
    if endpoint == "list":
        return client.get(reverse("blobs:collection"))
    if endpoint == "upload":
        return client.post(
            reverse("blobs:collection") + "?filename=new.txt", data=b"fresh", content_type="text/plain"
        )
    if endpoint == "legacy":
        return client.get(reverse("blobs:legacy", args=[blob.legacy_id]))
    if endpoint == "detail":
        return client.get(reverse("blobs:detail", args=[blob.pk]))
    if endpoint == "stream":
        return client.get(reverse("blobs:stream", args=[blob.pk]))
    if endpoint == "head":
        return client.head(reverse("blobs:stream", args=[blob.pk]))
    if endpoint == "delete":
        return client.delete(reverse("blobs:detail", args=[blob.pk]))
    raise AssertionError(endpoint)


def read_body(response) -> bytes:
    """The body, read once (a streaming body can only be consumed once)."""
    if not hasattr(response, "_read_body"):
        response._read_body = b"".join(response.streaming_content) if response.streaming else response.content
    return response._read_body


def everything_said(response) -> str:
    # X-Request-ID is random hex (audit/middleware.py): it may contain "4321" by chance and says nothing.
    headers = "\n".join(f"{k}: {v}" for k, v in response.items() if k != "X-Request-ID")
    return headers + "\n" + read_body(response).decode("latin-1")


ENDPOINTS = ["list", "detail", "stream", "head", "delete", "upload", "legacy"]


CASES = [
    (actor, endpoint, whose, transport)
    for actor in ACTORS
    for endpoint in ENDPOINTS
    for whose in ("own", "other")
    for transport in ("jwt", "session")
    if not (actor == "anonymous" and (whose == "own" or transport == "session"))
]


@pytest.mark.parametrize(("actor", "endpoint", "whose", "transport"), CASES)
def test_role_matrix(actor, endpoint, whose, transport):
    owner = make_user("the-owner", perms=(), roles=(roles.BLOB_USERS,))
    user = None if ACTORS[actor] is None else make_user(f"actor-{actor}", perms=(), **ACTORS[actor])
    blob_owner = user if whose == "own" else owner
    blob = make_blob(
        blob_owner, pattern(SECRET_SIZE), filename=SECRET_NAME, content_type="text/plain", legacy_id="L-1"
    )
    response = call(client_for(actor, user, transport), endpoint, blob)
    status = expected(actor, endpoint, whose)
    assert response.status_code == status, everything_said(response)[:500]

    if response.status_code >= 400 and endpoint != "head":
        assert response["Content-Type"] == "application/json"
        body = json.loads(read_body(response))
        assert set(body) >= {"detail", "code"}
    if actor == "anonymous" and response.status_code == 401 and transport == "jwt":
        assert response["WWW-Authenticate"].startswith("Bearer")

    said = everything_said(response)
    if whose == "other" and actor not in SEES_OTHERS:
        # Not the id, not the name, not the size — in no body and no header.
        assert str(blob.pk) not in said
        assert SECRET_NAME not in said
        assert str(SECRET_SIZE) not in said
    if endpoint == "list" and actor != "anonymous":
        ids = {item["id"] for item in response.json()["results"]}
        assert (str(blob.pk) in ids) == (whose == "own" or actor in SEES_OTHERS)
    if endpoint == "delete":
        assert Blob.objects.filter(pk=blob.pk).exists() == (response.status_code != 204)
    if endpoint == "stream" and status == 200:
        assert read_body(response) == pattern(SECRET_SIZE)
    if endpoint == "legacy":
        link = response.get("Link", "")
        visible = actor != "anonymous" and (whose == "own" or actor in SEES_OTHERS)
        assert ('rel="successor-version"' in link) == visible


def test_a_manager_without_delete_permission_gets_403_on_a_visible_blob():
    owner = make_user("owner", perms=())
    viewer = make_user("viewer", perms=("view_any_blob",))
    blob = make_blob(owner)
    client = client_for("viewer", viewer, "jwt")
    assert client.get(reverse("blobs:detail", args=[blob.pk])).status_code == 200
    response = client.delete(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert Blob.objects.filter(pk=blob.pk).exists()


def test_deleting_twice_is_404_the_second_time():
    owner = make_user("owner", perms=())
    blob = make_blob(owner)
    client = client_for("owner", owner, "jwt")
    assert client.delete(reverse("blobs:detail", args=[blob.pk])).status_code == 204
    again = client.delete(reverse("blobs:detail", args=[blob.pk]))
    assert again.status_code == 404
    assert again.json() == {"detail": "No such file.", "code": "not_found"}


def test_legacy_answer_is_identical_for_a_missing_id_and_an_invisible_one():
    owner = make_user("owner", perms=())
    make_blob(owner, legacy_id="old-42")
    stranger = client_for("x", make_user("stranger", perms=()), "jwt")
    seen = stranger.get(reverse("blobs:legacy", args=["old-42"]))
    missing = stranger.get(reverse("blobs:legacy", args=["old-43"]))
    assert seen.status_code == missing.status_code == 410
    assert seen.content == missing.content
    drop = {"Date", "X-Request-ID"}  # per-request values
    assert {k: v for k, v in seen.items() if k not in drop} == {
        k: v for k, v in missing.items() if k not in drop
    }


def test_legacy_headers_deprecation_sunset_and_successor_link():
    owner = make_user("owner", perms=())
    blob = make_blob(owner, legacy_id="old-7")
    response = client_for("o", owner, "session").get(reverse("blobs:legacy", args=["old-7"]))
    assert response.status_code == 410
    assert response.json() == {
        "detail": "This endpoint is deprecated. Use /secure/files API.",
        "code": "gone",
    }
    assert response["Deprecation"] == "@1767225600"  # RFC 9745: 2026-01-01T00:00:00Z as a Date
    assert response["Sunset"] == "Fri, 01 Jan 2027 00:00:00 GMT"  # RFC 8594: an HTTP-date
    assert f'</secure/files/{blob.pk}/>; rel="successor-version"' in response["Link"]
    assert 'rel="deprecation"' in response["Link"]
    assert "Authorization" in response["Vary"]


def test_inactive_users_tokens_stop_working_at_once():
    user = make_user("leaver", perms=())
    blob = make_blob(user)
    client = client_for("leaver", user, "jwt")
    assert client.get(reverse("blobs:detail", args=[blob.pk])).status_code == 200
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    response = client.get(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 401
    assert response.json()["code"] in {"user_inactive", "authentication_failed"}


@pytest.mark.parametrize("legacy_id", ["abc%00def", "x" * 300])
def test_legacy_ids_no_row_can_hold_are_just_gone(legacy_id):
    client = client_for("o", make_user("owner", perms=()), "jwt")
    response = client.get(f"/legacy/files/{legacy_id}")
    assert response.status_code == 410
    assert 'rel="successor-version"' not in response["Link"]
