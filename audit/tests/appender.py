"""A separate OS process that appends audit events: ``python -m audit.tests.appender COUNT GO_FILE
[WRITERS MODE]``.

Used by the concurrency tests and bench/bench_audit.py. Settings come from the environment (``DATABASE_URL``
names the database under test). It waits for ``GO_FILE`` to exist so that every writer starts appending at
the same moment. ``WRITERS`` concurrent writers in this process (``MODE``: ``threads``, or ``gevent``
greenlets after gevent patched the standard library, as in the event worker) each append ``COUNT`` events;
without them one writer does. Prints ``{"written": n, "seconds": s, "transactions": t, "grouped": g}``:
the group commit's transactions and the events they held.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def start_django(mode: str) -> None:
    """Set Django up in this process as a server worker of ``mode`` would (both appender harnesses)."""
    if mode == "gevent":
        # Before anything imports threading or socket, like gunicorn's gevent worker.
        from gevent import monkey

        monkey.patch_all()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")
    import django

    django.setup()


def main() -> None:
    count, go_file = int(sys.argv[1]), Path(sys.argv[2])
    writers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    mode = sys.argv[4] if len(sys.argv) > 4 else "threads"
    start_django(mode)
    import threading

    from django.db import connections

    from audit.recording import group_commit
    from audit.services import audit_record
    from core.actors import Actor

    actor = Actor.system(f"appender-{os.getpid()}")
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for index in range(count):
                audit_record(
                    action="test.append",
                    actor=actor,
                    target_type="worker",
                    target_id=f"{os.getpid()}:{writer}:{index}",
                )
        except BaseException as exc:  # reported below: the test fails on a non-zero exit
            errors.append(exc)
        finally:
            connections.close_all()

    deadline = time.monotonic() + 60
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the go file never appeared")
        time.sleep(0.005)
    started = time.perf_counter()
    if writers == 1:
        write(0)
    else:
        # threading.Thread is a greenlet once gevent patched it.
        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} writers failed, the first with {errors[0]!r}")
    print(
        json.dumps(
            {
                "written": count * writers,
                "seconds": time.perf_counter() - started,
                "transactions": group_commit.transactions,
                "grouped": group_commit.events,
            }
        )
    )


if __name__ == "__main__":
    main()
