"""Malformed input against a live gunicorn: never a 5xx, never anything stored (issue 15, "Proof").

The server is the end-to-end one (blobs/tests/liveserver.py, production settings): the default event worker,
and for the cases that read upload bodies the gthread worker too. Raw sockets send what ``http.client``
refuses to: broken chunked codings (RFC 9112 §7.1), bodies cut by a FIN or a TCP reset, garbage in paths and
headers. Hypothesis generates the rest: chunked framings, JSON on
the anonymous token endpoints, validly signed tokens with arbitrary claims (the test knows the server's
secret key), Range and conditional headers, ids in URLs. Every answer must be below 500 (or the connection
closed without one, which gunicorn does for requests it cannot parse); after each case no upload may be left
``pending`` and every stored object must belong to a ``ready`` row; the server's log must hold no
"Internal Server Error" and no traceback. CI's Hypothesis profile keeps the suite well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sqlite3
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blobs.tests.liveserver import Gunicorn, ServerError, Session, prepare_database, server_env

pytestmark = pytest.mark.e2e

HTTP_TIMEOUT = 10.0
BOUNDARY = "fuzzb0undary"

# Module-scoped server, one request per example: the function-scoped health check does not apply.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(kw_only=True)
class Server(Gunicorn):
    environment: dict[str, str]
    username: str
    password: str

    @property
    def storage_dir(self) -> Path:
        return Path(self.environment["BLOB_STORAGE_DIR"])

    def rows(self, sql: str, *params: object) -> list[tuple]:
        db = Path(self.environment["ERPHUB_VAR_DIR"]) / "db.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    var_dir = tmp_path_factory.mktemp("fuzz-var")
    username, password = "fuzz-admin", secrets.token_urlsafe(18)
    env = server_env(
        var_dir,
        username=username,
        password=password,
        key_id="fuzz-1",
        BLOB_SEGMENT_SIZE="4096",
        UPLOAD_THROTTLE_RATE="100000/min",  # hundreds of uploads a minute here, none of them refused for it
    )
    prepare_database(env)
    srv = Server.start(
        env,
        var_dir / "gunicorn.log",
        timeout=60,
        name="fuzz",
        environment=env,
        username=username,
        password=password,
    )
    try:
        try:
            srv.wait_until_healthy(60)
        except ServerError as exc:
            pytest.fail(str(exc))
        yield srv
        assert_clean_log(srv)
    finally:
        srv.stop()


@pytest.fixture(scope="module", params=["event", "gthread"])
def body_server(request: pytest.FixtureRequest, server: Server) -> Iterator[Server]:
    """The body-reading cases run under both worker classes (each reads bodies its own way); the gthread
    server shares the event server's database and storage."""
    if request.param == "event":
        yield server
        return
    log_path = Path(server.environment["ERPHUB_VAR_DIR"]) / "gunicorn-gthread.log"
    srv = Server.start(
        server.environment,
        log_path,
        timeout=60,
        mode="gthread",
        name="fuzz-gthread",
        environment=server.environment,
        username=server.username,
        password=server.password,
    )
    try:
        try:
            srv.wait_until_healthy(60)
        except ServerError as exc:
            pytest.fail(str(exc))
        yield srv
        assert_clean_log(srv)
    finally:
        srv.stop()


def assert_clean_log(server: Server) -> None:
    """After every case: whatever the server logged, no request failed as a server fault."""
    log = server.log_path.read_text(errors="replace")
    assert "Internal Server Error" not in log, server.log_tail(8000)
    assert "Traceback" not in log, server.log_tail(8000)


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    """A real access token for the superuser (who may upload)."""
    status, _, body = exchange(
        server,
        "POST",
        "/api/token/",
        {"Content-Type": "application/json"},
        json.dumps({"username": server.username, "password": server.password}).encode(),
    )
    assert status == 200, body
    return str(json.loads(body)["access"])


@pytest.fixture(scope="module")
def staff(server: Server) -> Session:
    session = Session(server, timeout=HTTP_TIMEOUT)
    session.login(server.username, server.password)
    return session


@pytest.fixture(scope="module")
def blob_id(server: Server, token: str) -> str:
    status, _, body = exchange(
        server,
        "POST",
        "/secure/files/?filename=fixed.bin",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
        bytes(range(256)) * 40,
    )
    assert status == 201, body
    return str(json.loads(body)["id"])


# --- the wire -----------------------------------------------------------------------------------------------


def _connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=HTTP_TIMEOUT)


def _receive(sock: socket.socket) -> bytes:
    received = bytearray()
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def _status(answer: bytes) -> int | None:
    """The status of the first final response (after any 1xx), or None if the server closed without one."""
    while answer.startswith(b"HTTP/1.1 1"):
        answer = answer.partition(b"\r\n\r\n")[2]
    if not answer.startswith(b"HTTP/"):
        return None
    return int(answer.split(b" ", 2)[1])


def raw_exchange(server: Server, request: bytes, *, half_close: bool = False) -> tuple[int | None, bytes]:
    """Send ``request`` as is; returns the first response's status (None: closed without one) and every byte
    that came back. ``half_close``: end the sending side after it (a body that stops early)."""
    with contextlib.closing(_connect(server)) as sock:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        answer = _receive(sock)
    return _status(answer), answer


def head_bytes(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(
    server: Server, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int | None, dict[str, str], bytes]:
    """One request with a Content-Length body; the response's status, headers and body."""
    if body or method in {"POST", "PUT", "PATCH"}:
        headers = {**headers, "Content-Length": str(len(body))}
    status, answer = raw_exchange(server, head_bytes(method, path, headers) + body)
    head, _, payload = answer.partition(b"\r\n\r\n")
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields, payload


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece) + b"0\r\n\r\n"


def multipart_body(data: bytes, name: str = "fuzz.bin") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


UPLOAD_TYPES = {"raw": "application/octet-stream", "multipart": f"multipart/form-data; boundary={BOUNDARY}"}


def upload_head(token: str, content_type: str, framing: str) -> bytes:
    return head_bytes(
        "POST",
        "/secure/files/?filename=fuzz.bin",
        {"Authorization": f"Bearer {token}", "Content-Type": content_type, **dict([framing.split(": ")])},
    )


# --- the invariants -----------------------------------------------------------------------------------------


def assert_not_a_server_error(status: int | None, answer: bytes) -> None:
    """Below 500, or no answer at all (gunicorn closes a connection it cannot parse a request from). The one
    5xx allowed is gunicorn's own 501 for a transfer coding it does not implement, before the application
    sees the request: RFC 9112 §6.1 says a server SHOULD answer exactly that."""
    if status == 501 and b"Unsupported transfer coding" in answer:
        return
    assert status is None or status < 500, answer[:600]


def assert_nothing_left_over(server: Server, bound: float = 15.0) -> None:
    """No pending upload, and no stored object without a ready row. Waits for requests the server may still
    be finishing (a reset upload is noticed at the worker's next read)."""
    deadline = time.monotonic() + bound
    while True:
        pending = server.rows("SELECT id FROM blobs_blob WHERE state != 'ready'")
        ready = {name for (name,) in server.rows("SELECT storage_name FROM blobs_blob WHERE state = 'ready'")}
        stray = {
            str(path.relative_to(server.storage_dir))
            for path in server.storage_dir.rglob("*")
            if path.is_file() and str(path.relative_to(server.storage_dir)) not in ready
        }
        if not pending and not stray:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left over: pending rows {pending}, objects without a ready row {sorted(stray)}")
        time.sleep(0.05)


def wait_for_log(server: Server, offset: int, marker: str, bound: float = 15.0) -> str:
    """The server's log from ``offset`` on, once ``marker`` is in it."""
    deadline = time.monotonic() + bound
    while True:
        with server.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        if marker in text:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"no {marker!r} in the log within {bound:.0f} s:\n{text[-3000:]}")
        time.sleep(0.05)


def ready_count(server: Server) -> int:
    return server.rows("SELECT count(*) FROM blobs_blob WHERE state = 'ready'")[0][0]


# --- item 2: malformed chunked upload bodies ---------------------------------------------------------------

MALFORMED_CHUNKED = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-trailing-garbage": b"5zz\r\nhello\r\n0\r\n\r\n",
    "size-space-garbage": b"5 x\r\nhello\r\n0\r\n\r\n",
    "extension-control-byte": b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "extension-nul": b"5;\x00\r\nhello\r\n0\r\n\r\n",
    "extension-bare-cr": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "missing-terminator": b"5\r\nhelloXX0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "size-overflow": b"ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"5\nhello\n0\n\n",
    "bad-trailer": b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
    "trailer-control-byte": b"5\r\nhello\r\n0\r\nX-A: \x01\r\n\r\n",
    "later-chunk": b"4000\r\n" + b"x" * 0x4000 + b"\r\nq\r\n",
    "empty-size": b"\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("kind", UPLOAD_TYPES)
@pytest.mark.parametrize("raw", MALFORMED_CHUNKED.values(), ids=MALFORMED_CHUNKED.keys())
def test_malformed_chunked_upload_is_4xx_and_stores_nothing(body_server, token, kind, raw):
    before = ready_count(body_server)
    prefix = chunked(multipart_body(b"")[:-20])[: -len(b"0\r\n\r\n")] if kind == "multipart" else b""
    request = upload_head(token, UPLOAD_TYPES[kind], "Transfer-Encoding: chunked") + prefix + raw
    # Half-closed: a framing gunicorn reads as "more to come" (a huge size, bare LFs) ends there.
    status, answer = raw_exchange(body_server, request, half_close=True)
    assert_not_a_server_error(status, answer)
    assert status is None or 400 <= status < 500, answer[:600]
    assert_nothing_left_over(body_server)
    assert ready_count(body_server) == before


@st.composite
def chunked_framings(draw: st.DrawFn) -> bytes:
    """A chunked coding of a few chunks, each possibly lying about its size or decorated with a random
    extension; the last chunk and trailers are random too."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=40))
        size = draw(st.one_of(st.just(len(data)), st.integers(0, 80)))
        size_text = draw(st.one_of(st.just(b"%x" % size), st.binary(max_size=6)))
        extension = draw(st.one_of(st.just(b""), st.binary(max_size=12).map(lambda e: b";" + e)))
        end = draw(st.sampled_from([b"\r\n", b"\n", b"", b"\r", b"XX"]))
        out += size_text + extension + b"\r\n" + data + end
    out += draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"0\r\nX: y\r\n\r\n", b"0;x\r\n\r\n"]))
    out += draw(st.binary(max_size=8))  # whatever follows: the next "request"
    return bytes(out)


@FUZZ
@given(body=chunked_framings(), kind=st.sampled_from(sorted(UPLOAD_TYPES)))
def test_generated_chunked_framings_never_fail_the_server(server, token, body, kind):
    before = ready_count(server)
    status, answer = raw_exchange(
        server, upload_head(token, UPLOAD_TYPES[kind], "Transfer-Encoding: chunked") + body, half_close=True
    )
    assert_not_a_server_error(status, answer)
    if status != 201:  # a framing that happens to be valid stores its (possibly empty) file
        assert_nothing_left_over(server)
        assert ready_count(server) == before


# --- item 21: uploads cut short, and chunked multipart -----------------------------------------------------


@pytest.mark.parametrize("kind", UPLOAD_TYPES)
@pytest.mark.parametrize("framing", ["Content-Length: 1000000", "Transfer-Encoding: chunked"])
@pytest.mark.parametrize("ending", ["fin", "reset"])
def test_an_upload_cut_short_stores_nothing(body_server, token, kind, framing, ending):
    before = ready_count(body_server)
    offset = body_server.log_path.stat().st_size
    data = multipart_body(b"x" * 300_000)[:200_000] if kind == "multipart" else b"x" * 200_000
    if framing.startswith("Transfer"):
        data = b"%x\r\n%s" % (len(data) + 100, data)  # a chunk that never ends
    with contextlib.closing(_connect(body_server)) as sock:
        sock.sendall(upload_head(token, UPLOAD_TYPES[kind], framing) + data)
        if ending == "reset":
            # Give the worker time to be inside the body (else gunicorn meets the reset before the
            # application does): what it shows then is checked below, not waited for here.
            time.sleep(0.2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            status, answer = None, b""
        else:
            sock.shutdown(socket.SHUT_WR)
            answer = _receive(sock)
            status = _status(answer)
    assert_not_a_server_error(status, answer)
    if ending == "fin":  # the raw-body answer for both kinds (issue 15, item 21)
        assert status == 400, answer[:600]
    # A reset upload has no one to answer: what it did shows in the server's log (a 500 and two ERROR
    # tracebacks for a multipart one, before) once its request line is written.
    logged = wait_for_log(body_server, offset, '"route": "secure/files/"')
    assert "Internal Server Error" not in logged, logged
    assert '"level": "error"' not in logged, logged
    assert_nothing_left_over(body_server)
    assert ready_count(body_server) == before
    assert Session(body_server).request("GET", "/health").status == 200


def test_a_valid_chunked_multipart_upload_is_201(body_server, token):
    data = bytes(range(256)) * 100
    body = multipart_body(data, name="chunked.bin")
    request = upload_head(token, UPLOAD_TYPES["multipart"], "Transfer-Encoding: chunked")
    status, answer = raw_exchange(body_server, request + chunked(body[:1000], body[1000:7777], body[7777:]))
    assert status == 201, answer[:600]
    created = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert (created["filename"], created["size"]) == ("chunked.bin", len(data))
    status, _, streamed = exchange(
        body_server, "GET", f"/secure/files/{created['id']}/stream", {"Authorization": f"Bearer {token}"}
    )
    assert (status, streamed) == (200, data)


# --- item 3: JSON on the anonymous token endpoints ---------------------------------------------------------

TOKEN_ENDPOINTS = ["/api/token/", "/api/token/refresh/", "/api/token/blacklist/"]

JSON_BODIES = {
    "deep-array": b"[" * 1000 + b"]" * 1000,
    "deep-object": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "deep-inside-a-field": b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b', "password": "x"}',
    "deep-unclosed": b"[" * 100_000,
    "huge-exponent": b'{"refresh": 1e999999}',
    "nan": b'{"refresh": NaN}',
    "lone-surrogate": b'{"username": "\\ud800", "password": "\\udfff", "refresh": "\\ud800"}',
    "not-utf8": b'{"username": "\xff\xfe"}',
    "bom": b'\xef\xbb\xbf{"refresh": "x"}',
    "top-level-scalar": b"12",
    "null": b"null",
    "list": b'[{"refresh": "x"}]',
    "wrong-types": b'{"username": [1], "password": {"a": 1}, "refresh": {"b": 2}}',
    "empty": b"",
    "long-string": b'{"refresh": "' + b"a" * 300_000 + b'"}',
    "nul-in-string": b'{"username": "a\\u0000b", "password": "x"}',
}


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
@pytest.mark.parametrize("body", JSON_BODIES.values(), ids=JSON_BODIES.keys())
def test_malformed_json_on_token_endpoints_is_4xx(server, path, body):
    status, _, payload = exchange(server, "POST", path, {"Content-Type": "application/json"}, body)
    assert status is not None, "closed without an answer"
    assert 400 <= status < 500, payload[:600]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@FUZZ
@given(
    path=st.sampled_from(TOKEN_ENDPOINTS),
    value=st.one_of(
        json_values,
        st.fixed_dictionaries({"username": json_values, "password": json_values}),
        st.fixed_dictionaries({"refresh": json_values}),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "application/json; charset=bogus",
            "text/plain",
            "",
        ]
    ),
)
def test_generated_json_on_token_endpoints_is_never_a_server_error(server, path, value, content_type):
    body = json.dumps(value, allow_nan=True).encode()
    status, _, payload = exchange(
        server, "POST", path, {"Content-Type": content_type} if content_type else {}, body
    )
    assert_not_a_server_error(status, payload)


# --- item 4: validly signed tokens with any claims ---------------------------------------------------------

claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def signed(server: Server, claims: dict) -> str:
    now = int(time.time())
    payload = {"aud": "erphub", "iss": "erphub", "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, server.environment["DJANGO_SECRET_KEY"], algorithm="HS256")


@pytest.mark.parametrize("user_id", ["abc", [1], {"id": 1}, True, 1.5, "", 2**70, "1.0"])
def test_signed_tokens_naming_no_possible_user_are_401(server, user_id):
    access = signed(server, {"token_type": "access", "user_id": user_id})
    status, _, payload = exchange(server, "GET", "/secure/files/", {"Authorization": f"Bearer {access}"})
    assert status == 401, payload[:600]
    refresh = signed(server, {"token_type": "refresh", "user_id": user_id})
    for path in TOKEN_ENDPOINTS[1:]:
        body = json.dumps({"refresh": refresh}).encode()
        status, _, payload = exchange(server, "POST", path, {"Content-Type": "application/json"}, body)
        assert status == 401, payload[:600]


@FUZZ
@given(
    claims=st.fixed_dictionaries(
        {
            "user_id": claim_values,
            "token_type": st.one_of(st.sampled_from(["access", "refresh"]), claim_values),
        },
        optional={
            "jti": claim_values,
            "exp": claim_values,
            "aud": claim_values,
            "hash_password": claim_values,
        },
    )
)
def test_generated_signed_tokens_are_never_a_server_error(server, claims):
    token = signed(server, claims)
    status, _, payload = exchange(server, "GET", "/secure/files/", {"Authorization": f"Bearer {token}"})
    assert_not_a_server_error(status, payload)
    body = json.dumps({"refresh": token}).encode()
    for path in TOKEN_ENDPOINTS[1:]:
        status, _, payload = exchange(server, "POST", path, {"Content-Type": "application/json"}, body)
        assert_not_a_server_error(status, payload)


# --- item 5 and the rest of the surface: ids and headers ---------------------------------------------------

path_segments = st.one_of(
    st.sampled_from(["not-a-uuid", "%00", "..", "1", "-1", "9" * 40, str(uuid.uuid4()), "%ff", "a%2Fb"]),
    st.text(min_size=1, max_size=60).map(lambda text: quote(text, safe="")),
)


@FUZZ
@given(first=path_segments, second=path_segments, template=st.integers(0, 7))
def test_generated_ids_in_urls_are_never_a_server_error(server, staff, token, first, second, template):
    path = [
        f"/admin/r/{first}/{second}/",
        f"/admin/blobs/blob/{first}/change/",
        f"/admin/blobs/blob/{first}/history/",
        f"/secure/files/{first}/",
        f"/secure/files/{first}/stream",
        f"/legacy/files/{first}",
        f"/admin/r/{first}/{second}/",
        f"/secure/files/?owner={first}&ordering={second}&page={second}",
    ][template]
    auth = staff.headers() if template < 3 else {"Authorization": f"Bearer {token}"}
    status, _, payload = exchange(server, "GET", path, auth)
    assert_not_a_server_error(status, payload)


def test_view_on_site_with_a_malformed_id_is_404_for_staff(server, staff):
    ids = {
        row[1]: row[0]
        for row in server.rows("SELECT id, model FROM django_content_type WHERE app_label = 'blobs'")
    }
    status, _, payload = exchange(server, "GET", f"/admin/r/{ids['blob']}/not-a-uuid/", staff.headers())
    assert status == 404, payload[:600]


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)


@FUZZ
@given(
    name=st.sampled_from(
        [
            "Range",
            "If-Range",
            "If-None-Match",
            "If-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "Accept",
        ]
    ),
    value=st.one_of(
        header_values,
        st.sampled_from(
            ["bytes=0-", "bytes=-0", "bytes=5-1", "bytes=0-0," * 300, "bytes=99999999999999999999-"]
        ),
    ),
)
def test_generated_stream_headers_are_never_a_server_error(server, token, blob_id, name, value):
    headers = {"Authorization": f"Bearer {token}", name: value}
    status, _, payload = exchange(server, "GET", f"/secure/files/{blob_id}/stream", headers)
    assert_not_a_server_error(status, payload)


@FUZZ
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Content-Type",
                    "Content-Disposition",
                    "Content-Digest",
                    "Authorization",
                    "Transfer-Encoding",
                    "Content-Length",
                    "Cookie",
                    "X-CSRFToken",
                    "Expect",
                ]
            ),
            header_values,
        ),
        max_size=4,
    ),
    body=st.binary(max_size=200),
)
def test_generated_upload_headers_are_never_a_server_error(server, token, headers, body):
    before = ready_count(server)
    request = head_bytes("POST", "/secure/files/", [("Authorization", f"Bearer {token}"), *headers]) + body
    status, answer = raw_exchange(server, request, half_close=True)
    assert_not_a_server_error(status, answer)
    if status != 201:
        assert_nothing_left_over(server)
        assert ready_count(server) == before
