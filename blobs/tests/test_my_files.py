"""The owner's page: their files and nothing else, behind the login every account can use."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user

pytestmark = pytest.mark.django_db

PAGE = reverse("blobs:my-files")


def test_lists_only_the_users_own_ready_files_with_stream_links():
    alice, bob = make_user("alice"), make_user("bob", perms=("view_any_blob",))
    mine = make_blob(bob, b"mine", filename="bob-notes.txt")
    make_blob(alice, b"theirs", filename="alice-secret.txt")
    hidden = make_blob(bob, b"pending", filename="half-uploaded.bin")
    Blob.objects.filter(pk=hidden.pk).update(state=Blob.State.PENDING)
    client = Client()
    client.force_login(bob)
    html = client.get(PAGE).content.decode()
    assert "bob-notes.txt" in html
    assert reverse("blobs:stream", args=[mine.pk]) in html
    assert "alice-secret.txt" not in html  # even with view_any_blob: this page is "my files"
    assert "half-uploaded.bin" not in html


def test_empty_list_says_so():
    client = Client()
    client.force_login(make_user("new"))
    assert "No files yet." in client.get(PAGE).content.decode()


def test_anonymous_is_sent_to_login_and_lands_on_the_page_after_it():
    make_user("carol")
    client = Client()
    r = client.get(PAGE)
    assert r.status_code == 302
    assert r["Location"].startswith(reverse("login"))
    r = client.post(reverse("login"), {"username": "carol", "password": "pw-123456!"})
    assert r.status_code == 302
    assert r["Location"] == PAGE
    assert client.get("/")["Location"] == PAGE
