"""``POST /secure/files/`` through Django's test client: the global encrypting upload handler, the raw-body
path, the error mapping, and the promise that plaintext never reaches disk (architecture.md §5)."""

from __future__ import annotations

import functools
import hashlib
import io
import tempfile
from pathlib import Path

import pytest
from django.core.files import temp as django_temp
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils.crypto import get_random_string
from prometheus_client import REGISTRY

from blobs.models import Blob
from blobs.storage import blob_store
from blobs.tests.factories import make_user, pattern

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(4096),
]

URL = "/secure/files/"
MARKER = b"PLAINTEXT-NEVER-ON-DISK:"


@pytest.fixture
def uploader():
    return make_user("uploader")


@pytest.fixture
def client(uploader):
    c = Client()
    c.force_login(uploader)
    return c


def storage_root() -> Path:
    return Path(blob_store("blobs").storage.location)


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def assert_nothing_stored() -> None:
    assert Blob.objects.count() == 0
    assert files_under(storage_root()) == []


def streamed(client: Client, blob_id: str) -> bytes:
    response = client.get(reverse("blobs:stream", args=[blob_id]))
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def multipart(
    client: Client,
    data: bytes,
    *,
    name: str = "data.bin",
    field: str = "file",
    content_type: str = "application/octet-stream",
    **extra,
):
    return client.post(URL, {field: SimpleUploadedFile(name, data, content_type=content_type), **extra})


# --- success ------------------------------------------------------------------------------------------------


def test_multipart_upload_is_201_with_location_and_streams_back(client, uploader):
    data = pattern(20_000)
    r = multipart(client, data, name="report.pdf", content_type="application/pdf")
    assert r.status_code == 201
    body = r.json()
    blob = Blob.objects.get()
    assert r["Location"] == f"/secure/files/{blob.id}/"
    assert body["id"] == str(blob.id)
    assert body["filename"] == "report.pdf"
    assert body["content_type"] == "application/pdf"
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["owner"] == "uploader"
    assert body["stream_url"] == f"/secure/files/{blob.id}/stream"
    assert (blob.state, blob.owner) == (Blob.State.READY, uploader)
    assert streamed(client, body["id"]) == data
    assert client.get(r["Location"]).json()["id"] == body["id"]


def test_raw_body_with_filename_query(client):
    data = pattern(10_000)
    r = client.post(f"{URL}?filename=notes.csv", data=data, content_type="text/csv")
    assert r.status_code == 201
    assert r.json()["filename"] == "notes.csv"
    assert r.json()["content_type"] == "text/csv"
    assert streamed(client, r.json()["id"]) == data


def test_raw_body_with_rfc8187_content_disposition(client):
    data = b"bonjour"
    r = client.post(
        URL,
        data=data,
        content_type="application/octet-stream",
        headers={"Content-Disposition": "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%9C%93.pdf"},
    )
    assert r.status_code == 201
    assert r.json()["filename"] == "résumé ✓.pdf"
    assert streamed(client, r.json()["id"]) == data


def test_raw_body_with_plain_content_disposition(client):
    r = client.post(
        URL,
        data=b"x",
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="plain.txt"'},
    )
    assert r.status_code == 201
    assert r.json()["filename"] == "plain.txt"


def test_raw_body_without_content_length_is_read_to_eof(client):
    # A chunked request: the server (gunicorn) says the input is terminated; Django alone would see b"".
    data = pattern(50_000)
    r = client.post(
        f"{URL}?filename=chunked.bin",
        data=b"ignored",
        content_type="application/octet-stream",
        CONTENT_LENGTH="",
        **{"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True},
    )
    assert r.status_code == 201
    assert r.json()["size"] == len(data)
    assert streamed(client, r.json()["id"]) == data


def test_chunked_body_on_a_server_that_cannot_end_it_is_411(client):
    # Without wsgi.input_terminated the end of a chunked body is unknown: refuse rather than store b"".
    r = client.post(
        f"{URL}?filename=chunked.bin",
        data=b"ignored",
        content_type="application/octet-stream",
        CONTENT_LENGTH="",
        headers={"Transfer-Encoding": "chunked"},
        **{"wsgi.input": io.BytesIO(pattern(5000))},
    )
    assert r.status_code == 411
    assert r.json()["code"] == "length_required"
    assert_nothing_stored()


def test_empty_multipart_file_is_a_valid_zero_byte_blob(client):
    r = multipart(client, b"", name="empty.txt", content_type="text/plain")
    assert r.status_code == 201
    assert r.json()["size"] == 0
    assert r.json()["sha256"] == hashlib.sha256(b"").hexdigest()
    assert streamed(client, r.json()["id"]) == b""


def test_empty_raw_body_is_a_valid_zero_byte_blob(client):
    # The test client drops the headers of an empty body; a real client sends them.
    r = client.post(
        f"{URL}?filename=empty.bin",
        data=b"",
        content_type="application/octet-stream",
        CONTENT_TYPE="application/octet-stream",
        CONTENT_LENGTH="0",
    )
    assert r.status_code == 201
    assert r.json()["size"] == 0


# --- bad input ----------------------------------------------------------------------------------------------


def test_upload_without_a_file_is_400_no_file(client):
    for response in (
        client.post(URL, {"title": "no file here"}),  # multipart without a file
        client.post(URL, "a=b", content_type="application/x-www-form-urlencoded"),
        client.post(URL),
    ):
        assert response.status_code == 400
        assert response.json()["code"] == "no_file"
    assert_nothing_stored()


def test_raw_upload_without_a_content_type_is_told_to_send_one(client):
    # Django's test client always sends a Content-Type with a body: build the request without one.
    response = client.generic("POST", URL, pattern(100), content_type="")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "no_file"
    assert "needs a Content-Type header" in body["detail"]
    assert "this request has none" in body["detail"]
    form = client.post(URL, pattern(100), content_type="application/x-www-form-urlencoded")
    assert "this one is application/x-www-form-urlencoded" in form.json()["detail"]
    assert_nothing_stored()


def test_unclaimed_upload_is_removed_after_the_response(client):
    # The handler encrypted 'attachment' as a pending blob before the view ran; nobody claimed it.
    r = multipart(client, pattern(9000), field="attachment")
    assert r.status_code == 400
    assert r.json()["code"] == "no_file"
    assert_nothing_stored()


def test_only_the_claimed_file_stays_when_several_are_sent(client):
    r = client.post(
        URL,
        {
            "file": SimpleUploadedFile("keep.bin", b"keep me"),
            "extra": SimpleUploadedFile("drop.bin", b"drop me"),
        },
    )
    assert r.status_code == 201
    blob = Blob.objects.get()
    assert blob.filename == "keep.bin"
    assert files_under(storage_root()) == [storage_root() / blob.storage_name]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ('quo"te\r\nX-Injected: 1.txt', 'quo"teX-Injected: 1.txt'),
        ("\x00\x1b[31mred\x7f.txt", "[31mred.txt"),
        ("..", "file"),
    ],
)
def test_hostile_raw_filenames_are_stored_safely(client, name, expected):
    r = client.post(URL, data=b"x", content_type="application/octet-stream", query_params={"filename": name})
    assert r.status_code == 201
    blob = Blob.objects.get()
    assert blob.filename == expected
    disposition = client.get(reverse("blobs:stream", args=[blob.id]))["Content-Disposition"]
    assert not any(c in disposition for c in "\r\n\x00\x1b")
    assert [p.name for p in files_under(storage_root())] == [blob.id.hex]  # object name from the id only


def test_thousand_character_filename_is_shortened_keeping_the_extension(client):
    r = client.post(
        URL, data=b"x", content_type="application/pdf", query_params={"filename": "a" * 1000 + ".pdf"}
    )
    assert r.status_code == 201
    filename = r.json()["filename"]
    assert len(filename) <= 255
    assert filename.endswith(".pdf")


def multipart_body(filename_header: str, content: bytes, boundary: str = "BoUnDaRy") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {filename_header}\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "filename_header",
    [
        'filename="' + "a" * 1000 + '.pdf"',  # Django's own part-header limit (1,024 bytes) would refuse it
        'filename="' + "文" * 1000 + '.pdf"',  # raw UTF-8 as browsers send it: 3,000 header bytes
    ],
    ids=["ascii", "utf8-3-byte"],
)
def test_thousand_character_multipart_filename_is_accepted_and_shortened(client, filename_header):
    body, content_type = multipart_body(filename_header, b"%PDF")
    r = client.post(URL, data=body, content_type=content_type)
    assert r.status_code == 201, r.content
    blob = Blob.objects.get()
    assert len(blob.filename) <= 255
    assert blob.filename.endswith(".pdf")
    stream = client.get(reverse("blobs:stream", args=[blob.id]))
    assert b"".join(stream.streaming_content) == b"%PDF"


def test_a_part_header_beyond_the_limit_is_a_400_and_stores_nothing(client):
    body, content_type = multipart_body('filename="' + "a" * 5_000 + '.pdf"', b"%PDF")
    r = client.post(URL, data=body, content_type=content_type)
    assert r.status_code == 400
    assert r.json()["code"] in {"bad_request", "parse_error"}
    assert not Blob.objects.exists()
    assert files_under(storage_root()) == []


def test_a_large_anonymous_multipart_body_is_refused_before_it_is_parsed(monkeypatch):
    """Python's header-parameter parser is quadratic (cpython gh-136063): anonymous clients may not make
    the server parse many long multipart part headers, not even by faking a CSRF cookie."""
    from django.http import multipartparser

    def no_parse(*args, **kwargs):
        raise AssertionError("a large anonymous multipart body was parsed")

    monkeypatch.setattr(multipartparser, "parse_boundary_stream", no_parse)
    boundary = "BoUnDaRy"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; x="{";" * 3500}"\r\n\r\nv\r\n'
    body = (part * 20 + f"--{boundary}--\r\n").encode()  # 20 parts of 3.5 KiB headers: over 64 KiB
    anonymous = Client(enforce_csrf_checks=True)
    anonymous.cookies["csrftoken"] = "x" * 32
    for path in ("/accounts/login/", "/admin/login/", URL, "/api/token/"):
        r = anonymous.post(path, data=body, content_type=f"multipart/form-data; boundary={boundary}")
        assert r.status_code == 401, path
        assert r.json()["code"] == "not_authenticated"


def test_a_small_anonymous_multipart_login_form_still_works():
    user = make_user("walt")
    client = Client()
    r = client.post("/accounts/login/", {"username": "walt", "password": "pw-123456!"})  # multipart
    assert r.status_code == 302
    assert int(client.session["_auth_user_id"]) == user.pk


def test_hostile_multipart_filename_is_stored_safely(client):
    boundary = "BoUnDaRy"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="..\\\\..\\\\sys/\u202etxt.exe"\r\n'
            "Content-Type: text/html\r\n\r\n"
        ).encode()
        + b"<script>alert(1)</script>"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(URL, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 201
    blob = Blob.objects.get()
    for forbidden in ("/", "\\", "\u202e", ".."):
        assert forbidden not in blob.filename
    stream = client.get(reverse("blobs:stream", args=[blob.id]))
    assert stream["Content-Disposition"].startswith("attachment;")  # text/html is never inline
    assert b"".join(stream.streaming_content) == b"<script>alert(1)</script>"


# --- too large ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_limit(settings):
    settings.BLOBS = {**settings.BLOBS, "MAX_UPLOAD_BYTES": 10_000}


def test_declared_content_length_over_the_limit_is_413_before_reading(client, small_limit):
    r = client.post(
        f"{URL}?filename=big.bin",
        data=b"x" * (10_000 + 64 * 1024 + 1),
        content_type="application/octet-stream",
    )
    assert r.status_code == 413
    assert r.json()["code"] == "upload_too_large"
    assert r["Connection"] == "close"
    assert_nothing_stored()


def test_raw_body_over_the_limit_is_413_with_nothing_stored(client, small_limit):
    r = client.post(f"{URL}?filename=big.bin", data=pattern(10_001), content_type="application/octet-stream")
    assert r.status_code == 413
    assert r.json()["code"] == "upload_too_large"
    assert_nothing_stored()


def test_raw_body_at_the_limit_is_accepted(client, small_limit):
    assert (
        client.post(
            f"{URL}?filename=ok.bin", data=pattern(10_000), content_type="application/octet-stream"
        ).status_code
        == 201
    )


def test_multipart_file_over_the_limit_is_413_with_nothing_stored(client, small_limit):
    r = multipart(
        client, pattern(20_000)
    )  # Content-Length within the framing allowance: the handler stops it
    assert r.status_code == 413
    assert r.json()["code"] == "upload_too_large"
    assert r["Connection"] == "close"
    assert_nothing_stored()


@pytest.fixture
def blob_wraps(monkeypatch) -> list[str]:
    """Blob ids whose data key LocalKeyProvider wrapped (not the audit log's own sealing key)."""
    from kms.providers.local import LocalKeyProvider

    wrapped: list[str] = []
    real = LocalKeyProvider.wrap

    def spy(self, data_key, *, context):
        if "blob_id" in context:
            wrapped.append(context["blob_id"])
        return real(self, data_key, context=context)

    monkeypatch.setattr(LocalKeyProvider, "wrap", spy)
    return wrapped


def test_only_the_first_file_field_costs_a_data_key(client, blob_wraps):
    # Every encrypted file costs a KMS wrap and a stored object: other fields and a second "file" are
    # skipped unread, so one request cannot make the server do a hundred times the work it claims.
    files = {
        "file": SimpleUploadedFile("small.bin", b"0123456789"),
        "other": SimpleUploadedFile("big.bin", pattern(20_000)),
    }
    files.update({f"more{n}": SimpleUploadedFile(f"{n}.bin", b"x") for n in range(20)})
    r = client.post(URL, files)
    assert r.status_code == 201
    assert blob_wraps == [str(Blob.objects.get(filename="small.bin").pk)]


def test_multipart_with_huge_declared_length_is_413(client, small_limit):
    r = multipart(client, pattern(100_000))
    assert r.status_code == 413
    assert_nothing_stored()


# --- key service and storage down ---------------------------------------------------------------------------


def test_master_key_missing_is_503_with_retry_after_for_multipart(client, master_key_missing):
    r = multipart(client, pattern(5000))
    assert r.status_code == 503
    assert r.json()["code"] == "kms_unavailable"
    assert r["Retry-After"].isdigit()
    assert "gone.key" not in r.content.decode()  # paths and key ids are for the log, not clients
    assert_nothing_stored()


def test_master_key_missing_is_503_for_raw_body(client, master_key_missing):
    r = client.post(f"{URL}?filename=x.bin", data=pattern(5000), content_type="application/octet-stream")
    assert r.status_code == 503
    assert r["Retry-After"].isdigit()
    assert_nothing_stored()


def test_disk_full_mid_multipart_upload_is_507_with_nothing_stored(client, disk_full):
    disk_full(room=5000)  # the storage writer's object file fails with ENOSPC after 5000 bytes
    r = multipart(client, pattern(50_000))
    assert r.status_code == 507
    assert r.json()["code"] == "storage_full"
    assert_nothing_stored()


def test_disk_full_mid_raw_upload_is_507_with_nothing_stored(client, disk_full):
    disk_full(room=5000)
    r = client.post(f"{URL}?filename=x.bin", data=pattern(50_000), content_type="application/octet-stream")
    assert r.status_code == 507
    assert_nothing_stored()


@pytest.mark.parametrize("body", ["multipart", "raw"])
def test_a_507_is_counted_and_audited_as_a_refused_upload(client, disk_full, body):
    from audit.models import AuditEvent

    def answered() -> float:
        return REGISTRY.get_sample_value("blob_storage_full_total") or 0.0

    before = answered()
    disk_full(room=5000)
    if body == "multipart":
        r = multipart(client, pattern(50_000))
    else:
        raw = pattern(50_000)
        r = client.post(f"{URL}?filename=x.bin", data=raw, content_type="application/octet-stream")
    assert r.status_code == 507
    assert answered() == before + 1
    refused = AuditEvent.objects.filter(action="blob.upload", outcome="error")
    assert refused.exists()
    assert {event.details.get("error") for event in refused} == {"storage_full"}


# --- who may upload -----------------------------------------------------------------------------------------


def test_user_without_add_permission_is_403_and_nothing_is_written():
    c = Client()
    c.force_login(make_user("reader", perms=()))
    r = multipart(c, pattern(5000))
    assert r.status_code == 403
    assert r.json()["code"] == "permission_denied"
    r = c.post(f"{URL}?filename=x", data=b"raw", content_type="application/octet-stream")
    assert r.status_code == 403
    assert_nothing_stored()


def test_anonymous_is_401_and_nothing_is_written():
    anonymous = Client()
    r = multipart(anonymous, pattern(5000))
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    assert (
        anonymous.post(f"{URL}?filename=x", data=b"raw", content_type="application/octet-stream").status_code
        == 401
    )
    assert_nothing_stored()


# --- CSRF: the middleware parses the body before the view ---------------------------------------------------


@pytest.fixture
def csrf_client(uploader):
    c = Client(enforce_csrf_checks=True)
    c.force_login(uploader)
    token = get_random_string(32)
    c.cookies["csrftoken"] = token
    return c, token


def test_csrf_protected_multipart_upload_is_claimed(csrf_client):
    c, token = csrf_client
    data = pattern(30_000)
    # The token travels in the multipart body, so CsrfViewMiddleware reads request.POST: the upload
    # handler encrypts the file during that parse, before the view runs; the view then claims it.
    r = c.post(URL, {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("c.bin", data)})
    assert r.status_code == 201
    assert Blob.objects.get().state == Blob.State.READY
    assert streamed(c, r.json()["id"]) == data


def test_csrf_header_token_with_raw_body(csrf_client):
    c, token = csrf_client
    r = c.post(
        f"{URL}?filename=h.bin",
        data=b"raw",
        content_type="application/octet-stream",
        headers={"X-CSRFToken": token},
    )
    assert r.status_code == 201


def test_csrf_failure_leaves_nothing(csrf_client):
    c, _token = csrf_client
    r = c.post(
        URL, {"csrfmiddlewaretoken": get_random_string(32), "file": SimpleUploadedFile("c.bin", b"x" * 9000)}
    )
    assert r.status_code == 403
    assert_nothing_stored()


def test_upload_parsed_for_another_view_is_discarded(csrf_client):
    c, token = csrf_client
    # /health accepts GET only; CSRF middleware still parses the multipart body (and so encrypts the file).
    r = c.post("/health", {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("c.bin", b"y" * 9000)})
    assert r.status_code == 405
    assert_nothing_stored()


def test_a_throttled_session_upload_is_refused_before_any_encryption(csrf_client, settings, blob_wraps):
    # With the token in the body, the CSRF check parses the multipart body before DRF's throttle runs:
    # the upload handler asks the throttle itself, at the first file, before wrapping a data key.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"uploads": "1/min"}}
    c, token = csrf_client
    first = c.post(URL, {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("a.bin", b"a")})
    assert first.status_code == 201
    assert len(blob_wraps) == 1
    for _ in range(3):
        r = c.post(URL, {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("b.bin", pattern(9000))})
        assert r.status_code == 429
        assert r.json()["code"] == "throttled"
        assert int(r["Retry-After"]) > 0
        assert r["Connection"] == "close"
    assert len(blob_wraps) == 1  # no data key was made for a refused upload
    assert Blob.objects.count() == 1


def test_over_limit_during_csrf_parse_is_413(csrf_client, small_limit):
    c, token = csrf_client
    r = c.post(URL, {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("big.bin", pattern(20_000))})
    assert r.status_code == 413
    assert_nothing_stored()


# --- plaintext never reaches disk ---------------------------------------------------------------------------


@pytest.fixture
def temp_dirs(monkeypatch, settings, tmp_path):
    """Every temp file Django or the stdlib could make goes under dirs we scan, and is kept after close."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    # Keep temp files after close (and make the anonymous O_TMPFILE kind named), so a plaintext temp file
    # that existed only during the request is still there to be found afterwards.
    keep = functools.partial(tempfile.NamedTemporaryFile, delete=False)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", keep)
    monkeypatch.setattr(tempfile, "TemporaryFile", keep)
    monkeypatch.setattr(django_temp, "NamedTemporaryFile", keep)  # Django binds its own name at import
    upload_tmp = Path(settings.FILE_UPLOAD_TEMP_DIR)
    assert upload_tmp.is_dir()
    return [system_tmp, upload_tmp]


def marked_plaintext(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += MARKER + f"{counter:08d}|".encode()
        counter += 1
    return bytes(out[:size])


def files_containing(marker: bytes, roots: list[Path]) -> list[Path]:
    return [path for path in files_under(*roots) if marker in path.read_bytes()]


def test_plaintext_never_reaches_disk(client, temp_dirs, settings):
    size = 3 * 1024 * 1024 + 12345
    assert size > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    data = marked_plaintext(size)
    r = multipart(client, data, name="secret.txt", content_type="text/plain")
    assert r.status_code == 201
    roots = [*temp_dirs, storage_root()]
    assert files_under(storage_root())  # the ciphertext is there...
    assert files_containing(MARKER, roots) == []  # ...and no plaintext anywhere
    assert streamed(client, r.json()["id"]) == data


def test_the_disk_scan_would_catch_django_default_handlers(client, temp_dirs, settings):
    # Control: with Django's default handlers the same upload spills plaintext into a temp file, and the
    # scan above finds it. Without this, a scan that cannot see temp files would pass vacuously.
    settings.FILE_UPLOAD_HANDLERS = [
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django.core.files.uploadhandler.TemporaryFileUploadHandler",
    ]
    data = marked_plaintext(3 * 1024 * 1024 + 12345)
    multipart(client, data, name="secret.txt", content_type="text/plain")
    assert files_containing(MARKER, temp_dirs) != []


# --- filenames: one rule for raw bodies and multipart parts (RFC 6266 §4.3, RFC 8187) ----------------------


def wsgi_header(value: bytes) -> str:
    """A header value as a WSGI server hands it to Django: its octets as an ISO-8859-1 string (PEP 3333).
    Passing a str with "é" in it straight to the test client would stand for the single octet E9."""
    return value.decode("iso-8859-1")


def raw_upload(client: Client, disposition: bytes):
    return client.post(
        URL,
        data=b"x",
        content_type="application/octet-stream",
        headers={"Content-Disposition": wsgi_header(b"attachment; " + disposition)},
    )


def multipart_upload(client: Client, disposition: bytes):
    boundary = "BoUnDaRy"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '.encode()
        + disposition
        + b"\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    return client.post(URL, data=body, content_type=f"multipart/form-data; boundary={boundary}")


PATHS = {"raw": raw_upload, "multipart": multipart_upload}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("disposition", "stored"),
    [
        # Raw UTF-8 octets (what curl and browsers send): the raw path stored "cafÃ© â\x9c\x93.txt".
        ('filename="café ✓.txt"'.encode(), "café ✓.txt"),
        (b"filename*=UTF-8''caf%C3%A9%20%E2%9C%93.txt", "café ✓.txt"),
        # RFC 8187's other charset: the raw path stored "file".
        (b"filename*=ISO-8859-1''caf%E9.txt", "café.txt"),
    ],
    ids=["raw-utf8", "rfc8187-utf8", "rfc8187-latin1"],
)
def test_both_upload_paths_store_the_same_name(client, path, disposition, stored):
    r = PATHS[path](client, disposition)
    assert r.status_code == 201, r.content
    assert r.json()["filename"] == stored
    assert Blob.objects.get().filename == stored


@pytest.mark.parametrize("path", PATHS)
def test_an_undecodable_rfc8187_filename_is_refused_on_both_paths(client, path):
    # "%E9" alone is not UTF-8: both paths stored "caf\ufffd.txt" (Django's RFC 2231 decoding and unquote
    # replace what they cannot decode).
    r = PATHS[path](client, b"filename*=UTF-8''caf%E9.txt")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid_filename"
    assert_nothing_stored()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "disposition",
    [b'filename="caf\xe9.txt"', b"filename*=KOI8-R''%C1.txt", b"filename*=UTF-8''two words.txt"],
    ids=["latin1-octets", "unknown-charset", "malformed-ext-value"],
)
def test_an_undecodable_filename_is_invalid_filename_on_both_paths(client, path, disposition):
    # Django's multipart parser drops a part header line it cannot read (the first two), so that part
    # used to be "no file" (400 no_file); the raw path stored "café.txt", "file" and "two words.txt".
    r = PATHS[path](client, disposition)
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid_filename"
    assert_nothing_stored()


def test_a_valid_file_after_a_refused_part_is_not_kept(client):
    boundary = "BoUnDaRy"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="caf\xe9.txt"\r\n\r\nx\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ok.txt"\r\n\r\ny\r\n'
        f"--{boundary}--\r\n"
    ).encode("iso-8859-1")
    r = client.post(URL, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid_filename"
    assert_nothing_stored()


def test_a_part_header_look_alike_inside_file_content_is_content(client):
    # Only what follows the boundary is a part header: a file that holds such text (an .eml, a .mbox)
    # is stored as it is.
    content = b'Content-Disposition: form-data; name="file"; filename="caf\xe9.txt"\r\n\r\nnot a part'
    r = multipart_upload(client, b'filename="mail.eml"')
    assert r.status_code == 201
    boundary = "BoUnDaRy"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="mail.eml"\r\n\r\n'.encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(URL, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 201, r.content
    assert streamed(client, r.json()["id"]) == content


def test_an_undecodable_filename_on_another_field_is_not_ours(client):
    boundary = "BoUnDaRy"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="other"; filename="caf\xe9"\r\n\r\nz\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ok.txt"\r\n\r\ny\r\n'
        f"--{boundary}--\r\n"
    ).encode("iso-8859-1")
    r = client.post(URL, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 201, r.content
    assert r.json()["filename"] == "ok.txt"


def test_an_undecodable_filename_query_parameter_is_refused(client):
    # Django decodes the query string as UTF-8 with errors="replace": "%E9" arrives as U+FFFD.
    r = client.post(f"{URL}?filename=caf%E9.txt", data=b"x", content_type="application/octet-stream")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid_filename"
    assert_nothing_stored()
