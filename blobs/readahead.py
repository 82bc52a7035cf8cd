"""Read and decrypt a download's next segments while the current one is being sent (pure: no Django).

A download is a pipeline of two halves of similar cost: reading and authenticating a segment (``read`` into
the ciphertext buffer, AES-GCM) and copying the plaintext into the socket (``sendall``). Both release the
GIL, so on two threads they overlap: the WSGI thread sends segment N while a pool thread reads and decrypts
N+1 and N+2. docs/benchmarks.md measures the gain, and what it costs.

Authentication is unchanged: an item is handed over only after it decrypted and authenticated, and an error
raised on a pool thread is raised again in the consumer when it reaches that item, where the serial iterator
would have raised it. The source is never run by two threads at once.

The pool only lends idle threads: a pool thread never waits for a slow client (a task produces until
``depth`` items are buffered, then returns), and when every pool thread is busy the consumer produces the
next item itself, as the serial path does. Under full load read-ahead therefore adds no queueing and no
threads, only its bounded buffer: at most ``depth`` segments more than the serial path per download.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadAheadPool:
    """``threads`` threads that take work only when one is idle: :meth:`try_submit` never queues."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blob-readahead")
        self._idle = threading.BoundedSemaphore(threads)

    def try_submit(self, task: Callable[[], None]) -> bool:
        """Run ``task`` on an idle thread and return True; False (nothing run) if all are busy."""
        if not self._idle.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                task()
            finally:
                self._idle.release()

        try:
            self._executor.submit(run)
        except BaseException:
            self._idle.release()
            raise
        return True

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class ReadAhead(Generic[T]):
    """Iterate ``source`` with up to ``depth`` items produced ahead on ``pool``.

    ``close()`` waits for a running task before closing ``source``: a generator cannot be closed while
    another thread runs it, and its file must not be closed under a pending read.
    """

    def __init__(self, source: Iterator[T], *, pool: ReadAheadPool, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._source = source
        self._pool = pool
        self._depth = depth
        self._cond = threading.Condition()
        self._ready: deque[T] = deque()
        self._error: BaseException | None = None
        self._exhausted = False  # the source ended or raised
        self._running = False  # someone (a pool task or the consumer) is running the source
        self._closed = False

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        with self._cond:
            while True:
                if self._ready:
                    item = self._ready.popleft()
                    self._start()
                    return item
                if self._error is not None:
                    error, self._error = self._error, None
                    self._closed = True
                    raise error
                if self._exhausted or self._closed:
                    raise StopIteration
                if not self._running:
                    self._start()
                    if not self._running:  # no idle pool thread: produce this one ourselves
                        self._running = True
                        break
                self._cond.wait()
        return self._produce_inline()

    def _produce_inline(self) -> T:
        try:
            item = next(self._source, _END)
        except BaseException:
            with self._cond:
                self._running = False
                self._exhausted = self._closed = True
                self._cond.notify_all()
            raise
        with self._cond:
            self._running = False
            self._cond.notify_all()
            if item is _END:
                self._exhausted = True
                raise StopIteration
            self._start()
        return item  # type: ignore[return-value]

    def _start(self) -> None:
        # With the lock held: hand the next items to an idle pool thread, if there is one and room for them.
        if self._running or self._exhausted or self._closed or len(self._ready) >= self._depth:
            return
        self._running = self._pool.try_submit(self._produce)

    def _produce(self) -> None:
        """A pool task: produce until ``depth`` items wait, the source ends, or the consumer closes."""
        try:
            while True:
                with self._cond:
                    if self._closed or len(self._ready) >= self._depth:
                        return
                try:
                    item = next(self._source, _END)
                except BaseException as exc:  # handed to the consumer and raised there, in order
                    with self._cond:
                        self._error = exc
                        self._exhausted = True
                    return
                with self._cond:
                    if item is _END:
                        self._exhausted = True
                        return
                    self._ready.append(item)  # type: ignore[arg-type]
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._running:  # at most one item's work
                self._cond.wait()
            self._ready.clear()
            self._error = None
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


_lock = threading.Lock()
_pools: dict[int, ReadAheadPool] = {}


def shared_pool(threads: int) -> ReadAheadPool:
    """The process's read-ahead pool of ``threads`` threads, made on first use.

    Made lazily, so that a pre-forking server (gunicorn) creates it in each worker after the fork: threads
    do not survive ``fork``, and a child that inherited its parent's pool forgets it (below).
    """
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ReadAheadPool(threads)
        return pool


def _forget_pools() -> None:
    global _lock
    _lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)
