"""OpenAPI: the schema is valid and complete, its docs are served from the project itself, and a
schemathesis run against a real gunicorn finds no 5xx and no response that breaks the schema."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

from blobs.tests.liveserver import Gunicorn, Session, prepare_database, server_env

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --fail-on-warn: every view's types and responses resolved, nothing guessed.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_every_endpoint_of_design_section_6_is_described(schema):
    assert set(schema["paths"]) >= {
        "/secure/files/",
        "/secure/files/{blob_id}/",
        "/secure/files/{blob_id}/stream",
        "/legacy/files/{legacy_id}",
        "/api/token/",
        "/api/token/refresh/",
        "/api/token/blacklist/",
    }
    stream = schema["paths"]["/secure/files/{blob_id}/stream"]
    assert set(stream) >= {"get", "head"}
    assert set(stream["get"]["responses"]) >= {"200", "206", "304", "401", "404", "412", "416"}
    assert "Range" in {p["name"] for p in stream["get"]["parameters"]}
    upload = schema["paths"]["/secure/files/"]["post"]
    assert set(upload["requestBody"]["content"]) >= {"multipart/form-data", "application/octet-stream"}
    assert set(upload["responses"]) >= {"201", "400", "401", "403", "413"}
    assert set(schema["components"]["securitySchemes"]) == {"jwtAuth", "cookieAuth"}


def test_jwt_comes_first_and_each_scheme_says_what_goes_in_it(schema):
    # Swagger UI's "Authorize" dialog lists the schemes in this order: a token pasted into the first box
    # must be sent as a bearer token, not as a session cookie (which answered 401).
    assert list(schema["components"]["securitySchemes"]) == ["jwtAuth", "cookieAuth"]
    jwt, cookie = schema["components"]["securitySchemes"].values()
    assert "POST /api/token/" in jwt["description"]
    assert "nothing to paste here" in cookie["description"]
    served = Client().get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert list(json.loads(served.content)["components"]["securitySchemes"]) == ["jwtAuth", "cookieAuth"]


def test_every_error_response_uses_the_one_error_body(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (path, method, status)


def test_schema_endpoint_serves_it():
    response = Client().get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_docs_are_served_from_our_own_static_files_with_no_inline_script():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "//cdn" not in html
    assert "unpkg" not in html
    assert "jsdelivr" not in html
    srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert srcs, html
    for src in srcs:
        assert not re.match(r"^(https?:)?//", src), src  # nothing from another origin
        if src.startswith(settings.STATIC_URL):
            assert finders.find(src.removeprefix(settings.STATIC_URL)), src
    # Every <script> has a src or is a JSON data block, never executed: no inline code, so `script-src 'self'`
    # holds (erphub/csp.py). No <style> block or style attribute either: `style-src 'self'`.
    scripts = re.findall(r"<script[^>]*>", html)
    assert all("src=" in tag or 'type="application/json"' in tag for tag in scripts), scripts
    assert "<style" not in html
    assert "style=" not in html


# --- schemathesis against a live server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, str]]:
    var_dir = tmp_path_factory.mktemp("schemathesis-var")
    username, password = "st-admin", secrets.token_urlsafe(18)
    env = server_env(
        var_dir,
        username=username,
        password=password,
        key_id="st-1",
        JWT_ACCESS_MINUTES="60",
        BLOB_SEGMENT_SIZE="4096",
    )
    prepare_database(env)
    server = Gunicorn.start(env, var_dir / "gunicorn.log", timeout=60, name="schemathesis")
    try:
        server.wait_until_healthy()
        session = Session(server)
        reply = session.request(
            "POST",
            "/api/token/",
            body=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status == 200, reply.body
        # A file to find, so that detail, stream and delete are exercised on something that exists.
        token = reply.json()["access"]
        yield server, token
    finally:
        server.stop()


@pytest.mark.e2e
def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, tmp_path):
    server, token = live
    report = tmp_path / "report"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        server.url("/api/schema/"),
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--max-examples",
        "25",
        "--seed",
        "20261128",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
        "--generation-database",
        "none",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:] + server.log_tail()
    assert "passed" in done.stdout.lower()
