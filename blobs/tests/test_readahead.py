"""The read-ahead iterator and its pool (blobs/readahead.py): order, errors where the serial iterator raises
them, bounded buffering, no blocked pool threads, inline production when the pool is busy, close()."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from blobs.readahead import ReadAhead, ReadAheadPool, shared_pool

WAIT = 10  # seconds: a bound for the events below, never a sleep to make something happen


@pytest.fixture
def pool():
    p = ReadAheadPool(2)
    yield p
    p.shutdown()


class Source:
    """A generator-backed source that records which threads ran it and whether it was closed."""

    def __init__(self, items, *, fail_at: int | None = None, gate: dict[int, threading.Event] | None = None):
        self.items = list(items)
        self.fail_at = fail_at
        self.gate = gate or {}
        self.produced = 0
        self.threads: set[int] = set()
        self.closed = False
        self.close_called = False
        self.entered: dict[int, threading.Event] = {i: threading.Event() for i in self.gate}
        self._gen = self._run()

    def _run(self) -> Iterator[int]:
        try:
            for index, item in enumerate(self.items):
                self.threads.add(threading.get_ident())
                if index in self.gate:
                    self.entered[index].set()
                    assert self.gate[index].wait(WAIT)
                if index == self.fail_at:
                    raise ValueError(f"item {index} is bad")
                self.produced += 1
                yield item
        finally:
            self.closed = True

    def __iter__(self):
        return self

    def __next__(self) -> int:
        return next(self._gen)

    def close(self) -> None:
        self.close_called = True
        self._gen.close()


@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 50])
def test_items_arrive_in_order_and_all_of_them(pool, depth, count):
    source = Source(range(count))
    ahead = ReadAhead(source, pool=pool, depth=depth)
    assert list(ahead) == list(range(count))
    assert next(ahead, "end") == "end"
    ahead.close()
    assert source.closed


def test_the_items_are_produced_on_a_pool_thread(pool):
    source = Source(range(20))
    assert list(ReadAhead(source, pool=pool)) == list(range(20))
    assert threading.get_ident() not in source.threads


def test_an_error_is_raised_where_the_serial_iterator_raises_it(pool):
    source = Source(range(10), fail_at=4)
    ahead = ReadAhead(source, pool=pool, depth=3)
    got: list[int] = []
    with pytest.raises(ValueError, match="item 4 is bad"):
        got.extend(ahead)  # extend keeps what arrived before the error
    assert got == [0, 1, 2, 3]  # everything before the bad item, nothing after it
    assert next(ahead, "end") == "end"
    ahead.close()


def test_at_most_depth_items_are_buffered(pool):
    release = threading.Event()
    source = Source(range(100), gate={5: release})
    ahead = ReadAhead(source, pool=pool, depth=3)
    assert next(ahead) == 0
    assert next(ahead) == 1
    # The pool produces 2, 3, 4 (depth 3) and stops; item 5 is not even started.
    deadline = time.monotonic() + WAIT
    while source.produced < 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert source.produced == 5
    assert not source.entered[5].is_set()
    release.set()
    assert list(ahead) == list(range(2, 100))


def test_a_slow_consumer_never_holds_a_pool_thread(pool):
    """Two pool threads, five slow downloads: if a task waited for its consumer, the others would starve."""
    sources = [Source(range(30)) for _ in range(5)]
    aheads = [ReadAhead(s, pool=pool, depth=2) for s in sources]
    got: list[list[int]] = [[] for _ in aheads]
    for _ in range(30):  # round-robin: each consumer takes one item, then waits for the others
        for index, ahead in enumerate(aheads):
            got[index].append(next(ahead))
    assert got == [list(range(30))] * 5
    for ahead in aheads:
        ahead.close()


def test_with_every_pool_thread_busy_the_consumer_produces_itself():
    busy_pool = ReadAheadPool(1)
    hold = threading.Event()
    try:
        blocker = Source(range(10), gate={1: hold})
        first = ReadAhead(blocker, pool=busy_pool, depth=2)
        assert next(first) == 0
        assert blocker.entered[1].wait(WAIT)  # the pool's only thread is stuck producing item 1
        other = Source(range(5))
        assert list(ReadAhead(other, pool=busy_pool)) == list(range(5))
        assert other.threads == {threading.get_ident()}  # produced inline, never queued behind the blocker
        hold.set()
        assert list(first) == list(range(1, 10))
    finally:
        hold.set()
        busy_pool.shutdown()


def test_close_waits_for_the_running_task_then_closes_the_source(pool):
    release = threading.Event()
    source = Source(range(10), gate={1: release})
    ahead = ReadAhead(source, pool=pool, depth=2)
    assert next(ahead) == 0
    assert source.entered[1].wait(WAIT)  # a pool thread is inside the source now
    closer = threading.Thread(target=ahead.close)
    closer.start()
    # Closing a running generator would raise "generator already executing"; close() must wait instead.
    deadline = time.monotonic() + WAIT
    while not ahead._closed and time.monotonic() < deadline:
        time.sleep(0.001)
    assert closer.is_alive()
    assert not source.closed
    release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert source.closed
    assert next(ahead, "end") == "end"


def test_close_before_the_first_item_closes_the_source(pool):
    source = Source(range(3))
    ReadAhead(source, pool=pool).close()
    assert source.close_called
    assert source.produced == 0


def test_a_forked_child_makes_its_own_pool():
    parent = shared_pool(2)
    assert parent.try_submit(lambda: None)
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool object is forgotten, a new one works
        code = 1
        try:
            child = shared_pool(2)
            done = threading.Event()
            if child is not parent and child.try_submit(done.set) and done.wait(WAIT):
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shared_pool(2) is parent


@pytest.mark.parametrize("bad", [0, -1])
def test_nonsense_sizes_are_refused(pool, bad):
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ReadAheadPool(bad)
    with pytest.raises(ValueError, match="depth must be at least 1"):
        ReadAhead(iter(()), pool=pool, depth=bad)
