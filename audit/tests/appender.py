"""A separate OS process that appends audit events: ``python -m audit.tests.appender COUNT GO_FILE``.

Used by the concurrency test and bench/bench_audit.py. Settings come from the environment
(``DATABASE_URL`` names the database under test). It waits for ``GO_FILE`` to exist so that every writer
starts appending at the same moment, then prints ``{"written": n, "seconds": s}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    count, go_file = int(sys.argv[1]), Path(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")
    import django

    django.setup()
    from audit.services import audit_record
    from core.actors import Actor

    actor = Actor.system(f"appender-{os.getpid()}")
    deadline = time.monotonic() + 60
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the go file never appeared")
        time.sleep(0.005)
    started = time.perf_counter()
    for index in range(count):
        audit_record(
            action="test.append", actor=actor, target_type="worker", target_id=f"{os.getpid()}:{index}"
        )
    print(json.dumps({"written": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
