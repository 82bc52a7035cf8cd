"""The admin site's own views (erphub/admin.py): answers for ids no row can have."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(make_user("boss", perms=(), is_superuser=True))
    return client


@pytest.mark.parametrize("object_id", ["not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g", "%00"])
def test_view_on_site_with_an_id_no_blob_can_have_is_404(staff_client, object_id):
    # Blob ids are UUIDs: Django's shortcut view maps ValueError to 404 but not the ValidationError a
    # UUIDField raises for text that is not one, so this was a 500 (issue 15, item 5).
    content_type = ContentType.objects.get_for_model(Blob)
    response = staff_client.get(f"/admin/r/{content_type.pk}/{object_id}/")
    assert response.status_code == 404


@pytest.mark.parametrize("content_type_id", ["abc", "999999", "-1"])
def test_view_on_site_with_an_unknown_content_type_is_404(staff_client, content_type_id):
    assert staff_client.get(f"/admin/r/{content_type_id}/1/").status_code == 404


def test_view_on_site_still_needs_the_admin(staff_client):
    blob = make_blob(make_user("alice"))
    content_type = ContentType.objects.get_for_model(Blob)
    path = reverse("admin:view_on_site", args=[content_type.pk, blob.pk])
    assert path == f"/admin/r/{content_type.pk}/{blob.pk}/"
    # No model here has get_absolute_url, so an existing blob is a 404 too (Django's own answer)...
    assert staff_client.get(path).status_code == 404
    # ...and the admin's login gate still comes first.
    anonymous = Client().get(path)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("admin:login"))


# --- history: no existence oracle (issue 15, item 6) --------------------------------------------------------


def _history(client: Client, model: str, object_id: object) -> int:
    return client.get(f"/admin/{model}/{object_id}/history/").status_code


@pytest.mark.parametrize("role", ["Key administrators", "Rollout operators", "Auditors"])
def test_history_answers_the_same_for_a_real_and_a_random_id_to_a_role_that_may_not_see_the_model(role):
    import uuid

    owner = make_user("owner")
    real = make_blob(owner, b"someone else's")
    client = Client(raise_request_exception=False)
    client.force_login(make_user("staff", perms=(), roles=(role,)))
    for model, real_id, random_id in [
        ("blobs/blob", real.pk, uuid.uuid4()),
        ("auth/user", owner.pk, 987654),
    ]:
        answers = {_history(client, model, real_id), _history(client, model, random_id)}
        assert answers == {403}, (model, answers)


def test_history_still_works_for_who_may_see_the_model(staff_client):
    blob = make_blob(make_user("owner"), b"x")
    assert _history(staff_client, "blobs/blob", blob.pk) == 200
