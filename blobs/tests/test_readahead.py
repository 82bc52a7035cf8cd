"""The object stores' shared reader (blobs/readahead.py), over an in-memory object: the bound on what is
queued, seeks, truncation and failures. The stores' own fetches run against their servers in
test_storage_contract.py and test_storage_{s3,azure,gcs}.py."""

from __future__ import annotations

import io
import threading
from collections.abc import Generator

import pytest

from blobs.exceptions import ObjectMissing, StorageUnavailable
from blobs.readahead import Fetch, WindowReader

DATA = bytes(range(256)) * 1024  # 256 KiB


class MemoryFetch(Fetch):
    def __init__(self, reader: MemoryReader, start: int, stop: int) -> None:
        self._reader = reader
        super().__init__("object", start, stop, reader.ahead)

    def _chunks(self) -> Generator[bytes, None, None]:
        reader = self._reader
        reader.requests.append((self._start, self._stop))
        if reader.fail is not None:
            raise reader.fail
        end = min(self._stop, len(reader.data))
        for at in range(self._start, end, reader.chunk):
            if reader.gate is not None:
                reader.gate.wait()
            data = reader.data[at : min(end, at + reader.chunk)]
            with self._cond:
                reader.peak = max(reader.peak, self._queued + len(data))
            yield data


class MemoryReader(WindowReader):
    def __init__(self, data: bytes, start: int, stop: int, *, ahead: int = 16 * 1024, chunk: int = 4096):
        self.data = data
        self.ahead = ahead
        self.chunk = chunk
        self.requests: list[tuple[int, int]] = []
        self.beyond: list[int] = []
        self.peak = 0
        self.fail: BaseException | None = None
        self.gate: threading.Event | None = None
        super().__init__("object", start, stop, ahead=ahead)

    def _open_fetch(self, start: int, stop: int) -> Fetch:
        return MemoryFetch(self, start, stop)

    def _read_beyond(self, view: memoryview) -> int:
        self.beyond.append(self._pos)
        data = self.data[self._pos : self._pos + len(view)]
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def test_reads_the_window_with_at_most_ahead_plus_one_chunk_queued():
    reader = MemoryReader(DATA, 1000, 200_000)
    got = bytearray()
    while len(got) < 199_000:
        got += reader.read(min(1500, 199_000 - len(got)))
    assert bytes(got) == DATA[1000:200_000]
    assert reader.requests == [(1000, 200_000)]  # one fetch for the whole window
    assert reader.ahead <= reader.peak <= reader.ahead + reader.chunk  # backpressure held
    reader.close()


def test_seeking_back_within_what_was_read_refetches_nothing():
    reader = MemoryReader(DATA, 0, len(DATA))
    assert reader.read(3000) == DATA[:3000]
    reader.seek(1000)
    assert reader.read(3000) == DATA[1000:4000]
    assert reader.requests == [(0, len(DATA))]
    reader.seek(100_000)  # outside what is held: a new fetch from there
    assert reader.read(10) == DATA[100_000:100_010]
    assert reader.requests == [(0, len(DATA)), (100_000, len(DATA))]
    reader.close()


def test_reading_past_the_window_asks_for_exactly_that():
    reader = MemoryReader(DATA, 0, 100)
    assert reader.read(100) == DATA[:100]
    assert reader.read(1) == DATA[100:101]  # Decryptor.iter_all's check for trailing bytes
    assert reader.beyond == [100]
    reader.close()


def test_an_object_shorter_than_the_window_is_a_short_read():
    reader = MemoryReader(DATA[:5000], 0, 10_000)
    assert reader.read(10_000) == DATA[:5000]
    assert reader.read(10) == b""
    reader.close()


def test_a_store_error_reaches_the_reader_as_is():
    reader = MemoryReader(DATA, 0, 1000)
    reader.fail = ObjectMissing()
    with pytest.raises(ObjectMissing):
        reader.read(10)
    reader.close()


def test_an_unexpected_failure_is_an_outage_not_a_hang(caplog):
    reader = MemoryReader(DATA, 0, 1000)
    reader.fail = RuntimeError("connection reset")
    with pytest.raises(StorageUnavailable, match="RuntimeError"):
        reader.read(10)
    assert "reading object failed" in caplog.text
    reader.close()


def test_close_stops_a_fetch_that_waits_on_backpressure():
    reader = MemoryReader(DATA, 0, len(DATA), ahead=8192, chunk=4096)
    assert reader.read(10) == DATA[:10]
    fetch = reader._fetch
    assert fetch is not None
    reader.close()
    assert not fetch._thread.is_alive()  # joined: no thread left behind per download
    assert reader._fetch is None


def test_is_a_seekable_raw_file():
    reader = MemoryReader(DATA, 0, 10)
    assert reader.readable()
    assert reader.seekable()
    assert reader.seek(5) == 5
    assert reader.tell() == 5
    assert reader.seek(2, io.SEEK_CUR) == 7
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(0, io.SEEK_END)
    with pytest.raises(ValueError, match="negative"):
        reader.seek(-1)
    reader.close()
