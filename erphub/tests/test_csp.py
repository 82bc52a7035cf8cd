"""The Content-Security-Policy header (erphub/csp.py, issue 15 item 10): HTML pages get the page policy, JSON
(the stream's errors included) the data policy, and a policy a view set itself — the stream's ``sandbox`` —
is kept. The pages working under it in a real browser: test_csp_browser.py."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from blobs.tests.factories import make_blob, make_user
from erphub.csp import DATA_POLICY, PAGE_POLICY, policy_for

pytestmark = pytest.mark.django_db

HEADER = "Content-Security-Policy"


def directives(policy: str) -> dict[str, list[str]]:
    """CSP3 §2.2.1: a serialized policy is ``;``-separated directives, each a name and its values."""
    parsed = {}
    for item in policy.split(";"):
        name, *values = item.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize(
    ("content_type", "policy"),
    [
        ("text/html; charset=utf-8", PAGE_POLICY),
        ("TEXT/HTML", PAGE_POLICY),
        ("application/json", DATA_POLICY),
        ("application/problem+json", DATA_POLICY),
        ("text/plain; charset=utf-8", DATA_POLICY),
        ("", DATA_POLICY),
    ],
)
def test_the_policy_follows_the_media_type(content_type, policy):
    assert policy_for(content_type) == policy


def test_the_page_policy_allows_no_inline_code_and_no_other_origin():
    page = directives(PAGE_POLICY)
    for name in ("script-src", "style-src"):
        assert page[name] == ["'self'"], name  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert page["default-src"] == ["'self'"]
    assert page["object-src"] == page["base-uri"] == page["frame-ancestors"] == ["'none'"]
    assert page["form-action"] == ["'self'"]
    data = directives(DATA_POLICY)
    assert data["default-src"] == data["frame-ancestors"] == ["'none'"]
    assert "sandbox" in data


@pytest.fixture
def signed_in(owner):
    client = Client()
    client.force_login(owner)
    return client


@pytest.mark.parametrize("page", ["/accounts/login/", "/admin/login/", "/api/docs/"])
def test_anonymous_html_pages_carry_the_page_policy(page):
    response = Client().get(page)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response[HEADER] == PAGE_POLICY


def test_signed_in_pages_carry_the_page_policy(signed_in):
    response = signed_in.get(reverse("blobs:my-files"))
    assert response.status_code == 200
    assert response[HEADER] == PAGE_POLICY
    staff = Client()
    staff.force_login(make_user("staff", is_staff=True, is_superuser=True))
    for page in ("/admin/", "/admin/blobs/blob/"):
        response = staff.get(page)
        assert response.status_code == 200, page
        assert response[HEADER] == PAGE_POLICY, page


def test_the_streams_json_errors_carry_the_data_policy(signed_in, owner):
    blob = make_blob(owner, b"0123456789")
    stream = reverse("blobs:stream", args=[blob.pk])
    errors = {
        "404": signed_in.get(reverse("blobs:stream", args=[uuid.uuid4()])),
        "416": signed_in.get(stream, headers={"Range": "bytes=50-60"}),
        "412": signed_in.get(stream, headers={"If-Match": '"other"'}),
        "401": Client().get(stream),
    }
    for status, response in errors.items():
        assert str(response.status_code) == status
        assert response["Content-Type"] == "application/json", status
        assert response[HEADER] == DATA_POLICY, status


def test_json_outside_the_stream_carries_the_data_policy(signed_in):
    for response in (signed_in.get("/secure/files/"), Client().get("/no/such/page"), Client().get("/health")):
        assert response["Content-Type"].startswith("application/json")
        assert response[HEADER] == DATA_POLICY


def test_the_streams_own_policy_is_kept(signed_in, owner):
    # The plaintext answers set `sandbox` themselves (blobs/views.py STREAM_HEADERS): never replaced.
    blob = make_blob(owner, b"0123456789", content_type="text/html")
    stream = reverse("blobs:stream", args=[blob.pk])
    full = signed_in.get(stream)
    answers = {
        "200": full,
        "206": signed_in.get(stream, headers={"Range": "bytes=0-3"}),
        "304": signed_in.get(stream, headers={"If-None-Match": full["ETag"]}),
        "HEAD": signed_in.head(stream),
    }
    for answer, response in answers.items():
        assert response[HEADER] == "sandbox", answer
