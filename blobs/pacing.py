"""Download writes sized to the client's speed, so a slow reader holds kilobytes, not a segment.

A segment's plaintext leaves only after its tag has verified, so a writer that handed the server whole
segments would hold one decrypted segment (1 MiB by default) plus its ciphertext buffer for as long as the
client takes to read it: for a phone at 16 KiB/s, a minute per segment; for a thousand of them, 2 GiB. Here
each write is a *piece*: it starts at 64 KiB and doubles while the client keeps up. A piece smaller than the
segment is cut from a fresh decryption of that segment (read, verify, copy the piece out, drop the rest), so
between writes nothing but the piece is held; once pieces reach the segment size the reader streams whole
segments as before. The measure of the client is how long the server took to accept the previous piece (its
socket's backpressure): a piece taken at once (the kernel's buffers had room) says nothing, so the size grows;
one that took time gives the client's rate, and the next piece is what it reads in ``TARGET_SECONDS``.

The trade: a slow client's segment is decrypted once per piece (16 times per 1 MiB segment at 64 KiB): a
client reading 16 KiB/s costs 256 KiB/s of AES-GCM, about 0.01 % of a core, so a thousand of them cost about a
tenth of one; a fast client pays four extra decryptions of its first segment. docs/benchmarks.md has figures.
Pure: no Django, no I/O of its own (architecture.md §12).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator

MIN_PIECE = 64 * 1024
# A slow client's piece is what it reads in this long: short enough to keep its memory small, long enough that
# each write (and each segment decryption) moves a useful amount.
TARGET_SECONDS = 0.5
# A write accepted faster than this went into kernel buffers: it tells nothing about the client's rate.
ABSORBED_SECONDS = 0.001


def next_piece_size(size: int, written: int, took: float, *, floor: int, ceiling: int) -> int:
    """The next piece's size after ``written`` bytes took ``took`` seconds to be accepted."""
    if took < ABSORBED_SECONDS:
        return min(size * 2, ceiling)
    rate = written / took
    want = int(rate * TARGET_SECONDS)
    piece = floor
    while piece * 2 <= want and piece < ceiling:
        piece *= 2
    return min(piece, ceiling)


def paced(
    read: Callable[[int, int], Iterator[bytes]],
    start: int,
    stop: int,
    *,
    segment_end: Callable[[int], int],
    segment_plaintext: int,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[bytes, None, None]:
    """The plaintext of ``[start, stop)``, in pieces paced by how fast the consumer takes them.

    ``read(a, b)`` yields the plaintext of ``[a, b)`` segment by segment, decrypting (and authenticating) only
    the segments it overlaps; ``segment_end(p)`` is where the segment holding ``p`` ends. The bytes are those
    of ``read(start, stop)`` whatever the pacing."""
    floor = min(MIN_PIECE, segment_plaintext)
    size = floor
    position = start
    bulk: Iterator[bytes] | None = None  # whole segments, once the client is fast enough for them
    try:
        while position < stop:
            if bulk is not None:
                chunk = next(bulk, b"")
                if not chunk:
                    break
            else:
                end = min(stop, position + size, segment_end(position))
                part = read(position, end)
                try:
                    chunk = b"".join(part)
                finally:
                    part.close()  # type: ignore[attr-defined]  # a generator: frees its buffers now
            began = clock()
            yield chunk
            took = clock() - began
            position += len(chunk)
            size = next_piece_size(size, len(chunk), took, floor=floor, ceiling=segment_plaintext)
            if size >= segment_plaintext:
                if bulk is None and position < stop:
                    bulk = read(position, stop)
            elif bulk is not None:
                bulk.close()  # type: ignore[attr-defined]
                bulk = None
    finally:
        if bulk is not None:
            bulk.close()  # type: ignore[attr-defined]
