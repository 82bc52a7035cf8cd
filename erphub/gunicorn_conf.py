"""Gunicorn settings shared by ``make run`` and the end-to-end server (``-c python:erphub.gunicorn_conf``).

Metrics in prometheus_client's multiprocess mode (architecture §9): each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR``. When a worker exits (restart, crash), its live-only samples (``liveall`` /
``livesum`` gauges) must go, or /metrics would keep reporting a dead process. Counters and histograms stay,
so totals do not drop. This runs in the gunicorn master, before Django: prometheus_client reads the
variable itself, like the workers do.
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
