"""The gate on the secure file API, through HTTP: outside the rollout a 404 that says so, a kill switch a
503 with Retry-After for everyone, files untouched while hidden, the legacy successor link following the flag,
the admin never gated, and the schema documenting it all."""

from __future__ import annotations

import pytest
import yaml
from django.apps import apps
from django.core.management import call_command
from django.test import Client
from rest_framework_simplejwt.tokens import RefreshToken

from core.actors import Actor
from erphub import roles
from flags import services
from flags.bucketing import in_rollout
from flags.models import SECURE_BLOB_STREAMING, Flag
from flags.services import flag_trip_kill_switch, flag_update
from flags.testing import override_flag
from flags.tests.factories import make_user

pytestmark = pytest.mark.django_db

OPERATOR = Actor.system("test-operator")
COLLECTION = "/secure/files/"


@pytest.fixture(autouse=True)
def _fresh_snapshot(settings):
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 1024}
    services.flag_cache_reset()


def jwt(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")


def blob_user(name: str):
    return make_user(name, groups=(roles.BLOB_USERS,))


def upload(client: Client, data: bytes = b"quarterly numbers") -> str:
    response = client.post(f"{COLLECTION}?filename=q.txt", data=data, content_type="text/plain")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def set_rollout(basis_points: int, **changes) -> None:
    flag_update(
        name=SECURE_BLOB_STREAMING,
        expected_version=None,
        changes={"rollout_basis_points": basis_points, **changes},
        actor=OPERATOR,
        reason="test",
    )


def outside_user(basis_points: int):
    salt = Flag.objects.get(name=SECURE_BLOB_STREAMING).salt
    while True:
        user = blob_user(None)
        if not in_rollout(salt, user.pk, basis_points):
            return user


def test_a_user_outside_the_rollout_gets_a_clear_404_and_their_files_come_back():
    user = blob_user("alice")
    client = jwt(user)
    blob_id = upload(client)
    with override_flag(SECURE_BLOB_STREAMING, active=False):
        for method, path in [
            ("get", COLLECTION),
            ("get", f"{COLLECTION}{blob_id}/"),
            ("get", f"{COLLECTION}{blob_id}/stream"),
            ("head", f"{COLLECTION}{blob_id}/stream"),
            ("delete", f"{COLLECTION}{blob_id}/"),
            ("post", f"{COLLECTION}?filename=x.txt"),
        ]:
            response = getattr(client, method)(path)
            assert response.status_code == 404, (method, path)
            if method != "head":
                assert response.json() == {
                    "detail": "This feature is not available to your account yet.",
                    "code": "feature_not_available",
                }
    stream = client.get(f"{COLLECTION}{blob_id}/stream")  # included again: the file is intact
    assert stream.status_code == 200
    assert b"".join(stream.streaming_content) == b"quarterly numbers"


def test_the_percentage_decides_who_sees_the_api():
    set_rollout(3_000)
    outsider = outside_user(3_000)
    salt = Flag.objects.get(name=SECURE_BLOB_STREAMING).salt
    insider = next(u for u in (blob_user(None) for _ in range(200)) if in_rollout(salt, u.pk, 3_000))
    assert jwt(outsider).get(COLLECTION).status_code == 404
    assert jwt(insider).get(COLLECTION).status_code == 200


@pytest.mark.parametrize("switch", ["database", "environment"])
def test_a_kill_switch_is_503_with_retry_after_for_everyone(settings, switch):
    settings.FLAGS = {**settings.FLAGS, "RETRY_AFTER_SECONDS": 120}
    user = blob_user("alice")
    blob_id = upload(jwt(user))
    if switch == "database":
        flag_trip_kill_switch(name=SECURE_BLOB_STREAMING, actor=OPERATOR, reason="incident")
    else:
        settings.FLAGS = {**settings.FLAGS, "FORCED_OFF": [SECURE_BLOB_STREAMING]}
    for client in (jwt(user), Client()):  # signed in or not
        for path in (COLLECTION, f"{COLLECTION}{blob_id}/stream"):
            response = client.get(path)
            assert response.status_code == 503
            assert response["Retry-After"] == "120"
            assert response.json()["code"] == "feature_disabled"


def test_anonymous_callers_still_get_401_while_the_feature_is_on():
    response = Client().get(COLLECTION)
    assert response.status_code == 401


def test_a_download_keeps_the_answer_it_started_with():
    user = blob_user("alice")
    client = jwt(user)
    blob_id = upload(client, b"x" * 50_000)
    response = client.get(f"{COLLECTION}{blob_id}/stream")
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    first = next(chunks)
    flag_trip_kill_switch(name=SECURE_BLOB_STREAMING, actor=OPERATOR, reason="mid-download")
    assert first + b"".join(chunks) == b"x" * 50_000  # the stream finishes
    assert client.get(f"{COLLECTION}{blob_id}/stream").status_code == 503  # the next request does not


def test_the_legacy_successor_link_follows_the_flag():
    user = blob_user("alice")
    client = jwt(user)
    blob_id = upload(client)
    # As blobs_import --legacy-id records it (flags does not import the blobs app, even in tests).
    apps.get_model("blobs", "Blob").objects.filter(pk=blob_id).update(legacy_id="old-7")
    assert f"/secure/files/{blob_id}/" in client.get("/legacy/files/old-7")["Link"]
    with override_flag(SECURE_BLOB_STREAMING, active=False):
        response = client.get("/legacy/files/old-7")
    assert response.status_code == 410
    assert 'rel="successor-version"' not in response["Link"]


def test_the_admin_is_never_gated_for_staff():
    manager = make_user("manager", groups=(roles.BLOB_MANAGERS,))
    client = Client()
    client.force_login(manager)
    with override_flag(SECURE_BLOB_STREAMING, active=False):
        assert client.get("/admin/blobs/blob/").status_code == 200
    flag_trip_kill_switch(name=SECURE_BLOB_STREAMING, actor=OPERATOR, reason="incident")
    assert client.get("/admin/blobs/blob/").status_code == 200


def test_the_schema_documents_404_and_503(tmp_path):
    path = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    schema = yaml.safe_load(path.read_text())
    for route, methods in {
        "/secure/files/": ("get", "post"),
        "/secure/files/{blob_id}/": ("get", "delete"),
        "/secure/files/{blob_id}/stream": ("get", "head"),
    }.items():
        for method in methods:
            responses = schema["paths"][route][method]["responses"]
            assert "feature_not_available" in responses["404"]["description"], (route, method)
            assert "feature_disabled" in responses["503"]["description"], (route, method)


def test_my_files_lists_the_files_but_links_them_only_when_the_flag_includes_the_user():
    user = blob_user("alice")
    client = jwt(user)
    blob_id = upload(client)
    browser = Client()
    browser.force_login(user)
    page = browser.get("/files/").content.decode()
    assert f"/secure/files/{blob_id}/stream" in page
    with override_flag(SECURE_BLOB_STREAMING, active=False):
        page = browser.get("/files/").content.decode()
    assert "q.txt" in page
    assert f"/secure/files/{blob_id}/stream" not in page
    assert "not available to your account yet" in page
    flag_trip_kill_switch(name=SECURE_BLOB_STREAMING, actor=OPERATOR, reason="incident")
    assert "switched off for everyone" in browser.get("/files/").content.decode()
