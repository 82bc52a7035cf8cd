"""The deferred writer (architecture.md §8, issue 14): after-the-fact events leave the request's path.

A download's end event is written after its body anyway; written inline it costs a transaction in the body's
``close()``, which the client's next request on a kept-alive connection waits for. In a server worker
``audit_record_after`` instead queues the event (``GroupCommit.defer``) and returns. The next group commit
in the process takes every queued event into its batch (so an end usually shares the next start's
transaction); this writer, a thread (a greenlet under the event worker, which patched ``threading`` before
the app loaded), writes what no commit took within ``AUDIT["DEFERRED_INTERVAL"]`` and retries failed ones.

Started by the gunicorn hooks in each worker after the fork (erphub/gunicorn_conf.py: ``post_worker_init``)
and stopped by its exit (``worker_exit``: graceful stop, ``max_requests`` restart), which writes whatever is
queued before the process ends. Nothing else starts it: tests, management commands and shells write inline.
A worker killed outright (SIGKILL, a crash) loses the end events still queued; their start events are
durable, and a start without an end already reads "ended without a trace" (a crash mid-download).
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import connections

from .conf import audit_setting
from .recording import GroupCommit, group_commit

logger = logging.getLogger(__name__)

# How long a worker's exit may spend writing what is queued. gunicorn's graceful timeout (its default 30 s;
# deploy/ sets 300 s) counts from SIGTERM, downloads' drain included: past it the master kills the worker and
# anything still queued would be gone without the lost-event log line, so give up well before.
EXIT_SECONDS = 20.0


class DeferredWriter:
    """Flushes ``group``'s deferred events when no group commit took them within ``interval`` seconds."""

    def __init__(self, group: GroupCommit, *, interval: float, capacity: int) -> None:
        self._group = group
        self._interval = interval
        self._capacity = capacity
        # Created here, in the worker after gevent's patching: greenlet events under the event worker.
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-deferred-writer", daemon=True)

    def start(self) -> None:
        self._group.start_deferring(capacity=self._capacity, wake=self._wake.set)
        self._thread.start()

    def stop(self, *, within: float = EXIT_SECONDS) -> None:
        """Stop deferring (new events are written inline), then write every queued event and every pending
        retry before returning: the worker's exit must not lose them. After ``within`` seconds (a database
        that is down), every event left is logged whole and counted as lost (``_lost``), before gunicorn's
        graceful timeout kills the worker and they would vanish without a trace."""
        deadline = time.monotonic() + within
        self._group.stop_deferring()
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=within)
        while self._group.deferred_left():
            if time.monotonic() >= deadline:
                self._group.lose_deferred(TimeoutError("the worker's exit could not write them in time"))
                return
            wait = self._group.retry_due()
            if not self._group.deferred_databases() and wait:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                continue
            if not self._flush():
                # A bug, not a database error (those are retried, then lost one by one): rather than spin
                # until the master kills this worker, log every event left, as lost.
                self._group.lose_deferred(RuntimeError("the deferred audit writer failed at exit"))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._turn():
                    return
            except Exception:
                # The writer must outlive a bad turn: failed events are queued again only by it.
                logger.exception("The deferred audit writer's turn failed")
                self._stopping.wait(self._interval)

    def _turn(self) -> bool:
        """One wait-and-flush turn; True when ``stop()`` asked it to end (``stop()`` writes the rest)."""
        wait = self._group.retry_due()
        if not self._group.deferred_databases():
            self._wake.wait(wait)
            self._wake.clear()
            return False
        # Give a group commit the interval to take them: it costs no transaction of its own.
        if self._stopping.wait(self._interval):
            return True  # stop() writes the rest
        self._flush()
        return False

    def _flush(self) -> bool:
        ok = True
        for using in self._group.deferred_databases():
            try:
                # Connect before leading (recording._append: a pool must not starve its leader).
                connections[using].ensure_connection()
                self._group.flush(using=using)
            except Exception:
                # The writer must outlive one bad turn, or events would pile up until every one is written
                # inline. A database error never gets here (the group commit counts it as the events'
                # failure and retries them); this is a bug, and the events stay queued for the next turn.
                logger.exception("The deferred audit writer's turn failed")
                ok = False
            finally:
                # Hold nothing between turns: a pooled connection goes back, SQLite's file closes.
                connections[using].close()
        return ok


_writer: DeferredWriter | None = None


def deferred_writer_start() -> DeferredWriter:
    """Start this process's deferred writer (a server worker's ``post_worker_init``)."""
    global _writer
    if _writer is None:
        _writer = DeferredWriter(
            group_commit,
            interval=audit_setting("DEFERRED_INTERVAL"),
            capacity=audit_setting("DEFERRED_MAX_QUEUED"),
        )
        _writer.start()
    return _writer


def deferred_writer_stop() -> None:
    """Stop this process's deferred writer, writing what it holds (a server worker's ``worker_exit``)."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop()
