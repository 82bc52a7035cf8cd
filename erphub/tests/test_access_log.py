"""erphub.access_log: one JSON line per request, written when the response is really over."""

from __future__ import annotations

import json
import logging

import pytest
from django.urls import reverse
from structlog.testing import capture_logs

from blobs.tests.factories import make_blob, pattern
from blobs.tests.streams import close

pytestmark = pytest.mark.django_db




def requests(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["event"] == "request"]


def test_a_download_is_one_line_written_when_its_body_ends(owner_client, owner):
    blob = make_blob(owner, pattern(3000))
    with capture_logs() as logs:
        response = owner_client.get(reverse("blobs:stream", args=[blob.pk]), headers={"X-Request-ID": "dl-1"})
        assert requests(logs) == []  # the view returned; the body has not been sent yet
        assert b"".join(response.streaming_content) == pattern(3000)
    (line,) = requests(logs)
    assert line["request_id"] == response["X-Request-ID"] == "dl-1"
    assert (line["status"], line["outcome"], line["bytes"]) == (200, "success", 3000)
    assert line["blob_id"] == str(blob.pk)
    assert line["user_id"] == str(owner.pk)
    assert line["route"] == "secure/files/<str:blob_id>/stream"
    assert line["method"] == "GET"
    assert line["duration_ms"] >= 0


def test_a_client_that_goes_away_is_logged_aborted_with_the_bytes_it_got(owner_client, owner):
    blob = make_blob(owner, pattern(300_000))
    with capture_logs() as logs:
        response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
        first = next(iter(response.streaming_content))
        close(response)
    (line,) = requests(logs)
    assert (line["outcome"], line["bytes"]) == ("aborted", len(first))


def test_an_ordinary_response_is_logged_at_once_without_secrets_or_query(owner_client, owner):
    with capture_logs() as logs:
        response = owner_client.get(
            "/secure/files/?name=private-name.txt", headers={"Authorization": "Bearer not-a-real-token"}
        )
    (line,) = requests(logs)
    assert line["bytes"] == len(response.content)
    assert line["status"] == response.status_code
    text = json.dumps(line)
    assert "private-name" not in text
    assert "not-a-real-token" not in text


def test_the_line_is_rendered_as_one_json_object(owner_client):
    # The configured handler (LOGGING "access", structlog's JSON renderer) writes the line.
    handler = logging.getLogger("erphub.access").handlers[0]
    record_lines: list[str] = []
    original = handler.emit
    handler.emit = lambda record: record_lines.append(handler.format(record))  # type: ignore[method-assign]
    try:
        owner_client.get("/health")
    finally:
        handler.emit = original  # type: ignore[method-assign]
    (rendered,) = record_lines
    entry = json.loads(rendered)
    assert entry["event"] == "request"
    assert entry["route"] == "health"
    assert entry["level"] == "info"
    assert entry["timestamp"].endswith("Z")


def test_a_file_response_keeps_its_file_for_sendfile_and_is_logged_on_close(tmp_path, rf):
    # Static files (WhiteNoise) and any FileResponse: the server may send the file itself (sendfile), so
    # the middleware must not replace the body; the line is written when Django closes the response.
    from django.http import FileResponse

    from erphub.access_log import AccessLogMiddleware

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 5000)

    def view(request):
        return FileResponse(path.open("rb"))

    request = rf.get("/static/f.bin")
    with capture_logs() as logs:
        response = AccessLogMiddleware(view)(request)
        assert response.file_to_stream is not None  # still a file: wsgi.file_wrapper can sendfile it
        assert requests(logs) == []
        response.close()
    (line,) = requests(logs)
    assert (line["status"], line["bytes"], line["outcome"]) == (200, 5000, "success")
