"""The blob format: Tink Streaming AEAD, key type AES-GCM-HKDF-Streaming (architecture.md §3).

Every stored object is byte for byte what Tink's ``AesGcmHkdfStreaming`` produces with
``firstSegmentOffset = 0``, so any Tink implementation can decrypt it given the data key::

    object = header || C_0 || ... || C_{n-1}
    header = byte(header_len) || salt(key_size) || nonce_prefix(7)      header_len = 1 + key_size + 7
    DK     = HKDF(hash, ikm=DEK, salt=salt, info=associated_data, length=key_size)
    C_i    = AES-GCM(DK, iv_i, M_i, aad=b"")                            (ciphertext || 16-byte tag)
    iv_i   = nonce_prefix || uint32_be(i) || (0x01 if last else 0x00)

Segment ``i`` of the ciphertext is ``segment_size`` bytes long except the first, which is shorter by the
header so that header + C_0 fill exactly one segment, and the last, which may be short. Only the last segment
may be empty, and only when the whole plaintext is (tink/streaming_aead, "AES-GCM-HKDF-Streaming" in
https://developers.google.com/tink/streaming-aead/aes_gcm_hkdf_streaming).

This module is pure: it imports nothing from Django and holds no key beyond the lifetime of an
:class:`Encryptor` or :class:`Decryptor`. Keys are never logged or repr'd.

Our decoder is strict where Tink's Python one is lenient (architecture §3): a wrong header byte, any bad tag,
a missing last-flag segment, trailing bytes, or an object whose length disagrees with the plaintext size
recorded in the database all raise :class:`IntegrityError`, and no plaintext of a segment is released before
that segment's tag has been verified.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEFAULT_PARAMS",
    "Decryptor",
    "Encryptor",
    "FormatError",
    "IntegrityError",
    "ParameterError",
    "StreamParams",
    "decrypt",
    "encrypt",
]

#: Length of the per-object nonce prefix (Tink ``NONCE_PREFIX_IN_BYTES``).
NONCE_PREFIX_SIZE = 7
#: AES-GCM tag appended to every segment (Tink ``TAG_SIZE_IN_BYTES``).
TAG_SIZE = 16
#: The segment counter in the IV is a uint32, so an object has at most 2**32 segments.
MAX_SEGMENTS = 1 << 32
#: The spec bounds CiphertextSegmentSize to {1, ..., 2**31 - 1} (Tink-Java holds it in an ``int``).
MAX_SEGMENT_SIZE = (1 << 31) - 1
#: The spec requires len(KeyValue) >= DerivedKeySize; Tink-Java's subtle class also demands >= 16.
MIN_IKM_SIZE = 16

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}
_KEY_SIZES = (16, 32)
# uint32_be(segment index) || last-segment flag, written after the nonce prefix.
_IV_SUFFIX = struct.Struct(">IB")


class FormatError(Exception):
    """Root of every error raised by the blob format."""


class IntegrityError(FormatError):
    """The object is not an authentic encryption under this key and associated data.

    Raised for a tag failure, a wrong header byte or length, truncation, trailing bytes, a missing
    last segment, or a length that disagrees with the recorded plaintext size. Deliberately carries no
    detail that would help an attacker tell a wrong key from a tampered segment.
    """


class ParameterError(FormatError, ValueError):
    """Invalid parameters: segment size too small, bad key length, offsets or sizes out of range."""


def _check_int(name: str, value: object, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class StreamParams:
    """Parameters of one AES-GCM-HKDF-Streaming key (Tink ``AesGcmHkdfStreamingParams``).

    ``segment_size`` is Tink's ``ciphertext_segment_size``; ``key_size`` its ``derived_key_size``;
    ``hkdf_hash`` its ``hkdf_hash_type``. The defaults are Tink's ``AES256_GCM_HKDF_1MB`` template.
    Validation follows the spec ("Key and parameters") and Tink's ``AesGcmHkdfStreaming`` (Java, C++):
    derived key of 16 or 32 bytes, HKDF over SHA1/SHA256/SHA512, ``segment_size <= 2**31 - 1`` and
    ``segment_size > key_size + 24 = header_size + 16``, so the first segment carries at least one byte
    of plaintext. Tink rejects any other key.
    """

    segment_size: int = 1 << 20
    key_size: int = 32
    hkdf_hash: str = "sha256"

    def __post_init__(self) -> None:
        _check_int("key_size", self.key_size)
        if self.key_size not in _KEY_SIZES:
            raise ParameterError(f"key_size must be 16 or 32, got {self.key_size}")
        if self.hkdf_hash not in _HASHES:
            raise ParameterError(f"hkdf_hash must be one of {sorted(_HASHES)}, got {self.hkdf_hash!r}")
        _check_int("segment_size", self.segment_size)
        if self.segment_size <= self.header_size + TAG_SIZE:
            raise ParameterError(
                f"segment_size must be > header_size + {TAG_SIZE} = {self.header_size + TAG_SIZE} "
                f"(Tink: 'ciphertext_segment_size too small'), got {self.segment_size}"
            )
        if self.segment_size > MAX_SEGMENT_SIZE:
            raise ParameterError(f"segment_size must be <= {MAX_SEGMENT_SIZE}, got {self.segment_size}")

    @property
    def header_size(self) -> int:
        """``1 + key_size + 7``: the length byte, the salt and the nonce prefix."""
        return 1 + self.key_size + NONCE_PREFIX_SIZE

    @property
    def first_segment_plaintext(self) -> int:
        """Plaintext bytes in segment 0, which shares the first ``segment_size`` bytes with the header."""
        return self.segment_size - TAG_SIZE - self.header_size

    @property
    def segment_plaintext(self) -> int:
        """Plaintext bytes in every full segment after the first."""
        return self.segment_size - TAG_SIZE

    @property
    def max_plaintext_size(self) -> int:
        """The largest plaintext whose segment indexes fit the IV's uint32 counter."""
        return self.first_segment_plaintext + (MAX_SEGMENTS - 1) * self.segment_plaintext

    def segment_count(self, plaintext_size: int) -> int:
        """Number of segments for ``plaintext_size`` bytes (1 for the empty plaintext)."""
        _check_int("plaintext_size", plaintext_size)
        if plaintext_size > self.max_plaintext_size:
            raise ParameterError(f"plaintext_size exceeds the format's maximum {self.max_plaintext_size}")
        first = self.first_segment_plaintext
        if plaintext_size <= first:
            return 1
        return 1 + -(-(plaintext_size - first) // self.segment_plaintext)

    def ciphertext_size(self, plaintext_size: int) -> int:
        """Total object size, header included (Tink ``expectedCiphertextSize``)."""
        return self.header_size + plaintext_size + TAG_SIZE * self.segment_count(plaintext_size)

    def plaintext_size(self, ciphertext_size: int) -> int:
        """Inverse of :meth:`ciphertext_size`.

        Raises :class:`IntegrityError` when no plaintext size encrypts to ``ciphertext_size`` (too short for
        header and one tag, or a last segment that would be empty or shorter than its tag).
        """
        _check_int("ciphertext_size", ciphertext_size)
        body = ciphertext_size - self.header_size
        first_ct = self.segment_size - self.header_size
        if body < TAG_SIZE:
            raise IntegrityError("object too short for its header and one segment")
        if body <= first_ct:
            return body - TAG_SIZE
        full, rest = divmod(body - first_ct, self.segment_size)
        if rest == 0:
            size = self.first_segment_plaintext + full * self.segment_plaintext
        elif rest > TAG_SIZE:
            size = self.first_segment_plaintext + full * self.segment_plaintext + rest - TAG_SIZE
        else:
            raise IntegrityError("object length does not match any plaintext length")
        if size > self.max_plaintext_size:
            raise IntegrityError("object has more segments than the format allows")
        return size

    def locate(self, offset: int) -> tuple[int, int]:
        """Map a plaintext offset to ``(segment index, offset within that segment's plaintext)`` in O(1)."""
        _check_int("offset", offset)
        first = self.first_segment_plaintext
        if offset < first:
            return 0, offset
        # Segment i >= 1 starts at plaintext offset first + (i-1)*ps = i*ps - header_size.
        index, within = divmod(offset + self.header_size, self.segment_plaintext)
        if index >= MAX_SEGMENTS:
            raise ParameterError("offset is beyond the format's maximum size")
        return index, within

    def segment_end(self, offset: int) -> int:
        """Where the segment holding plaintext offset ``offset`` ends (exclusive; not clamped to a size)."""
        index, _ = self.locate(offset)
        # Segment 0 holds [0, first); segment i >= 1 holds [i*ps - header_size, (i+1)*ps - header_size).
        return self.first_segment_plaintext + index * self.segment_plaintext

    def segment_span(self, index: int, plaintext_size: int) -> tuple[int, int]:
        """``(ciphertext offset, ciphertext length)`` of segment ``index`` of a ``plaintext_size`` object."""
        count = self.segment_count(plaintext_size)
        _check_int("index", index)
        if index >= count:
            raise ParameterError(f"segment index {index} out of range for {count} segments")
        return self._segment_span(index, count, self.ciphertext_size(plaintext_size))

    def _segment_span(self, index: int, count: int, ciphertext_size: int) -> tuple[int, int]:
        # Header + C_0 fill exactly one segment, so C_i (i >= 1) starts at i * segment_size.
        start = self.header_size if index == 0 else index * self.segment_size
        end = ciphertext_size if index == count - 1 else (index + 1) * self.segment_size
        return start, end - start


DEFAULT_PARAMS = StreamParams()


def _derive(ikm: bytes, associated_data: bytes, salt: bytes, params: StreamParams) -> AESGCM:
    """Derive the per-object key, HKDF(ikm, salt, info=associated_data) as in Tink's ``deriveKeySpec``."""
    if not isinstance(ikm, bytes | bytearray | memoryview):
        raise ParameterError("ikm must be bytes")
    if len(ikm) < max(MIN_IKM_SIZE, params.key_size):
        raise ParameterError(f"ikm must be at least {max(MIN_IKM_SIZE, params.key_size)} bytes")
    if not isinstance(associated_data, bytes | bytearray | memoryview):
        raise ParameterError("associated_data must be bytes")
    hkdf = HKDF(
        algorithm=_HASHES[params.hkdf_hash](),
        length=params.key_size,
        salt=bytes(salt),
        info=bytes(associated_data),
    )
    return AESGCM(hkdf.derive(bytes(ikm)))


def _as_bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _read_exact(raw: BinaryIO, view: memoryview) -> None:
    """Fill ``view`` from ``raw`` (``readinto`` when available); a short read is truncation.

    The ciphertext is always copied into our own buffer first, never decrypted from a shared ``mmap`` of
    the object: GCM implementations may read their input twice (OpenSSL's generic path hashes a chunk, then
    runs CTR over it), so a writer racing a mapped decryption could have plaintext released under a tag
    computed over other bytes (docs/benchmarks.md, "What was tried").
    """
    readinto = getattr(raw, "readinto", None)
    want = len(view)
    got = 0
    while got < want:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = raw.read(want - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            raise IntegrityError("object is truncated")
        got += n


#: Idle bytes each of the two free lists below may keep per process: four default segments (each ciphertext
#: buffer has a page of slack; with 4 KiB pages, three with larger ones). Not per download (architecture.md
#: §12, "Memory per download"); a buffer larger than this is never kept.
POOL_IDLE_BYTES = (4 << 20) + (64 << 10)
_PAGE = mmap.PAGESIZE

_Buffer = bytearray | mmap.mmap


class _BufferPool:
    """A bounded free list of decryption buffers, shared by the process's threads and greenlets.

    A new ``bytearray`` of a segment is zero-filled, and a block of a megabyte often comes from the kernel and
    goes back to it (page faults included): a 1-byte range paid for two, a ciphertext buffer and a plaintext
    scratch, on top of the one decryption it needs (docs/benchmarks.md, "Reused decryption buffers"). Buffers
    are kept by size, at most ``limit`` idle bytes in all; whoever takes one gives it back exactly once (a
    generator in its ``finally``, so on exhaustion, close and error alike). The lock is never held across a
    yield or any I/O.
    """

    __slots__ = ("_free", "_idle", "_limit", "_lock", "_new")

    def __init__(self, limit: int, new: Callable[[int], _Buffer] = bytearray) -> None:
        self._free: dict[int, list[_Buffer]] = {}
        self._idle = 0
        self._limit = limit
        self._lock = threading.Lock()
        self._new = new

    @property
    def idle_bytes(self) -> int:
        return self._idle

    def take(self, size: int, need: int) -> _Buffer:
        """An idle buffer of ``size`` bytes, or else a new one: of ``size`` bytes if ``need`` is more than
        half of it (segment 0 and short last segments still fill the list), else a ``bytearray`` of just
        ``need``, so that with none idle (many reads in flight) a small object does not cost a segment."""
        with self._lock:
            free = self._free.get(size)
            if free:
                self._idle -= size
                buf = free.pop()
                if not free:
                    del self._free[size]
                return buf
        return self._new(size) if 2 * need > size else bytearray(need)

    def give(self, buf: _Buffer, size: int) -> None:
        """Keep ``buf`` for a later :meth:`take` of ``size`` if it is that long and fits, else drop it. The
        next taker can read whatever it holds: plaintext must be wiped first."""
        if len(buf) != size:
            return
        with self._lock:
            if self._idle + size <= self._limit:
                self._free.setdefault(size, []).append(buf)
                self._idle += size

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._idle = 0

    def _after_fork(self) -> None:
        # A forked child (a gunicorn worker) starts empty and with a lock no thread of the parent holds.
        self._free = {}
        self._idle = 0
        self._lock = threading.Lock()


def _page_aligned(size: int) -> mmap.mmap:
    """Anonymous private memory, which starts on a page (see ``Decryptor._iter`` for why). Nothing like the
    rejected mapping of the object itself (docs/benchmarks.md, "What was tried"): no file is behind it, and
    no other process or writer can change it while AES-GCM reads it."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


# Ciphertext is not secret: its buffers go back as they are. Plaintext scratch goes back wiped.
_CIPHERTEXT_BUFFERS = _BufferPool(POOL_IDLE_BYTES, _page_aligned)
_PLAINTEXT_BUFFERS = _BufferPool(POOL_IDLE_BYTES)
os.register_at_fork(after_in_child=_CIPHERTEXT_BUFFERS._after_fork)
os.register_at_fork(after_in_child=_PLAINTEXT_BUFFERS._after_fork)
# Source of the wipes, grown to the largest scratch wiped (at most POOL_IDLE_BYTES): copying from it costs
# about half as much as a new bytes(n) of a segment, which is fresh pages each time.
_zeros = b""


def _wipe(view: memoryview) -> None:
    global _zeros
    n = len(view)
    zeros = _zeros  # one read: another thread may swap in a block of another size meanwhile
    if n > len(zeros):
        if n > POOL_IDLE_BYTES:
            view[:] = bytes(n)
            return
        zeros = _zeros = bytes(n)
    view[:] = memoryview(zeros)[:n]


class Encryptor:
    """Incremental encryption of one object.

    Memory is O(segment size) whatever the input size: a full segment is held back until more data
    (or :meth:`finalize`) shows whether it is the last one, because the last segment's IV differs.
    Not thread-safe. Salt and nonce prefix are always fresh random bytes: callers cannot choose them, since
    reusing them with the same key and associated data reuses GCM nonces.
    """

    __slots__ = (
        "_aead",
        "_finalized",
        "_header",
        "_header_sent",
        "_index",
        "_iv",
        "_params",
        "_pending",
        "_pending_len",
        "ciphertext_size",
        "plaintext_size",
    )

    def __init__(
        self,
        ikm: bytes,
        associated_data: bytes,
        params: StreamParams = DEFAULT_PARAMS,
    ) -> None:
        salt, nonce_prefix = self._salt_and_nonce_prefix(params)
        if len(salt) != params.key_size:
            raise ParameterError(f"salt must be {params.key_size} bytes")
        if len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise ParameterError(f"nonce_prefix must be {NONCE_PREFIX_SIZE} bytes")
        self._params = params
        self._aead = _derive(ikm, associated_data, salt, params)
        self._header = bytes((params.header_size,)) + bytes(salt) + bytes(nonce_prefix)
        self._header_sent = False
        self._iv = bytearray(bytes(nonce_prefix) + bytes(5))
        self._index = 0
        self._pending = bytearray(params.segment_plaintext)
        self._pending_len = 0
        self._finalized = False
        #: Plaintext bytes consumed so far.
        self.plaintext_size = 0
        #: Ciphertext bytes returned so far (header included).
        self.ciphertext_size = 0

    def _salt_and_nonce_prefix(self, params: StreamParams) -> tuple[bytes, bytes]:
        # The only source of both. The known-answer tests pin them by overriding this in a test-only
        # subclass (blobs/tests/test_crypto.py); production code has no way to pass them in.
        return os.urandom(params.key_size), os.urandom(NONCE_PREFIX_SIZE)

    @property
    def header(self) -> bytes:
        """The object's header; also the first bytes of the first non-empty output."""
        return self._header

    @property
    def params(self) -> StreamParams:
        return self._params

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume ``data``; return the ciphertext that is ready (possibly ``b""``)."""
        return self._seal(_as_bytes_view(data), final=False)

    def finalize(self) -> bytes:
        """Return the rest of the object: the last segment, preceded by the header if not yet output."""
        return self._seal(memoryview(b""), final=True)

    def seal_all(self, data: bytes | bytearray | memoryview) -> bytes:
        """``update(data) + finalize()`` in one call: the whole object when nothing was consumed before."""
        return self._seal(_as_bytes_view(data), final=True)

    def _seal(self, data: memoryview, *, final: bool) -> bytes:
        if self._finalized:
            raise FormatError("Encryptor already finalized")
        params = self._params
        ps = params.segment_plaintext
        cap = params.first_segment_plaintext if self._index == 0 else ps
        pending = self._pending
        held = self._pending_len
        n = len(data)
        avail = held + n
        if not final and avail <= cap:
            # Not enough to know the current segment is not the last one: hold it back.
            pending[held:avail] = data
            self._pending_len = avail
            self.plaintext_size += n
            return b""

        # Full segments that are certainly not last: all but the one holding the final byte(s).
        full = 0 if avail <= cap else 1 + (avail - cap - 1) // ps
        in_full = 0 if full == 0 else cap + (full - 1) * ps
        tail = avail - in_full  # 1..ps if not final; 0..ps if final (0 only for the empty plaintext)
        last_index = self._index + full - (0 if final else 1)
        if last_index >= MAX_SEGMENTS:
            raise ParameterError("plaintext exceeds the format's maximum size for this segment size")
        self._finalized = final
        self.plaintext_size += n

        out_len = (0 if self._header_sent else params.header_size) + in_full + TAG_SIZE * full
        if final:
            out_len += tail + TAG_SIZE
        self.ciphertext_size += out_len
        aead = self._aead
        iv = self._iv
        pview = memoryview(pending)
        used = 0  # bytes of `data` consumed

        def next_source(seg_cap: int, *, last: bool) -> memoryview:
            # Plaintext of the next segment: straight from `data` unless bytes are held back, in which
            # case the segment is completed in the pending buffer.
            nonlocal held, used
            if held:
                size = tail if last else seg_cap
                take = size - held
                pending[held:size] = data[used : used + take]
                used += take
                held = 0
                return pview[:size]
            size = n - used if last else seg_cap
            used += size
            return data[used - size : used]

        if self._header_sent and full + final == 1:
            # The common streaming case, one segment out and no header: encrypt() allocates the result
            # once, which beats encrypt_into plus a copy to bytes.
            src = next_source(cap, last=final)
            _IV_SUFFIX.pack_into(iv, NONCE_PREFIX_SIZE, self._index, final)
            self._index += 1
            ct = aead.encrypt(iv, src, None)
        else:
            out = bytearray(out_len)
            oview = memoryview(out)
            pos = 0
            if not self._header_sent:
                out[: params.header_size] = self._header
                pos = params.header_size
                self._header_sent = True
            seg_cap = cap
            for i in range(full + final):
                last = i == full
                src = next_source(seg_cap, last=last)
                end = pos + len(src) + TAG_SIZE
                _IV_SUFFIX.pack_into(iv, NONCE_PREFIX_SIZE, self._index, last)
                self._index += 1
                aead.encrypt_into(iv, src, None, oview[pos:end])
                pos = end
                seg_cap = ps
            ct = bytes(out)
        if final:
            # The plaintext buffer can no longer be needed.
            self._pending = bytearray()
            self._pending_len = 0
        else:
            rest = n - used
            pending[:rest] = data[used:]
            self._pending_len = rest
        return ct


def encrypt(
    ikm: bytes,
    associated_data: bytes,
    plaintext: bytes,
    params: StreamParams = DEFAULT_PARAMS,
) -> bytes:
    """Encrypt a whole plaintext in one go, under a fresh random salt and nonce prefix."""
    return Encryptor(ikm, associated_data, params).seal_all(plaintext)


class Decryptor:
    """Random access over one object whose plaintext size is known (from the DB).

    The key is derived once; every segment is authenticated before any of its plaintext is returned.
    The plaintext size fixes the segment count and so which segment must carry the last-segment flag:
    an object whose length disagrees with it fails authentication. Generators from :meth:`iter_range`
    and :meth:`iter_all` each use their own buffers, so several may be in flight on one Decryptor.
    """

    __slots__ = ("_aead", "_iv", "_params", "ciphertext_size", "plaintext_size", "segment_count")

    def __init__(
        self,
        ikm: bytes,
        associated_data: bytes,
        header: bytes,
        *,
        plaintext_size: int,
        params: StreamParams = DEFAULT_PARAMS,
    ) -> None:
        hsize = params.header_size
        if len(header) != hsize or header[0] != hsize:
            # Tink: "Invalid header length" / "Invalid ciphertext" (misaligned or not ours).
            raise IntegrityError("invalid object header")
        self._params = params
        #: Plaintext size the object must decrypt to.
        self.plaintext_size = _check_int("plaintext_size", plaintext_size)
        #: Number of segments, including the (possibly empty) last one.
        self.segment_count = params.segment_count(plaintext_size)
        #: Expected total object size, header included.
        self.ciphertext_size = params.ciphertext_size(plaintext_size)
        self._aead = _derive(ikm, associated_data, header[1 : 1 + params.key_size], params)
        self._iv = bytes(header[1 + params.key_size : hsize])

    @property
    def params(self) -> StreamParams:
        return self._params

    def _nonce(self, index: int) -> bytes:
        return self._iv + _IV_SUFFIX.pack(index, index == self.segment_count - 1)

    def _seg(self, index: int) -> tuple[int, int]:
        return self._params._segment_span(index, self.segment_count, self.ciphertext_size)

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """``(ciphertext offset, ciphertext length)`` of the segments covering plaintext ``[start, stop)``.

        ``0 <= start <= stop <= plaintext_size``. An empty range (``start == stop``) has length 0, at the
        start of the segment holding ``start`` (at the end of the object if ``start == plaintext_size``).
        """
        _check_int("start", start)
        _check_int("stop", stop)
        if not start <= stop <= self.plaintext_size:
            raise ParameterError(f"range [{start}, {stop}) is not within [0, {self.plaintext_size}]")
        if start == stop:
            if start == self.plaintext_size:
                return self.ciphertext_size, 0
            return self._seg(self._params.locate(start)[0])[0], 0
        first = self._params.locate(start)[0]
        last = self._params.locate(stop - 1)[0]
        offset = self._seg(first)[0]
        end_off, end_len = self._seg(last)
        return offset, end_off + end_len - offset

    def decrypt_segment(self, index: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """Authenticate and decrypt one whole segment (its position decides the last-segment flag)."""
        _check_int("index", index)
        if index >= self.segment_count:
            raise ParameterError(f"segment index {index} out of range for {self.segment_count} segments")
        if len(ciphertext) != self._seg(index)[1]:
            raise IntegrityError("segment has the wrong length")
        try:
            return self._aead.decrypt(self._nonce(index), ciphertext, None)
        except InvalidTag:
            raise IntegrityError("segment failed authentication") from None

    def iter_range(self, raw: BinaryIO, start: int, stop: int) -> Iterator[bytes]:
        """Yield plaintext chunks covering exactly ``[start, stop)``.

        ``raw`` must be positioned at ``span(start, stop)[0]``; exactly ``span(start, stop)[1]`` bytes are
        read from it. A short read raises :class:`IntegrityError`.
        """
        self.span(start, stop)  # validates the range before the generator starts
        return self._iter(raw, start, stop, check_eof=False)

    def iter_all(self, raw: BinaryIO) -> Iterator[bytes]:
        """Yield the whole plaintext; ``raw`` is positioned just after the header.

        Authenticates every segment (including the empty last one of an empty object) and, before the
        final chunk is released, that ``raw`` is at EOF: trailing bytes raise :class:`IntegrityError`.
        """
        return self._iter(raw, 0, self.plaintext_size, check_eof=True)

    def _iter(self, raw: BinaryIO, start: int, stop: int, *, check_eof: bool) -> Iterator[bytes]:
        if start == stop and not check_eof:
            return
        locate = self._params.locate
        first, skip = locate(start)
        if stop > start:
            last, end = locate(stop - 1)
            end += 1
        else:  # the empty object: one empty last segment
            last, end = 0, 0
        capacity = self._params.segment_size + _PAGE
        ct_buf = _CIPHERTEXT_BUFFERS.take(
            capacity, self._seg(first)[1] + _PAGE if first == last else capacity
        )
        try:
            ct_view = memoryview(ct_buf)
            aead = self._aead
            for index in range(first, last + 1):
                seg_offset, seg_len = self._seg(index)
                # The segment goes at its own offset within a page of a page-aligned buffer. The kernel's
                # copy from the page cache ran over 10x slower when its destination was a few bytes past its
                # source's offset within a page (4K aliasing), which is where a fresh megabyte from malloc (16
                # bytes into a page) met a segment read from a page boundary (docs/benchmarks.md, "Reused
                # decryption buffers").
                at = seg_offset % _PAGE
                ct = ct_view[at : at + seg_len]
                _read_exact(raw, ct)
                pt_len = seg_len - TAG_SIZE
                lo = skip if index == first else 0
                hi = end if index == last else pt_len
                if index == last and check_eof and raw.read(1):
                    raise IntegrityError("trailing bytes after the last segment")
                try:
                    if lo == 0 and hi == pt_len:
                        # A whole segment becomes one new bytes object, the type gunicorn writes. decrypt()
                        # zero-fills it first; writing into a bytes built in place through ctypes avoided
                        # that but gained less than 5 % on a full download (docs/benchmarks.md, 2026-12-02).
                        chunk = aead.decrypt(self._nonce(index), ct, None)
                    else:
                        chunk = self._decrypt_part(index, ct, lo, hi)
                except InvalidTag:
                    chunk = b""
                    raise IntegrityError("segment failed authentication") from None
                if chunk:
                    yield chunk
        finally:
            _CIPHERTEXT_BUFFERS.give(ct_buf, capacity)

    def _decrypt_part(self, index: int, ct: memoryview, lo: int, hi: int) -> bytes:
        """Plaintext ``[lo, hi)`` of segment ``index``: a partial edge segment (at most two per range).

        The whole segment is decrypted (its tag covers all of it) into a pooled scratch, the requested part is
        copied out, and the scratch is wiped before it goes back, whether the tag held or not: GCM writes the
        plaintext before it checks the tag, and the next taker must find neither authenticated nor
        unauthenticated plaintext. The scratch is never held across a yield, so between the pieces of a slow
        download (blobs.pacing) only the piece itself is held.
        """
        pt_len = len(ct) - TAG_SIZE
        ps = self._params.segment_plaintext
        scratch = _PLAINTEXT_BUFFERS.take(ps, pt_len)
        out = memoryview(scratch)[:pt_len]
        try:
            self._aead.decrypt_into(self._nonce(index), ct, None, out)
            return bytes(out[lo:hi])
        finally:
            _wipe(out)
            out.release()  # a traceback's frame keeps a released view: nothing to read through it
            _PLAINTEXT_BUFFERS.give(scratch, ps)
            del scratch


def decrypt(
    ikm: bytes,
    associated_data: bytes,
    ciphertext: bytes,
    params: StreamParams = DEFAULT_PARAMS,
) -> bytes:
    """Strictly decrypt a whole object: its length must match a plaintext size and nothing may trail."""
    view = _as_bytes_view(ciphertext)
    size = params.plaintext_size(len(view))
    dec = Decryptor(
        ikm, associated_data, bytes(view[: params.header_size]), plaintext_size=size, params=params
    )
    out = bytearray(size)
    oview = memoryview(out)
    pos = 0
    try:
        for index in range(dec.segment_count):
            offset, length = dec._seg(index)
            pt_len = length - TAG_SIZE
            dec._aead.decrypt_into(
                dec._nonce(index), view[offset : offset + length], None, oview[pos : pos + pt_len]
            )
            pos += pt_len
    except InvalidTag:
        raise IntegrityError("segment failed authentication") from None
    return bytes(out)
