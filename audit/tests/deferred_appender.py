"""A separate OS process running the deferred writer as a server worker does (audit.deferred):
``python -m audit.tests.deferred_appender SCENARIO MODE WRITERS EACH``.

Settings come from the environment (``DATABASE_URL``, ``AUDIT_DEFERRED_INTERVAL``,
``AUDIT_DEFERRED_MAX_QUEUED``).
``MODE``: ``threads``, or ``gevent`` greenlets after gevent patched the standard library (the event worker).
The writer is started with ``deferred_writer_start`` (the worker's ``post_worker_init``) and stopped with
``deferred_writer_stop`` (its ``worker_exit``). Scenarios:

- ``downloads``: ``WRITERS`` concurrent writers each record ``EACH`` pairs like a download: a start
  (``audit_record``, waits for its commit) then an end (``audit_record_after``, after the fact).
- ``ends``: one writer records ``EACH`` ends in a row, nothing else.
- ``refused``: the database refuses one event (a trigger): an end it refuses, an end it keeps, a start; the
  writer retries the refused one until it gives up, then the process stops.

Prints ``{"transactions", "grouped", "inline", "rows", "distinct", "failures"}``: the group commit's
transactions and events, the after-the-fact calls written inline (they returned their event), this process's
rows and distinct (action, target) pairs in the log, ``audit_write_failures_total``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    scenario, mode, writers, each = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from audit.tests.appender import start_django

    start_django(mode)
    import threading

    from django.db import connection, connections
    from prometheus_client import REGISTRY

    from audit.deferred import deferred_writer_start, deferred_writer_stop
    from audit.models import AuditEvent
    from audit.recording import group_commit
    from audit.services import audit_record, audit_record_after
    from core.actors import Actor

    actor = Actor.system(f"deferred-{os.getpid()}")
    inline: list[int] = []
    errors: list[BaseException] = []

    def download(writer: int) -> None:
        try:
            for index in range(each):
                target = f"{os.getpid()}:{writer}:{index}"
                if scenario == "downloads":
                    audit_record(action="test.start", actor=actor, target_type="t", target_id=target)
                if audit_record_after(action="test.end", actor=actor, target_type="t", target_id=target):
                    inline.append(index)
        except BaseException as exc:  # reported below: the test fails on a non-zero exit
            errors.append(exc)
        finally:
            connections.close_all()

    if scenario == "refused":
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON audit_auditevent WHEN NEW.target_id = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        connection.close()
    deferred_writer_start()
    if scenario == "refused":
        audit_record_after(action="test.end", actor=actor, target_type="t", target_id="refused")
        audit_record_after(action="test.end", actor=actor, target_type="t", target_id="kept")
        audit_record(action="test.start", actor=actor, target_type="t", target_id="leader")
        # The writer's own retries: wait (bounded) until it has given up on the refused event.
        deadline = time.monotonic() + 60
        while group_commit.deferred_left() and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        threads = [threading.Thread(target=download, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    deferred_writer_stop()
    if errors:
        raise SystemExit(f"{len(errors)} writers failed, the first with {errors[0]!r}")
    mine = AuditEvent.objects.filter(actor=actor.name)
    print(
        json.dumps(
            {
                "transactions": group_commit.transactions,
                "grouped": group_commit.events,
                "inline": len(inline),
                "rows": mine.count(),
                "distinct": len(set(mine.values_list("action", "target_id"))),
                "targets": sorted(mine.values_list("target_id", flat=True)) if scenario == "refused" else [],
                "failures": REGISTRY.get_sample_value("audit_write_failures_total") or 0.0,
            }
        )
    )


if __name__ == "__main__":
    main()
