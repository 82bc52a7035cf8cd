"""blobs.pacing: pieces sized to the client's speed, over the real decryptor, with a clock the test moves."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from blobs import crypto
from blobs.pacing import MIN_PIECE, TARGET_SECONDS, next_piece_size, paced

KEY = bytes(range(32))
AD = b"blob-id"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Object:
    """An encrypted object and a ``read(a, b)`` over it that counts the readers it opened and closed."""

    def __init__(self, size: int, segment_size: int) -> None:
        self.params = crypto.StreamParams(segment_size=segment_size)
        self.plaintext = os.urandom(size)
        self.ciphertext = crypto.encrypt(KEY, AD, self.plaintext, self.params)
        header = self.ciphertext[: self.params.header_size]
        self.decryptor = crypto.Decryptor(KEY, AD, header, plaintext_size=size, params=self.params)
        self.opened = 0
        self.closed = 0

    def read(self, start: int, stop: int) -> Iterator[bytes]:
        offset, length = self.decryptor.span(start, stop)
        raw = io.BytesIO(self.ciphertext[offset : offset + length])
        self.opened += 1
        try:
            yield from self.decryptor.iter_range(raw, start, stop)
        finally:
            self.closed += 1

    def paced(self, start: int, stop: int, clock: Clock) -> Iterator[bytes]:
        return paced(
            self.read,
            start,
            stop,
            segment_end=self.params.segment_end,
            segment_plaintext=self.params.segment_plaintext,
            clock=clock,
        )


def test_piece_sizes():
    ceiling = 1 << 20
    # Taken at once (kernel buffers had room): no rate to go by, so the piece doubles, up to the segment.
    assert next_piece_size(MIN_PIECE, MIN_PIECE, 0.0, floor=MIN_PIECE, ceiling=ceiling) == 2 * MIN_PIECE
    assert next_piece_size(ceiling, ceiling, 0.0, floor=MIN_PIECE, ceiling=ceiling) == ceiling
    # 16 KiB/s: the floor. 1 MiB/s: what it reads in TARGET_SECONDS, as a power of two.
    assert next_piece_size(MIN_PIECE, MIN_PIECE, 4.0, floor=MIN_PIECE, ceiling=ceiling) == MIN_PIECE
    assert next_piece_size(MIN_PIECE, 1 << 20, 1.0, floor=MIN_PIECE, ceiling=ceiling) == 512 * 1024
    assert TARGET_SECONDS == 0.5
    # 100 MB/s: whole segments.
    assert next_piece_size(MIN_PIECE, 1 << 20, 0.01, floor=MIN_PIECE, ceiling=ceiling) == ceiling


def test_a_slow_client_holds_one_small_piece_and_no_open_read():
    obj = Object(5 * 1024 * 1024 + 17, 1 << 20)
    clock = Clock()
    pieces = []
    for piece in obj.paced(1000, len(obj.plaintext) - 5, clock):
        # While the server writes this piece, no reader (and so no segment buffer) is open.
        assert obj.opened == obj.closed
        pieces.append(len(piece))
        clock.now += len(piece) / (16 * 1024)  # 16 KiB/s
    assert max(pieces) <= MIN_PIECE
    assert sum(pieces) == len(obj.plaintext) - 5 - 1000


def test_a_fast_client_soon_streams_whole_segments_from_one_read():
    obj = Object(20 * 1024 * 1024, 1 << 20)
    clock = Clock()
    pieces = [len(piece) for piece in obj.paced(0, len(obj.plaintext), clock)]  # the clock never moves
    # 64, 128, 256, 512 KiB cut from fresh decryptions, then one read streaming segment by segment.
    assert pieces[:4] == [MIN_PIECE, 2 * MIN_PIECE, 4 * MIN_PIECE, 8 * MIN_PIECE]
    assert obj.opened == 5
    assert obj.closed == 5
    assert max(pieces) == obj.params.segment_plaintext


def test_a_client_that_slows_down_goes_back_to_pieces():
    obj = Object(12 * 1024 * 1024, 1 << 20)
    clock = Clock()
    sizes = []
    for piece in obj.paced(0, len(obj.plaintext), clock):
        sizes.append(len(piece))
        if sum(sizes) > 4 * 1024 * 1024:
            clock.now += len(piece) / (32 * 1024)
    assert max(sizes) == obj.params.segment_plaintext
    assert sizes[-1] <= MIN_PIECE
    assert obj.opened == obj.closed  # the bulk read was closed when the client slowed


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 600_000),
    segment_size=st.sampled_from([64, 97, 4096, 70_000, 262_144]),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    rates=st.lists(st.sampled_from([0.0, 1e3, 5e4, 1e6, 1e9]), min_size=1, max_size=8),
)
def test_the_bytes_do_not_depend_on_the_pacing(size, segment_size, bounds, rates):
    obj = Object(size, segment_size)
    start, stop = sorted(int(b * size) for b in bounds)
    clock = Clock()
    out = bytearray()
    for i, piece in enumerate(obj.paced(start, stop, clock)):
        assert piece
        out += piece
        rate = rates[i % len(rates)]
        clock.now += len(piece) / rate if rate else 0.0
    assert bytes(out) == obj.plaintext[start:stop]
    assert obj.opened == obj.closed


def test_closing_early_closes_every_read():
    obj = Object(8 * 1024 * 1024, 1 << 20)
    body = obj.paced(0, len(obj.plaintext), Clock())
    for _ in range(6):
        next(body)  # into whole-segment streaming
    assert obj.opened > obj.closed
    body.close()  # the client went away
    assert obj.opened == obj.closed
