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


# --- a database outage (issue 15 item 17) ------------------------------------------------------------------


def _refuse_every_query(execute, sql, params, many, context):
    from django.db import OperationalError

    raise OperationalError("could not connect to server: Connection refused")


@pytest.mark.parametrize("path", ["/secure/files/", "/files/", "/admin/", "/api/schema/"])
def test_a_database_outage_is_503_with_retry_after_on_every_path(path, settings):
    from django.db import connection

    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(make_user(perms=("view_blob",)))
    before = _database_unavailable_count()
    with connection.execute_wrapper(_refuse_every_query):
        response = client.get(path, HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "database_unavailable"
    assert b"Connection refused" not in response.content
    assert _database_unavailable_count() > before


def test_other_database_errors_stay_500(settings):
    from django.db import IntegrityError, connection

    def violate(execute, sql, params, many, context):
        raise IntegrityError("duplicate key")

    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(make_user(perms=("view_blob",)))
    with connection.execute_wrapper(violate):
        assert client.get("/secure/files/").status_code == 500


def _database_unavailable_count() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("database_unavailable_total") or 0.0


def test_a_server_whose_database_is_down_answers_503_and_stays_alive(tmp_path):
    import time
    import urllib.error
    import urllib.request

    import jwt

    from blobs.tests.liveserver import Gunicorn, ServerError, free_port, server_env

    port = free_port()  # nothing listens there: every connection is refused, as when PostgreSQL is down
    env = server_env(
        tmp_path,
        username="x",
        password="x",
        key_id="db-down-1",
        DATABASE_URL=f"postgres://u@127.0.0.1:{port}/x",
    )
    server = Gunicorn.start(env, tmp_path / "gunicorn.log", timeout=60, name="db-down")
    try:
        try:
            server.wait_until_healthy(60)  # liveness needs no database
        except ServerError as exc:
            pytest.fail(str(exc))
        now = int(time.time())
        claims = {"token_type": "access", "user_id": "1", "jti": "a1", "exp": now + 300, "iat": now}
        token = jwt.encode({**claims, "aud": "erphub", "iss": "erphub"}, env["DJANGO_SECRET_KEY"], "HS256")
        for path, headers in [
            ("/secure/files/", {"Authorization": f"Bearer {token}"}),  # a valid token: the user lookup fails
            ("/files/", {"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"}),
            ("/api/token/", {"Content-Type": "application/json"}),
        ]:
            headers = {**headers, "Accept": "application/json"}
            body = b'{"username": "x", "password": "x"}' if path == "/api/token/" else None
            request = urllib.request.Request(server.url(path), data=body, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=30)
            assert caught.value.code == 503, (path, caught.value.read()[:300])
            assert caught.value.headers["Retry-After"] == "5"
            assert json.loads(caught.value.read())["code"] == "database_unavailable"
    finally:
        server.stop()
