"""``/accounts/login/`` and ``/accounts/logout/``: session login for every account, owners included (the
admin's login refuses non-staff users). Real CSRF: the client enforces it and posts the form's token."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from blobs.tests.factories import make_blob, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456!"  # blobs.tests.factories.make_user


def form_field(page: str, pattern: str) -> str:
    match = re.search(pattern, page)
    assert match, f"{pattern!r} not in the login page"
    return html.unescape(match.group(1))


def log_in(client: Client, login_url: str, *, username: str, password: str, next_url: str):
    page = client.get(login_url)
    assert page.status_code == 200
    text = page.content.decode()
    action = form_field(text, r'<form action="([^"]*)" method="post" id="login-form">')
    token = form_field(text, r'name="csrfmiddlewaretoken" value="([^"]+)"')
    assert form_field(text, r'<input type="hidden" name="next" value="([^"]*)">') == next_url
    return client.post(
        action,
        {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": next_url},
    )


def test_a_non_staff_owner_logs_in_and_streams_their_own_blob():
    owner = make_user("owner")
    assert not owner.is_staff
    blob = make_blob(owner, b"the owner's bytes")
    stream = reverse("blobs:stream", args=[blob.pk])
    client = Client(enforce_csrf_checks=True)

    r = client.get(stream, headers={"Accept": "text/html"})
    assert r.status_code == 302
    login_url = r["Location"]
    assert login_url == f"/accounts/login/?next={stream}"

    r = log_in(client, login_url, username="owner", password=PASSWORD, next_url=stream)
    assert r.status_code == 302
    assert r["Location"] == stream
    r = client.get(stream)
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == b"the owner's bytes"


def test_the_admin_login_still_refuses_the_same_owner():
    make_user("owner")
    client = Client(enforce_csrf_checks=True)
    r = log_in(client, "/admin/login/?next=/admin/", username="owner", password=PASSWORD, next_url="/admin/")
    assert r.status_code == 200  # the form again, with the admin's "staff account" error
    assert "_auth_user_id" not in client.session


def test_the_login_post_needs_the_csrf_token():
    make_user("owner")
    client = Client(enforce_csrf_checks=True)
    client.get("/accounts/login/")
    r = client.post("/accounts/login/", {"username": "owner", "password": PASSWORD})
    assert r.status_code == 403
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_shows_the_form_again_with_an_error():
    make_user("owner")
    client = Client(enforce_csrf_checks=True)
    r = log_in(client, "/accounts/login/?next=/x", username="owner", password="wrong", next_url="/x")
    assert r.status_code == 200
    assert 'class="errornote"' in r.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_login_page_has_the_admin_look_and_the_site_branding():
    page = Client().get("/accounts/login/").content.decode()
    assert "<title>Log in | ERP Hub</title>" in page
    assert '<div id="site-name">ERP Hub — Secure Blob Streaming</div>' in page
    assert "admin/css/login.css" in page
    assert re.search(r'<body class="[^"]*\blogin\b', page)  # the admin's login layout
    assert "not authorized" not in page


def test_logout_is_post_only_and_ends_the_session():
    owner = make_user("owner")
    blob = make_blob(owner)
    stream = reverse("blobs:stream", args=[blob.pk])
    client = Client(enforce_csrf_checks=True)
    log_in(client, f"/accounts/login/?next={stream}", username="owner", password=PASSWORD, next_url=stream)
    assert client.get(stream).status_code == 200

    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 403  # no CSRF token
    r = client.post("/accounts/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert r.status_code == 302
    assert r["Location"] == "/accounts/login/"
    assert client.get(stream).status_code == 401
