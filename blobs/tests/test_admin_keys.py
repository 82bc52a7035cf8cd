"""The key status page (blobs.admin): what key administrators see, and who may not see it."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blobs.tests.factories import make_blob, make_user, pattern
from core.actors import Actor
from erphub import roles
from kms.models import KeyRotation
from kms.providers.local import LocalKeyProvider
from kms.services import key_rotation_record

pytestmark = pytest.mark.django_db

STATUS = reverse("admin:kms_keyrotation_changelist")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(html: str) -> str:
    spaced = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
    return re.sub(r" ([.,;:)])", r"\1", spaced)


def usage_rows(html: str) -> list[list[str]]:
    body = html.split('<table id="key-usage">', 1)[1].split("</tbody>", 1)[0].split("<tbody>", 1)[1]
    rows = body.split("</tr>")[:-1]
    return [[text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


@pytest.fixture
def key_admin():
    return make_user("keya", perms=(), roles=(roles.KEY_ADMINISTRATORS,))


@pytest.fixture
def blobs(local_providers):
    owner = make_user("owner")
    local_providers({"local": ["mk-1"], "other": ["ok-1"]})
    made = [make_blob(owner, pattern(1000 + i)) for i in range(3)]
    local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    made += [make_blob(owner, pattern(10))]
    local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]}, default="other")
    made += [make_blob(owner, pattern(7))]
    local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})  # local:mk-2 is active
    return made


def test_the_role_holds_the_permission(key_admin):
    assert key_admin.has_perm("kms.view_key_status")
    assert "kms.view_key_status" in roles.declared_permissions()[roles.KEY_ADMINISTRATORS]
    assert Group.objects.get(name=roles.KEY_ADMINISTRATORS).permissions.filter(codename="view_key_status")


def test_key_administrators_see_blobs_per_provider_and_key(key_admin, blobs):
    response = logged_in(key_admin).get(STATUS)
    assert response.status_code == 200
    html = response.content.decode()
    assert usage_rows(html) == [
        ["local", "mk-1", "3", "2.9 KB", "yes"],
        ["local", "mk-2", "1", "10 bytes", "no (active)"],
        ["other", "ok-1", "1", "7 bytes", "yes"],
    ]
    assert 'id="active-key-ref">mk-2<' in html
    assert text(html.split('id="needs-rewrap">', 1)[1].split("</p>", 1)[0]).startswith(
        "4 blob(s) (2.9 KB) need a rewrap to reach the active key."
    )
    assert 'id="total-blobs">5<' in html
    assert "None recorded yet." in html


def test_the_page_follows_a_rewrap_and_shows_the_last_rotation(key_admin, blobs):
    call_command("blobs_rewrap", stdout=io.StringIO(), stderr=io.StringIO())
    html = logged_in(key_admin).get(STATUS).content.decode()
    assert usage_rows(html) == [["local", "mk-2", "5", "2.9 KB", "no (active)"]]
    last = text(html.split('id="last-rotation">', 1)[1].split("</p>", 1)[0])
    assert last.startswith("rewrap (same data keys, new key-encryption key), completed, finished ")
    assert "system:cli:" in last
    assert "4 changed, 1 skipped, 0 failed (target local mk-2)." in last
    needs = text(html.split('id="needs-rewrap">', 1)[1].split("</p>", 1)[0])
    assert needs.startswith("0 blob(s) (0 bytes) need a rewrap")


def test_the_last_rotation_is_the_newest(key_admin):
    now = timezone.now()
    for minutes, changed in ((30, 1), (5, 2), (60, 3)):
        at = now - timedelta(minutes=minutes)
        key_rotation_record(
            kind="reencrypt",
            outcome="completed",
            started_at=at,
            finished_at=at,
            actor=Actor.system("cli:ops"),
            target_provider="local",
            target_key_ref="mk-9",
            changed=changed,
        )
    last = logged_in(key_admin).get(STATUS).content.decode().split('id="last-rotation">', 1)[1]
    assert text(last.split("</p>", 1)[0]).split("by system:cli:ops: ", 1)[1].startswith("2 changed")


def test_a_provider_that_cannot_load_its_keys_is_shown_not_a_500(key_admin, blobs, monkeypatch):
    from kms.exceptions import KeyUnavailable

    def broken(self):
        raise KeyUnavailable("Master key file /x cannot be read", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "active_key_ref", broken)
    response = logged_in(key_admin).get(STATUS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "The provider cannot load its keys: Master key file /x cannot be read" in html
    assert ["local", "mk-2", "1", "10 bytes", "unknown"] in usage_rows(html)


def test_rotation_records_cannot_be_added_changed_or_deleted(key_admin, blobs):
    call_command("blobs_rewrap", stdout=io.StringIO(), stderr=io.StringIO())
    record = KeyRotation.objects.get()
    client = logged_in(make_user("root", perms=(), is_superuser=True))
    assert client.get(reverse("admin:kms_keyrotation_add")).status_code == 403
    assert client.get(reverse("admin:kms_keyrotation_delete", args=[record.pk])).status_code == 403
    detail = client.post(reverse("admin:kms_keyrotation_change", args=[record.pk]), {"changed": "0"})
    assert detail.status_code == 403
    assert KeyRotation.objects.get().changed == 4
    assert client.get(STATUS).status_code == 200  # superusers see it too


@pytest.mark.parametrize("role", [roles.BLOB_MANAGERS, roles.AUDITORS, roles.ROLLOUT_OPERATORS])
def test_other_staff_roles_get_403(role):
    user = make_user(perms=(), roles=(role,))
    assert logged_in(user).get(STATUS).status_code == 403
    index = logged_in(user).get(reverse("admin:index")).content.decode()
    assert "Key status" not in index
    assert "keyrotation" not in index


def test_blob_users_and_anonymous_are_sent_to_login():
    for client in (Client(), logged_in(make_user(perms=(), roles=(roles.BLOB_USERS,)))):
        response = client.get(STATUS)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_key_administrators_find_it_in_the_admin_menu(key_admin):
    index = logged_in(key_admin).get(reverse("admin:index")).content.decode()
    assert STATUS in index
