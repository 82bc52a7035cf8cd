"""Request bodies the server cannot read (blobs/body.py; issue 15, items 2 and 21), via the test client.

The server's input is gunicorn's own chunked decoder (``gunicorn.http.body``) over the bytes a client sent,
so its real exceptions reach the application; a connection reset is an input whose read raises
``ConnectionResetError`` after part of the body, as a socket's does. The live versions of these cases are in
test_fuzz.py.
"""

from __future__ import annotations

import io
import logging
from collections import Counter

import pytest
from django.test import Client
from gunicorn.http.body import Body, ChunkedReader
from gunicorn.http.unreader import IterUnreader
from prometheus_client import REGISTRY

from blobs.models import Blob
from blobs.tests.factories import make_user, pattern
from blobs.tests.test_uploads import URL, assert_nothing_stored, streamed

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(4096),
]

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

# Each breaks RFC 9112 §7.1's chunked coding somewhere gunicorn notices only as the body is read.
MALFORMED_CHUNKED = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-trailing-garbage": b"5zz\r\nhello\r\n0\r\n\r\n",
    "extension-control-byte": b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "extension-bare-cr": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "missing-terminator": b"5\r\nhelloXX0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "later-chunk": b"4000\r\n" + b"x" * 0x4000 + b"\r\nq\r\n",
}


@pytest.fixture
def uploader():
    return make_user("uploader")


@pytest.fixture
def client(uploader) -> Client:
    c = Client(raise_request_exception=False)
    c.force_login(uploader)
    return c


def chunked_input(raw: bytes) -> Body:
    """What gunicorn hands the application as wsgi.input for a chunked request whose body is ``raw``."""
    return Body(ChunkedReader(None, IterUnreader([raw])))


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece) + b"0\r\n\r\n"


class ResetAfter(io.RawIOBase):
    """A socket input that delivers ``data`` and then fails as a reset connection does."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        got = self._data.readinto(buffer)
        if not got:
            raise ConnectionResetError(104, "Connection reset by peer")
        return got


def multipart_body(data: bytes, name: str = "data.bin") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def post_chunked(client: Client, raw: bytes, content_type: str, path: str = URL, headers=None, **extra):
    """POST with ``Transfer-Encoding: chunked`` as gunicorn presents it: no Content-Length, the decoder as
    wsgi.input, which it ends with the request (wsgi.input_terminated)."""
    return client.post(
        path,
        data=b"ignored",  # the test client drops the headers of an empty body; wsgi.input is the body
        content_type=content_type,
        CONTENT_LENGTH="",
        headers={"Transfer-Encoding": "chunked", **(headers or {})},
        **{"wsgi.input": chunked_input(raw), "wsgi.input_terminated": True},
        **extra,
    )


def post_reset(client: Client, sent: bytes, declared: int, content_type: str, path: str = URL, **extra):
    """POST that declares ``declared`` bytes and is reset after ``sent``."""
    return client.post(
        path,
        data=b"ignored",  # the test client drops the headers of an empty body; wsgi.input is the body
        content_type=content_type,
        CONTENT_LENGTH=str(declared),
        **{"wsgi.input": ResetAfter(sent)},
        **extra,
    )


def uploads_counted() -> Counter:
    """``file_uploads_total`` by status."""
    return Counter(
        {
            status: REGISTRY.get_sample_value("file_uploads_total", {"status": status}) or 0
            for status in ("success", "aborted", "error")
        }
    )


def no_errors_logged(caplog) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


# --- item 2: malformed chunked bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("raw", MALFORMED_CHUNKED.values(), ids=MALFORMED_CHUNKED.keys())
def test_malformed_chunked_raw_upload_is_400_and_stores_nothing(client, raw, caplog):
    response = post_chunked(client, raw, "application/octet-stream")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "malformed_body"
    # Where the next request would start is unknown: the connection must not be reused.
    assert response["Connection"] == "close"
    assert response["Content-Length"] == str(len(response.content))
    assert_nothing_stored()
    no_errors_logged(caplog)


@pytest.mark.parametrize("raw", MALFORMED_CHUNKED.values(), ids=MALFORMED_CHUNKED.keys())
def test_malformed_chunked_multipart_upload_is_400_and_stores_nothing(client, raw, caplog):
    # The multipart framing is valid up to where the chunked coding breaks.
    head = multipart_body(b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]
    response = post_chunked(client, chunked(head)[: -len(b"0\r\n\r\n")] + raw, MULTIPART)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "malformed_body"
    assert_nothing_stored()
    no_errors_logged(caplog)


@pytest.mark.parametrize("raw", MALFORMED_CHUNKED.values(), ids=MALFORMED_CHUNKED.keys())
def test_malformed_chunked_json_is_400(raw, caplog):
    # DRF's JSON parser reads the body through Django's request: the same wrapper answers.
    response = post_chunked(
        Client(raise_request_exception=False), raw, "application/json", path="/api/token/"
    )
    assert response.status_code == 400, response.content[:300]
    no_errors_logged(caplog)


@pytest.mark.parametrize("raw", list(MALFORMED_CHUNKED.values())[:3], ids=list(MALFORMED_CHUNKED)[:3])
def test_malformed_chunked_form_through_the_csrf_check_is_400(raw, caplog):
    # Django's CSRF check reads request.POST and swallows UnreadablePostError: the recorded body error is
    # still the answer, not the CSRF failure or the login page the view made of an empty form.
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.cookies["csrftoken"] = "x" * 32
    response = post_chunked(client, raw, "application/x-www-form-urlencoded", path="/admin/login/")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "malformed_body"
    no_errors_logged(caplog)


# --- item 21: multipart bodies cut by a reset, and chunked multipart ---------------------------------------


@pytest.mark.parametrize("auth", ["session", "jwt"])
def test_multipart_upload_reset_mid_file_is_400_aborted_and_stores_nothing(client, uploader, auth, caplog):
    body = multipart_body(pattern(50_000))
    extra = {}
    if auth == "jwt":
        from rest_framework_simplejwt.tokens import AccessToken

        client = Client(raise_request_exception=False)
        extra["HTTP_AUTHORIZATION"] = f"Bearer {AccessToken.for_user(uploader)}"
    before = uploads_counted()
    response = post_reset(client, body[:30_000], len(body), MULTIPART, **extra)
    # The raw-body counterpart's answer (test_raw_upload_reset_mid_body_is_400...).
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "invalid_upload"
    assert_nothing_stored()
    assert uploads_counted() - before == Counter(aborted=1)
    no_errors_logged(caplog)


def test_raw_upload_reset_mid_body_is_400_aborted_and_stores_nothing(client, caplog):
    before = uploads_counted()
    response = post_reset(client, pattern(30_000), 50_000, "application/octet-stream")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "invalid_upload"
    assert_nothing_stored()
    assert uploads_counted() - before == Counter(aborted=1)
    no_errors_logged(caplog)


def test_json_body_reset_is_400(caplog):
    body = b'{"username": "someone", "password": "' + b"x" * 1000 + b'"}'
    response = post_reset(
        Client(raise_request_exception=False), body[:500], len(body), "application/json", path="/api/token/"
    )
    assert response.status_code == 400, response.content[:300]
    no_errors_logged(caplog)


@pytest.mark.parametrize("pieces", [1, 7, 500], ids=lambda n: f"{n}-chunks")
def test_chunked_multipart_upload_is_201(client, pieces):
    data = pattern(20_000)
    body = multipart_body(data, name="chunked.bin")
    step = -(-len(body) // pieces)
    response = post_chunked(
        client, chunked(*(body[i : i + step] for i in range(0, len(body), step))), MULTIPART
    )
    assert response.status_code == 201, response.content[:300]
    assert response.json()["filename"] == "chunked.bin"
    assert response.json()["size"] == len(data)
    assert Blob.objects.get().state == Blob.State.READY
    assert streamed(client, response.json()["id"]) == data


def test_chunked_multipart_upload_with_jwt_is_201(uploader):
    from rest_framework_simplejwt.tokens import AccessToken

    client = Client(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(uploader)}")
    response = post_chunked(client, chunked(multipart_body(b"hello")), MULTIPART)
    assert response.status_code == 201, response.content[:300]
    assert response.json()["size"] == 5


def test_chunked_multipart_upload_with_a_content_digest_is_checked(client):
    import base64
    import hashlib

    body = multipart_body(b"hello")
    good = f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    response = post_chunked(client, chunked(body), MULTIPART, headers={"Content-Digest": good})
    assert response.status_code == 201, response.content[:300]
    bad = f"sha-256=:{base64.b64encode(hashlib.sha256(b'other').digest()).decode()}:"
    response = post_chunked(client, chunked(body), MULTIPART, headers={"Content-Digest": bad})
    assert response.status_code == 400
    assert Blob.objects.count() == 1


def test_chunked_multipart_on_a_server_that_cannot_end_it_is_411(client):
    response = client.post(
        URL,
        data=b"ignored",  # the test client drops the headers of an empty body; wsgi.input is the body
        content_type=MULTIPART,
        CONTENT_LENGTH="",
        headers={"Transfer-Encoding": "chunked"},
        **{"wsgi.input": chunked_input(chunked(multipart_body(b"hello")))},
    )
    assert response.status_code == 411
    assert_nothing_stored()


def test_chunked_multipart_from_an_anonymous_client_is_refused_unread():
    response = post_chunked(Client(), chunked(multipart_body(b"hello")), MULTIPART)
    assert response.status_code == 401
    assert_nothing_stored()
