"""A separate OS process that appends one audit event while the test holds SQLite's audit lock:
``python -m audit.tests.lock_waiter MODE [TIMEOUT]``.

Used by test_concurrency.py. Settings come from the environment (``DATABASE_URL``: a SQLite file). The append
runs in a thread (``MODE``: ``threads``, or ``gevent``: a greenlet after gevent patched the standard library,
as in the event worker) while the main one waits for the append's first try of the lock (``fcntl.flock`` on
``<db>-auditlock``, watched) and then prints ``waiting``: printed while the lock is still taken only if the
wait blocks just the appending thread or greenlet, not the process. Then it prints the outcome,
``{"written": 1}`` or ``{"error": message}``. ``TIMEOUT``: the busy timeout in seconds (the settings' 20 s
otherwise).
"""

from __future__ import annotations

import json
import os
import sys

from audit.tests.appender import start_django


def main() -> None:
    mode = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else None
    start_django(mode)
    import fcntl
    import threading

    from django.db import OperationalError, connections

    from audit.services import audit_record
    from core.actors import Actor

    if timeout is not None:
        connections["default"].settings_dict["OPTIONS"]["timeout"] = timeout
    tried = threading.Event()  # a gevent event once gevent patched threading
    flock = fcntl.flock

    def watched_flock(fd: int, operation: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("-auditlock"):
            tried.set()
        flock(fd, operation)

    fcntl.flock = watched_flock  # type: ignore[assignment]
    outcome: dict[str, object] = {}

    def append() -> None:
        try:
            audit_record(action="test.append", actor=Actor.system("lock-waiter"), target_id=str(os.getpid()))
            outcome["written"] = 1
        except OperationalError as exc:
            outcome["error"] = str(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=append)
    thread.start()
    tried.wait()
    print("waiting", flush=True)
    thread.join()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
