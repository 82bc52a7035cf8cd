"""One error body everywhere: DRF views, plain Django views, unknown URLs and real 500s."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework import exceptions

from blobs.tests.factories import make_user
from erphub.errors import api_exception_handler

pytestmark = pytest.mark.django_db


def test_unknown_urls_get_the_json_body():
    response = Client().get("/no/such/thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_browsers_still_get_an_html_404_page():
    response = Client().get("/no/such/thing", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("erphub.tests.urls_failing")
@pytest.mark.parametrize("path", ["/boom/", "/secure/boom/"])
def test_a_bug_is_a_real_500_with_no_detail_for_the_client(path, settings):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(make_user(perms=()))
    response = client.get(path)
    assert response.status_code == 500
    assert response.json() == {"detail": "A server error occurred.", "code": "server_error"}
    assert b"secret-internal-detail" not in response.content
    assert b"Traceback" not in response.content


def test_validation_errors_name_every_field():
    detail = {"page_size": ["Must be a whole number."], "filter": {"created": ["Enter a date."]}}
    response = api_exception_handler(exceptions.ValidationError(detail), {})
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["detail"] == "page_size: Must be a whole number.; filter.created: Enter a date."
    assert body["code"] == "invalid"
    assert body["errors"] == detail


def test_unknown_exceptions_are_left_to_django():
    assert api_exception_handler(RuntimeError("bug"), {}) is None
    assert api_exception_handler(KeyError("bug"), {}) is None


def test_throttled_carries_retry_after():
    response = api_exception_handler(exceptions.Throttled(wait=12.2), {})
    assert response.status_code == 429
    assert response["Retry-After"] == "13"
