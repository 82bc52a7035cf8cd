"""A seekable read of one remote object, fetched ahead of its reader: the object stores' shared reader
(S3, Azure Blob, GCS; architecture §5).

Each store answers a ranged read in its own way (a GetObject body, Azure's download chunks, one GCS GET per
window); what they share is here:

- :class:`Fetch` streams ``[start, stop)`` from a background thread (a greenlet under the event worker) into
  a queue that holds at most ``ahead`` bytes, so the store's latency overlaps the client's and memory stays
  bounded whatever the object's size. A store subclasses it with ``_chunks()`` (its requests) and, where a
  blocked read can be cut short, ``_interrupt()``.
- :class:`WindowReader` is the file object the decryptor reads: it keeps what it read since its last seek
  (up to ``ahead`` bytes), because blobs.pacing seeks back to a segment's start to cut the next piece from
  it, restarts the fetch on a seek outside that, and reads past the window on demand (Decryptor.iter_all's
  check for trailing bytes) through the store's ``_read_beyond``.

A store's errors are translated inside ``_chunks``/``_read_beyond`` (BlobError); anything else a fetch
thread meets is logged and becomes StorageUnavailable, so a reader never waits forever.
"""

from __future__ import annotations

import abc
import io
import logging
import threading
from collections import deque
from collections.abc import Generator
from typing import Any

from .exceptions import BlobError, StorageUnavailable

logger = logging.getLogger(__name__)


class Fetch(abc.ABC):
    """One ranged read of ``key``, ``[start, stop)``, queued by a thread at most ``ahead`` bytes ahead."""

    def __init__(self, key: str, start: int, stop: int, ahead: int) -> None:
        self._key = key
        self._start = start
        self._stop = stop
        self._ahead = ahead
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._error: BlobError | None = None
        self._finished = False
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"read-ahead-{key}", daemon=True)
        self._thread.start()

    @abc.abstractmethod
    def _chunks(self) -> Generator[bytes, None, None]:
        """The range's bytes, in the store's chunks; ends early (or at once) if the object ends first — a
        truncated object, which the reader's caller reports as such. Raises BlobError for the store's
        failures."""

    def _interrupt(self) -> None:  # noqa: B027 — optional hook, a no-op where a read cannot be cut short
        """Cut short a read the thread is blocked in (``close()`` from the reader's side)."""

    def _stopping(self) -> bool:
        with self._cond:
            return self._stopped

    def _run(self) -> None:
        error: BlobError
        chunks = self._chunks()
        try:
            for data in chunks:
                with self._cond:
                    if self._stopped:
                        return
                    if data:
                        self._queue.append(data)
                        self._queued += len(data)
                        self._cond.notify_all()
                    # Backpressure: the next request waits until the reader has taken enough.
                    while self._queued >= self._ahead and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            return
        except BlobError as exc:
            error = exc
        except Exception as exc:  # a thread must hand every failure to its reader, or that waits forever
            if self._stopping():
                return  # close() cut a read short, as intended
            logger.exception("reading %s failed", self._key)
            error = StorageUnavailable(f"Blob storage failed (read: {type(exc).__name__}).")
        except BaseException as exc:  # the greenlet killed or timed out: the reader must not wait forever
            with self._cond:
                self._error = StorageUnavailable(f"Blob storage failed (read: {type(exc).__name__}).")
                self._cond.notify_all()
            raise
        finally:
            chunks.close()  # the store's response is released now, not when the generator is collected
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def next(self) -> bytes:
        """The next chunk; b"" once the range is complete. Raises the fetch's error."""
        with self._cond:
            while not self._queue and not self._finished and self._error is None:
                self._cond.wait()
            if self._queue:
                data = self._queue.popleft()
                self._queued -= len(data)
                self._cond.notify_all()
                return data
            if self._error is not None:
                raise self._error
            return b""

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._interrupt()
        self._thread.join(timeout=30)


class WindowReader(io.RawIOBase, abc.ABC):
    """A seekable read of one object: ``[start, stop)`` fetched ahead of the consumer (module docstring).

    ``ahead`` bounds both the fetch's queue and what is kept behind the position."""

    def __init__(self, key: str, start: int, stop: int, *, ahead: int) -> None:
        super().__init__()
        self._key = key
        self._stop = stop
        self._pos = start
        self._ahead = ahead
        self._held = bytearray()  # object bytes [_held_at, _held_at + len(_held)), kept since the last seek
        self._held_at = start
        self._fetch: Fetch | None = None
        self._fetch_exhausted = False

    @abc.abstractmethod
    def _open_fetch(self, start: int, stop: int) -> Fetch:
        """The store's fetch of ``[start, stop)``."""

    @abc.abstractmethod
    def _read_beyond(self, view: memoryview) -> int:
        """Read past the window (at ``self._pos``) into ``view``, advancing the position; 0 at the object's
        end."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek relative to the end")
        if offset < 0:
            raise ValueError("negative seek position")
        held_end = self._held_at + len(self._held)
        if self._held_at <= offset <= held_end:
            # Forget what lies before the new position: pacing never seeks behind its last seek target.
            del self._held[: offset - self._held_at]
            self._held_at = offset
        self._pos = offset
        return offset

    def _restart(self, at: int) -> None:
        self._close_fetch()
        self._held = bytearray()
        self._held_at = at
        self._fetch_exhausted = at >= self._stop
        if at < self._stop:
            self._fetch = self._open_fetch(at, self._stop)

    def _close_fetch(self) -> None:
        if self._fetch is not None:
            fetch, self._fetch = self._fetch, None
            fetch.close()

    def readinto(self, buffer: Any) -> int:
        # Fills the buffer unless the object ends first, as a file does: callers (blob_open's header read)
        # may read once and take a short read for truncation.
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            n = self._read_some(view[done:])
            if not n:
                break
            done += n
        return done

    def _read_some(self, view: memoryview) -> int:
        if self._pos >= self._stop:
            return self._read_beyond(view)
        held_end = self._held_at + len(self._held)
        unstarted = self._fetch is None and not self._fetch_exhausted
        if unstarted or not self._held_at <= self._pos <= held_end:
            self._restart(self._pos)
            held_end = self._pos
        while self._pos >= held_end:
            if self._fetch is None:
                return 0
            data = self._fetch.next()
            if not data:
                self._close_fetch()
                self._fetch_exhausted = True
                return 0  # an object shorter than the window: a truncated object
            self._held += data
            self._trim()
            held_end = self._held_at + len(self._held)
        offset = self._pos - self._held_at
        n = min(len(view), len(self._held) - offset)
        view[:n] = self._held[offset : offset + n]
        self._pos += n
        return n

    def _trim(self) -> None:
        # Bounded memory: at most ``ahead`` bytes behind the position (a segment, for pacing's re-reads).
        behind = self._pos - self._held_at
        excess = behind - self._ahead
        if excess > 0:
            del self._held[:excess]
            self._held_at += excess

    def close(self) -> None:
        self._close_fetch()
        self._held = bytearray()
        super().close()
