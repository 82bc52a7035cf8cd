"""Gunicorn settings shared by ``make run``, ``deploy/docker/serve.sh`` and the end-to-end server
(``-c python:erphub.gunicorn_conf``).

This runs in the gunicorn master, before Django and without it: it reads its few variables from the
environment itself (prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` the same way in the workers), and
imports only modules that never set Django up (``.importlinter``).

Metrics in prometheus_client's multiprocess mode (architecture §9): each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR``. When a worker exits (restart, crash), its live-only samples (``liveall`` /
``livesum`` gauges) must go, or /metrics would keep reporting a dead process. Counters and histograms stay,
so totals do not drop.

``METRICS_PORT`` set: the master serves ``GET /metrics`` on that port too (:mod:`erphub.metrics_listener`),
from a thread of its own, so a scrape is answered while every worker thread is busy streaming. It binds
``METRICS_HOST``, by default the host of gunicorn's first TCP ``--bind`` address (the app's), and checks
``METRICS_TOKEN`` exactly as the app's ``/metrics`` does.
"""

from __future__ import annotations

import os
from typing import Any

# The event-driven worker (erphub/event_worker.py) is the default; ``--worker-class gthread --threads N`` on
# the command line still selects the thread-per-connection mode (kept for comparison: docs/benchmarks.md).
worker_class = "erphub.event_worker.EventWorker"


def _listener_host(addresses: list[Any]) -> str:
    """The host of the first TCP address gunicorn binds (``(host, port)``; a unix socket is a path)."""
    for address in addresses:
        if isinstance(address, tuple):
            return str(address[0])
    return "127.0.0.1"  # only unix sockets: nothing else is reachable from outside either


def when_ready(server: Any) -> None:
    port = os.environ.get("METRICS_PORT", "")
    if not port:
        return
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RuntimeError(f"METRICS_PORT={port!r} is not a TCP port number; unset it to serve no listener.")
    if not multiproc_dir:
        # The master has no metrics of its own: without the workers' files it would serve an empty scrape.
        raise RuntimeError("METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR (the workers' metric files).")
    from erphub.metrics_listener import start_listener

    host = os.environ.get("METRICS_HOST") or _listener_host(server.cfg.address)
    listener = start_listener(
        host, int(port), token=os.environ.get("METRICS_TOKEN") or None, multiproc_dir=multiproc_dir
    )
    server.log.info("Metrics listener at http://%s:%d/metrics (%s)", host, listener.port, os.getpid())


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
