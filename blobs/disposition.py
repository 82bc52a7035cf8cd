"""Filenames, media types and Content-Disposition for served blobs (RFC 6266, RFC 8187, RFC 9110 §8.3).

Pure Python, stdlib only. Both the filename and the media type are the uploader's claims: they are
sanitised when stored (``safe_filename``, ``normalize_content_type``) and again when a header is built,
so that no stored value can break a header or make the browser render scriptable content inline.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "INLINE_SAFE_TYPES",
    "OCTET_STREAM",
    "FilenameError",
    "PartFilenameCheck",
    "content_disposition",
    "disposition_filename",
    "disposition_type",
    "is_inline_safe",
    "normalize_content_type",
    "safe_filename",
    "upload_filename",
]

OCTET_STREAM = "application/octet-stream"

#: Media types a browser may render inline (with ``nosniff`` and ``CSP: sandbox`` on the response).
#: Deliberately short: nothing scriptable - no text/html, image/svg+xml, application/xhtml+xml, text/xml,
#: application/xml, text/javascript - and nothing a browser sniffs its way out of.
INLINE_SAFE_TYPES: frozenset[str] = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/webm",
        "audio/mp4",
        "application/pdf",
        "text/plain",
    }
)

# --------------------------------------------------------------------------------------------------------
# Media types (RFC 9110 §8.3.1)
# --------------------------------------------------------------------------------------------------------

# token = 1*tchar (RFC 9110 §5.6.2)
_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_MEDIA_TYPE = re.compile(rf"({_TCHAR}{{1,127}})/({_TCHAR}{{1,127}})", re.ASCII)
# parameters = *( OWS ";" OWS [ parameter ] ); parameter = name "=" ( token / quoted-string )
_PARAMETER = re.compile(
    rf'[ \t]*;[ \t]*(?:({_TCHAR}+)=({_TCHAR}+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*"))?',
    re.ASCII,
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# mime-charset chars (RFC 2978 §2.3), at most 40 of them.
_CHARSET = re.compile(r"[!#$%&'+\-^_`{}~0-9A-Za-z]{1,40}", re.ASCII)


def _charset(parameters: str) -> str | None:
    pos = 0
    charset = None
    while pos < len(parameters):
        match = _PARAMETER.match(parameters, pos)
        if match is None or match.end() == pos:
            break  # malformed: drop the rest
        pos = match.end()
        name, value = match.group(1), match.group(2)
        if name is None or name.lower() != "charset":
            continue
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if not _CHARSET.fullmatch(value):
            return None
        value = value.lower()
        # UTF-7 is a historical XSS vector (IE sniffed "+ADw-script+AD4-"); never advertise it.
        if "utf7" in re.sub(r"[^a-z0-9]", "", value):
            return None
        charset = value
    return charset


def normalize_content_type(value: str | None) -> str:
    """Validate an uploader-claimed media type; return it normalised, or ``application/octet-stream``.

    ``type/subtype`` must be two tokens (RFC 9110 §8.3.1, each at most 127 characters, RFC 6838 §4.2);
    they are lowercased. Parameters are dropped, except a valid ``charset`` on ``text/*``
    (``text/plain; charset=utf-8``). A value holding control characters (CR/LF: header injection) is
    refused whole. Wildcards (``*/*``, ``image/*``) and ``multipart/*`` (a stored blob
    is never a multipart body we frame; ``multipart/x-mixed-replace`` has a history of abuse) are refused.
    """
    if not value or _CONTROL.search(value):  # CR/LF and friends: a header-injection attempt, not a type
        return OCTET_STREAM
    value = value.strip(" \t")
    semicolon = value.find(";")
    media_type, parameters = (value, "") if semicolon < 0 else (value[:semicolon], value[semicolon:])
    match = _MEDIA_TYPE.fullmatch(media_type.rstrip(" \t"))
    if match is None:
        return OCTET_STREAM
    main, sub = match.group(1).lower(), match.group(2).lower()
    if main == "*" or sub == "*" or main == "multipart":
        return OCTET_STREAM
    normalised = f"{main}/{sub}"
    if main == "text":
        charset = _charset(parameters)
        if charset is not None:
            normalised += f"; charset={charset}"
    return normalised


def is_inline_safe(content_type: str | None) -> bool:
    """Whether a blob of this (claimed) media type may be served ``inline`` rather than ``attachment``."""
    media_type = normalize_content_type(content_type).partition(";")[0]
    return media_type in INLINE_SAFE_TYPES


def disposition_type(content_type: str) -> bool:
    """True if ``inline`` is allowed for ``content_type`` (the API's name for ``is_inline_safe``)."""
    return is_inline_safe(content_type)


# --------------------------------------------------------------------------------------------------------
# Filenames
# --------------------------------------------------------------------------------------------------------

# Bidirectional formatting characters: they make "evil\u202egpj.exe" display as "evilexe.jpg".
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# C0/C1/DEL (Cc), lone surrogates (Cs: not encodable), line and paragraph separators (Zl, Zp).
_REMOVED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
_TRAILING = re.compile(r"[\s.]+$")
_MAX_EXTENSION = 16  # ".pdf", ".tar.gz"'s ".gz", ".numbers" - not "a very long sentence after a dot"


def _strip_edges(name: str) -> str:
    return _EDGES.sub("", name)


def safe_filename(name: str | None, *, max_length: int = 255) -> str:
    """The filename to store and later offer in Content-Disposition.

    Control characters (C0, C1, DEL), lone surrogates, Unicode line/paragraph separators and bidi
    controls are removed; the result is NFC; only the part after the last ``/`` or ``\\`` is kept
    (no path ever leaves the client); leading/trailing whitespace and dots are stripped (no hidden files,
    no Windows-invalid trailing dots); an empty result is ``"file"`` (cut to ``max_length``). Longer than
    ``max_length`` characters, the stem is shortened and a short extension (up to 16 characters) kept.
    """
    if max_length < 1:
        raise ValueError("max_length must be >= 1")
    fallback = "file"[:max_length]
    if not name:
        return fallback
    name = "".join(
        char
        for char in name
        if char not in _BIDI_CONTROLS and unicodedata.category(char) not in _REMOVED_CATEGORIES
    )
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _strip_edges(name)
    if not name:  # also "." and "..", which stripping dots empties
        return fallback
    if len(name) <= max_length:
        return name

    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if stem and 2 <= len(suffix) <= _MAX_EXTENSION and len(suffix) < max_length and extension.strip():
        # The stem starts with a character that is neither whitespace nor a dot, so it stays non-empty.
        return _TRAILING.sub("", stem[: max_length - len(suffix)]) + suffix
    return _TRAILING.sub("", name[:max_length])


# --------------------------------------------------------------------------------------------------------
# Content-Disposition (RFC 6266, RFC 8187)
# --------------------------------------------------------------------------------------------------------

# RFC 8187 §3.2.1 attr-char, minus ALPHA / DIGIT and "-._~" which quote() never escapes.
_ATTR_CHAR_EXTRA = "!#$&+^`|"


def _ascii_fallback(name: str) -> str:
    # The quoted-string filename parameter for user agents without RFC 8187 support: printable ASCII only.
    # '"' and '\' would need quoted-pair escaping that some parsers mishandle, and "%" followed by hex is
    # decoded by some user agents (RFC 6266 §4.3), so all three become "_" like any non-ASCII character.
    return "".join(char if " " <= char <= "~" and char not in '"\\%' else "_" for char in name)


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """A Content-Disposition value: ``attachment; filename="fallback"; filename*=UTF-8''encoded``.

    The filename is passed through ``safe_filename`` first. ``filename`` carries an ASCII fallback,
    ``filename*`` (RFC 8187) the exact name, UTF-8 and percent-encoded outside attr-char; recipients that
    understand both prefer ``filename*`` (RFC 6266 §4.3). The value is always printable ASCII: never
    CR/LF, never a raw quote, backslash or control character.
    """
    name = safe_filename(filename)
    kind = "inline" if inline else "attachment"
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8", errors="strict")
    return f"{kind}; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{encoded}"


# --------------------------------------------------------------------------------------------------------
# Filenames sent with an upload (RFC 6266 §4.3, RFC 8187 §3.2, RFC 7578 §4.2)
# --------------------------------------------------------------------------------------------------------


class FilenameError(ValueError):
    """A filename the client sent cannot be read as text. Refused, never guessed at: storing a repaired
    name (mojibake, U+FFFD, or "file") would keep a name the uploader never gave."""


# What a decoder leaves for bytes it could not read: Django's multipart parser decodes RFC 2231/8187 values
# with errors="replace", and so does its query-string parsing, so a name holding it was damaged on the way.
REPLACEMENT_CHARACTER = "\ufffd"
# RFC 8187 §3.2.1: recipients must support UTF-8 and ISO-8859-1; other charsets are not ours to guess.
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "iso-8859-1"}
# ext-value = charset "'" [ language ] "'" value-chars; value-chars = *( pct-encoded / attr-char )
_EXT_VALUE = re.compile(
    r"([!#$%&+\-^_`{}~0-9A-Za-z]+)"  # charset: mime-charset chars (RFC 2978 §2.3)
    r"'[0-9A-Za-z-]*'"  # language: ignored
    r"((?:%[0-9A-Fa-f]{2}|[!#$&+\-.^_`|~0-9A-Za-z])*)"  # value-chars
)
# One disposition parameter (RFC 6266 §4.1): name "=" ( token / quoted-string / ext-value ). Matched over the
# header's octets read as ISO-8859-1 (one character per octet), so that nothing is decoded before we know
# which parameter a byte belongs to.
_PARAMETER_RE = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL)


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FilenameError("the filename is not UTF-8") from None


def _ext_value(value: str) -> str:
    # RFC 8187 §3.2: the octets after percent-decoding are text in the declared charset.
    match = _EXT_VALUE.fullmatch(value.strip())
    if match is None:
        raise FilenameError("filename* is not an RFC 8187 ext-value")
    charset = _EXT_CHARSETS.get(match.group(1).lower())
    if charset is None:
        raise FilenameError(f"filename* charset {match.group(1)!r} is neither UTF-8 nor ISO-8859-1")
    octets = unquote_to_bytes(match.group(2))
    if charset == "utf-8":
        return _decode_utf8(octets)
    return octets.decode("iso-8859-1")


def _parameters(value: bytes) -> dict[str, str]:
    # Names lowercased (RFC 6266 §4.1: case-insensitive), quoted-strings unquoted (RFC 9110 §5.6.4), values
    # still one character per octet: nothing is decoded yet. The first of a repeated name wins.
    found: dict[str, str] = {}
    for match in _PARAMETER_RE.finditer(value.decode("iso-8859-1")):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)
        found.setdefault(match.group(1).lower(), raw)
    return found


def disposition_filename(value: bytes) -> str | None:
    """The filename in a ``Content-Disposition`` header (a raw body's, or a multipart part's), given as the
    octets that were sent.

    ``filename*`` (RFC 8187 ext-value, UTF-8 or ISO-8859-1) wins over ``filename`` (RFC 6266 §4.3). A
    ``filename`` token or quoted-string carrying non-ASCII octets is read as UTF-8, which is what clients
    send when they send raw bytes (RFC 7578 §4.2 for form data, curl, browsers). Octets that do not decode,
    an unknown charset or a malformed ext-value raise ``FilenameError``. No filename parameter: ``None``.
    """
    found = _parameters(value)
    if "filename*" in found:
        return _ext_value(found["filename*"])
    if "filename" not in found:
        return None
    return _decode_utf8(found["filename"].encode("iso-8859-1"))


class PartFilenameCheck:
    """Applies ``disposition_filename`` to the part headers of a ``multipart/form-data`` body (RFC 7578) as
    the body streams past, for the parts named ``field``: ``feed`` raises ``FilenameError`` at the first
    whose filename does not decode.

    Needed because Django's multipart parser reads each part header line as UTF-8 and silently drops a line
    that is not, so a part whose filename is raw ISO-8859-1 would reach no upload handler at all ("no file")
    instead of being refused by the rule raw bodies follow. Parts are split where Django splits them: at
    ``--boundary`` wherever it occurs; a part's headers end at the first CRLF CRLF. Memory: at most one
    part header (``max_header`` octets; a longer one is Django's to refuse) plus a delimiter's length.
    """

    def __init__(self, boundary: bytes, *, field: str, max_header: int = 64 * 1024) -> None:
        if not boundary:
            raise ValueError("a multipart body needs a boundary (RFC 2046 §5.1.1)")
        self._delimiter = b"--" + boundary
        self._field = field
        self._max_header = max_header
        self._buffer = b""
        self._in_header = False
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done or not data:
            return
        self._buffer += data
        while not self._done:
            if not self._in_header:
                found = self._buffer.find(self._delimiter)
                if found < 0:
                    # Keep what may be the start of a delimiter split across two reads.
                    keep = len(self._delimiter) - 1
                    self._buffer = self._buffer[-keep:] if len(self._buffer) > keep else self._buffer
                    return
                self._buffer = self._buffer[found + len(self._delimiter) :]
                self._in_header = True
            if len(self._buffer) < 2:
                return
            if self._buffer.startswith(b"--"):  # the close delimiter: the rest is epilogue
                self._done = True
                return
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                self._done = len(self._buffer) > self._max_header
                return
            block, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._in_header = False
            self._check(block)

    def _check(self, block: bytes) -> None:
        for line in block.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or name.strip().lower() != b"content-disposition":
                continue
            if _parameters(value).get("name") == self._field:
                disposition_filename(value)


def upload_filename(name: str | None) -> str:
    """The name to store for an uploaded file: one rule for every upload path (the raw body's
    ``?filename=`` or ``Content-Disposition``, a multipart part's ``filename``), applied once the name is
    text (``disposition_filename`` for raw header octets).

    A name holding U+FFFD raises ``FilenameError``: it is the mark of octets a decoder could not read.
    Otherwise the name is ``safe_filename``'s (no name at all: ``"file"``).
    """
    if name is not None and REPLACEMENT_CHARACTER in name:
        raise FilenameError("the filename holds octets that could not be decoded")
    return safe_filename(name)
