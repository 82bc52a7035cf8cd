"""blobs.disposition: media types, stored filenames and Content-Disposition (RFC 6266 / RFC 8187)."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobs.disposition import (
    INLINE_SAFE_TYPES,
    OCTET_STREAM,
    FilenameError,
    PartFilenameCheck,
    content_disposition,
    disposition_filename,
    disposition_type,
    is_inline_safe,
    normalize_content_type,
    safe_filename,
    upload_filename,
)

# --------------------------------------------------------------------------------------------------------
# normalize_content_type
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claimed", "expected"),
    [
        ("image/png", "image/png"),
        ("IMAGE/PNG", "image/png"),
        ("  video/mp4  ", "video/mp4"),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("image/svg+xml", "image/svg+xml"),
        ("text/html", "text/html"),
        # parameters dropped, except a valid charset on text/*
        ("image/png; name=evil.html", "image/png"),
        ("application/json; charset=utf-8", "application/json"),
        ("text/plain; charset=UTF-8", "text/plain; charset=utf-8"),
        ("text/plain;charset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain ; charset=utf-8", "text/plain; charset=utf-8"),
        ('text/plain; charset="iso-8859-1"', "text/plain; charset=iso-8859-1"),
        ("text/plain; format=flowed; charset=us-ascii", "text/plain; charset=us-ascii"),
        ('text/plain; name="a;charset=x"', "text/plain"),  # ";" inside a quoted-string is no separator
        ("text/plain;", "text/plain"),
        ("text/plain; charset=", "text/plain"),
        ("text/plain; charset=utf-8\r\nX-Evil: 1", OCTET_STREAM),
        ("text/plain; charset=utf-8\x00", OCTET_STREAM),
        ("text/plain;\tcharset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain; charset=utf-7", "text/plain"),  # historical XSS vector
        ("text/plain; charset=UTF_7", "text/plain"),
        ("text/plain; charset=" + "x" * 41, "text/plain"),
        ("text/plain; charset=é", "text/plain"),
        # invalid -> application/octet-stream
        (None, OCTET_STREAM),
        ("", OCTET_STREAM),
        ("   ", OCTET_STREAM),
        ("png", OCTET_STREAM),
        ("image/", OCTET_STREAM),
        ("/png", OCTET_STREAM),
        ("image/png/x", OCTET_STREAM),
        ("image /png", OCTET_STREAM),
        ("image/ png", OCTET_STREAM),
        ("image/p ng", OCTET_STREAM),
        ("image/png\r\nX-Evil: 1", OCTET_STREAM),
        ("text/html\n", OCTET_STREAM),
        ("image/pñg", OCTET_STREAM),
        ('"image/png"', OCTET_STREAM),
        ("image/png,text/html", OCTET_STREAM),
        ("*/*", OCTET_STREAM),
        ("image/*", OCTET_STREAM),
        ("multipart/byteranges; boundary=x", OCTET_STREAM),
        ("multipart/x-mixed-replace", OCTET_STREAM),
        ("a" * 128 + "/png", OCTET_STREAM),
        ("image/" + "a" * 128, OCTET_STREAM),
    ],
)
def test_normalize_content_type(claimed, expected):
    assert normalize_content_type(claimed) == expected


@given(st.text(max_size=60))
def test_normalize_content_type_is_always_a_safe_header_value(claimed):
    normalised = normalize_content_type(claimed)
    assert re.fullmatch(
        r"[!#$%&'*+\-.^_`|~0-9a-z]+/[!#$%&'*+\-.^_`|~0-9a-z]+(; charset=[^\s;]+)?", normalised
    )
    assert normalize_content_type(normalised) == normalised


# --------------------------------------------------------------------------------------------------------
# Inline allowlist
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["image/png", "IMAGE/JPEG", "video/mp4", "audio/mpeg", "application/pdf", "text/plain; charset=utf-8"],
)
def test_inline_safe(content_type):
    assert is_inline_safe(content_type)
    assert disposition_type(content_type) is True


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/octet-stream",
        "multipart/x-mixed-replace",
        "text/plain\r\n",
        "",
    ],
)
def test_not_inline_safe(content_type):
    assert not is_inline_safe(content_type)
    assert disposition_type(content_type) is False


def test_inline_safe_types_hold_no_scriptable_type():
    scriptable = {"text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml"}
    assert not INLINE_SAFE_TYPES & scriptable
    assert all(normalize_content_type(t) == t for t in INLINE_SAFE_TYPES)


# --------------------------------------------------------------------------------------------------------
# safe_filename
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("résumé ✓.pdf", "résumé ✓.pdf"),
        ("re\u0301sume\u0301.pdf", "résumé.pdf"),  # NFC
        ('say "hi".txt', 'say "hi".txt'),  # stored as is, escaped when a header is built
        # path separators: the basename only
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\secret.docx", "secret.docx"),
        ("dir/sub\\mixed/name.txt", "name.txt"),
        ("trailing/", "file"),
        ("/", "file"),
        # control characters
        ("a\r\nb.txt", "ab.txt"),
        ("a\x00b\x1fc\x7fd\x85e\x9f.txt", "abcde.txt"),
        ("line\u2028para\u2029.txt", "linepara.txt"),
        ("tab\there.txt", "tabhere.txt"),
        # bidi overrides and isolates
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069x.txt", "x.txt"),
        ("a\u200e\u200f\u061cb", "ab"),
        # lone surrogates cannot be encoded: removed
        ("a\udc80b.txt", "ab.txt"),
        # whitespace and dots at the edges
        ("  spaced.txt  ", "spaced.txt"),
        (".bashrc", "bashrc"),
        ("name.", "name"),
        ("...hidden...", "hidden"),
        (" . .x. . ", "x"),
        ("\u3000wide\u00a0", "wide"),
        # nothing left
        (None, "file"),
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("../..", "file"),
        ("   ", "file"),
        ("\r\n", "file"),
        ("\u202e", "file"),
        # kept inside
        ("a..b.txt", "a..b.txt"),
        ("with space.txt", "with space.txt"),
        ("emoji 👩‍💻.png", "emoji 👩‍💻.png"),  # ZWJ is not a control
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_safe_filename_truncates_keeping_the_extension():
    name = "x" * 1000 + ".pdf"
    result = safe_filename(name)
    assert len(result) == 255
    assert result == "x" * 251 + ".pdf"


def test_safe_filename_truncation_counts_characters_not_bytes():
    assert safe_filename("é" * 300 + ".txt") == "é" * 251 + ".txt"


@pytest.mark.parametrize(
    ("name", "max_length", "expected"),
    [
        ("abcdef.txt", 10, "abcdef.txt"),
        ("abcdefg.txt", 10, "abcdef.txt"),
        ("abc   defg.txt", 10, "abc.txt"),  # no whitespace left before the extension
        ("abc...defg.txt", 10, "abc.txt"),
        ("a" * 20, 10, "a" * 10),  # no extension
        ("a" * 20 + ".this-is-no-extension", 10, "a" * 10),  # too long to be one
        ("abcdefgh.pdf", 4, "abcd"),  # extension does not fit
        ("abcdefgh.pdf", 5, "a.pdf"),
        ("abc def.", 5, "abc d"),
        ("abc  def", 4, "abc"),
        ("", 2, "fi"),
        ("a" * 20 + ". ", 10, "a" * 10),
    ],
)
def test_safe_filename_truncation(name, max_length, expected):
    assert safe_filename(name, max_length=max_length) == expected


def test_safe_filename_rejects_silly_max_length():
    with pytest.raises(ValueError, match="max_length"):
        safe_filename("a", max_length=0)


@given(st.text(max_size=300), st.integers(1, 300))
@settings(max_examples=300)
def test_safe_filename_properties(name, max_length):
    result = safe_filename(name, max_length=max_length)
    assert 1 <= len(result) <= max_length
    assert "/" not in result
    assert "\\" not in result
    assert result not in {".", ".."}
    assert result == result.strip()
    assert not result.startswith(".")
    assert not result.endswith(".")
    assert not any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} for c in result)
    assert not any("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in result)
    result.encode("utf-8")
    assert safe_filename(result, max_length=max_length) == result  # idempotent


# --------------------------------------------------------------------------------------------------------
# content_disposition
# --------------------------------------------------------------------------------------------------------


def parse_disposition(value: str) -> tuple[str, str, str]:
    """(type, filename, filename*) as a mail/HTTP parser recovers them (RFC 2231 / RFC 8187 decoding)."""
    message = email.message_from_string(f"Content-Disposition: {value}\n\n")
    params = message.get_params(header="content-disposition")
    assert params is not None
    kind = params[0][0]
    plain = [v for k, v in params[1:] if k == "filename" and isinstance(v, str)]
    extended = [v for k, v in params[1:] if k == "filename" and isinstance(v, tuple)]
    assert len(plain) == 1
    assert len(extended) == 1
    charset, language, _ = extended[0]
    assert charset == "UTF-8"
    assert language == ""
    return kind, plain[0], email.utils.collapse_rfc2231_value(extended[0])


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            "résumé ✓.pdf",
            "attachment; filename=\"r_sum_ _.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%9C%93.pdf",
        ),
        ('say "hi".txt', "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"),
        ("back\\slash.txt", "attachment; filename=\"slash.txt\"; filename*=UTF-8''slash.txt"),
        ("100%A9.txt", "attachment; filename=\"100_A9.txt\"; filename*=UTF-8''100%25A9.txt"),
        ("a;b=c.txt", "attachment; filename=\"a;b=c.txt\"; filename*=UTF-8''a%3Bb%3Dc.txt"),
        ("!#$&+-.^_`|~.txt", "attachment; filename=\"!#$&+-.^_`|~.txt\"; filename*=UTF-8''!#$&+-.^_`|~.txt"),
        ("a*b'c(d).txt", "attachment; filename=\"a*b'c(d).txt\"; filename*=UTF-8''a%2Ab%27c%28d%29.txt"),
    ],
)
def test_content_disposition(filename, expected):
    assert content_disposition(filename) == expected


def test_content_disposition_inline():
    assert (
        content_disposition("cat.png", inline=True)
        == "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png"
    )


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("résumé ✓.pdf", "résumé ✓.pdf"),
        ('quote".txt', 'quote".txt'),
        ("evil\r\nSet-Cookie: x=1.txt", "evilSet-Cookie: x=1.txt"),
        ("../../etc/passwd", "passwd"),
        ("C:\\temp\\a.txt", "a.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("שלום.txt", "שלום.txt"),
        ("日本語のファイル.xlsx", "日本語のファイル.xlsx"),
        ("x" * 1000 + ".pdf", "x" * 251 + ".pdf"),
        ("", "file"),
        ("..", "file"),
    ],
)
def test_content_disposition_round_trips(filename, stored):
    value = content_disposition(filename)
    kind, fallback, exact = parse_disposition(value)
    assert kind == "attachment"
    assert exact == stored
    assert fallback.isascii()
    # The RFC 8187 value is plain UTF-8 percent-encoding, which urllib decodes the same way.
    assert unquote(value.split("filename*=UTF-8''", 1)[1], errors="strict") == stored
    # The modern header parser of the email package agrees (it merely notes that filename and filename*
    # decode to the same parameter name, which is the point of RFC 6266 §4.3's fallback).
    message = email.message_from_string(f"Content-Disposition: {value}\n\n", policy=email.policy.default)
    assert message["Content-Disposition"].content_disposition == "attachment"
    assert message["Content-Disposition"].params["filename"] in {fallback, stored}


@given(st.text(max_size=300), st.booleans())
@settings(max_examples=300)
def test_content_disposition_is_always_a_safe_header(filename, inline):
    value = content_disposition(filename, inline=inline)
    # Printable ASCII only: no CR/LF, nothing outside latin-1, no control characters.
    assert re.fullmatch(r"[\x20-\x7e]+", value)
    value.encode("latin-1")
    match = re.fullmatch(
        r"(attachment|inline); filename=\"([^\"\\]*)\"; filename\*=UTF-8''([^\s;,\"]*)", value
    )
    assert match is not None
    assert match.group(1) == ("inline" if inline else "attachment")
    # filename* holds only attr-char and %XX (RFC 8187 §3.2.1).
    assert re.fullmatch(r"(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+", match.group(3))
    assert unquote(match.group(3), errors="strict") == safe_filename(filename)
    assert not re.search(r"%[0-9A-Fa-f]{2}", match.group(2))


# --------------------------------------------------------------------------------------------------------
# Filenames sent with an upload: disposition_filename (the header's octets), upload_filename (every path)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b'attachment; filename="plain.txt"', "plain.txt"),
        (b"attachment; filename=token.txt", "token.txt"),
        (b"attachment; filename=token.txt; size=3", "token.txt"),
        (b'attachment; FileName="case.txt"', "case.txt"),  # parameter names are case-insensitive (RFC 6266)
        # Raw UTF-8 octets, as curl and browsers send them: read as UTF-8, not as ISO-8859-1 ("Ã©").
        ('attachment; filename="café ✓.txt"'.encode(), "café ✓.txt"),
        (b'attachment; filename="a\\"b;c.txt"', 'a"b;c.txt'),  # quoted-pair, and ";" inside quotes
        (b"attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%9C%93.pdf", "résumé ✓.pdf"),
        (b"attachment; filename*=utf-8'en'x.txt", "x.txt"),  # charset case-insensitive, language ignored
        (b"attachment; filename*=ISO-8859-1''caf%E9.txt", "café.txt"),  # RFC 8187 §3.2.1's other charset
        # RFC 6266 §4.3: filename* wins over filename, whichever comes first.
        (b"attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%9C%93.txt", "✓.txt"),
        (b"attachment; filename*=UTF-8''%E2%9C%93.txt; filename=\"fallback.txt\"", "✓.txt"),
        (b'attachment; x="; filename=evil.txt"', None),  # inside another parameter's quoted-string
        (b"attachment", None),
        (b"inline; name=x", None),
    ],
)
def test_disposition_filename(header, expected):
    assert disposition_filename(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        b'attachment; filename="caf\xe9.txt"',  # ISO-8859-1 octets in a plain filename: not UTF-8
        b'attachment; filename="\xc3"',  # truncated UTF-8 sequence
        b"attachment; filename*=UTF-8''caf%E9.txt",  # percent-decoded octets are not UTF-8
        b"attachment; filename*=UTF-8''%C3",
        b"attachment; filename*=KOI8-R''%C1",  # RFC 8187 §3.2.1 requires only UTF-8 and ISO-8859-1
        b"attachment; filename*=UTF-8''two words.txt",  # a space is not attr-char: malformed ext-value
        b"attachment; filename*=UTF-8''%zz.txt",
        b"attachment; filename*=no-quotes.txt",
    ],
)
def test_disposition_filename_refuses_what_does_not_decode(header):
    with pytest.raises(FilenameError):
        disposition_filename(header)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (None, "file"),
        ("", "file"),
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),  # safe_filename's rules, unchanged
        ("café ✓.txt", "café ✓.txt"),
    ],
)
def test_upload_filename(name, expected):
    assert upload_filename(name) == expected


@pytest.mark.parametrize("name", ["caf\ufffd.txt", "\ufffd", "a\ufffdb"])
def test_upload_filename_refuses_a_decoder_replacement_character(name):
    # What Django's multipart parser (RFC 2231 values) and query-string parsing leave for octets they
    # could not decode: such a name is damaged, not a name the uploader chose.
    with pytest.raises(FilenameError):
        upload_filename(name)


# --------------------------------------------------------------------------------------------------------
# PartFilenameCheck: the same rule over a multipart/form-data body as it streams (RFC 7578, RFC 2046)
# --------------------------------------------------------------------------------------------------------


def form(*parts: bytes, boundary: bytes = b"BoUnDaRy") -> bytes:
    body = b"preamble\r\n"
    for part in parts:
        body += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return body + b"--" + boundary + b"--\r\nepilogue"


def part(disposition: bytes, content: bytes = b"content") -> bytes:
    headers = b"Content-Disposition: form-data; " + disposition + b"\r\nContent-Type: text/plain\r\n"
    return headers + b"\r\n" + content


BAD = b'name="file"; filename="caf\xe9.txt"'
GOOD = b'name="file"; filename="caf\xc3\xa9.txt"'


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (form(part(GOOD)), False),
        (form(part(BAD)), True),
        (form(part(b"name=\"file\"; filename*=UTF-8''caf%E9")), True),
        (form(part(b"name=\"file\"; filename*=ISO-8859-1''caf%E9")), False),
        (form(part(b'name="other"; filename="caf\xe9"'), part(GOOD)), False),  # not the upload field
        (form(part(b'name="note"'), part(BAD)), True),  # the second part
        (form(part(GOOD, b"Content-Disposition: form-data; " + BAD + b"\r\n\r\n")), False),  # content
        (form(part(GOOD)) + b"\r\n" + part(BAD), False),  # after the close delimiter: epilogue
        (form(part(b'name="file"')), False),  # no filename: Django's to decide, not a bad name
    ],
    ids=[
        "utf8",
        "latin1",
        "rfc8187-bad",
        "rfc8187-latin1",
        "other-field",
        "second-part",
        "in-content",
        "epilogue",
        "no-filename",
    ],
)
def test_part_filename_check(body, refused):
    # Every split of the body into two reads gives the same answer: delimiters and header ends may
    # straddle reads.
    for cut in range(len(body) + 1):
        check = PartFilenameCheck(b"BoUnDaRy", field="file")
        try:
            check.feed(body[:cut])
            check.feed(body[cut:])
        except FilenameError:
            assert refused, cut
        else:
            assert not refused, cut


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_part_filename_check_any_read_sizes(sizes):
    body = form(part(b'name="note"'), part(GOOD, b"x" * 200), part(BAD))
    check = PartFilenameCheck(b"BoUnDaRy", field="file")
    offset, refused = 0, False
    try:
        while offset < len(body):
            size = sizes[offset % len(sizes)]
            check.feed(body[offset : offset + size])
            offset += size
    except FilenameError:
        refused = True
    assert refused


def test_part_filename_check_keeps_memory_bounded():
    check = PartFilenameCheck(b"BoUnDaRy", field="file", max_header=1024)
    check.feed(form(part(GOOD))[:-30])
    for _ in range(1000):
        check.feed(b"y" * 1000)  # a large file's content: nothing of it is kept
    assert len(check._buffer) < len(b"--BoUnDaRy")
    unending = PartFilenameCheck(b"BoUnDaRy", field="file", max_header=1024)
    unending.feed(b"--BoUnDaRy\r\n" + b"h" * 5000)  # a header without end: Django refuses it, we let go
    unending.feed(b"y" * 100_000)
    assert len(unending._buffer) <= 5002  # stopped watching: nothing more is kept
