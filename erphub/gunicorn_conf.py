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

Each worker runs the audit log's deferred writer (architecture §8, :mod:`audit.deferred`): started once the
worker has loaded the app (``post_worker_init``), stopped by the worker's exit (``worker_exit``), which writes
the after-the-fact events still queued before the process ends. Both import the app lazily, in the worker.
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


def _debug_on(env: Any) -> bool:
    """``DJANGO_DEBUG`` as erphub/settings.py reads it (default true: `make run`'s friendly mode)."""
    value = (env.get("DJANGO_DEBUG") or "true").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise RuntimeError(f"DJANGO_DEBUG={value!r} is not a boolean; use true or false.")


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def on_starting(server: Any) -> None:
    # Debug mode serves Django's technical pages (settings, tracebacks, SQL) to whoever reaches the port:
    # allowed on loopback only (issue 15: `make run` is friendly, never exposed).
    if not _debug_on(os.environ):
        return
    for address in server.cfg.address:
        if isinstance(address, tuple) and not _loopback(str(address[0])):
            raise RuntimeError(
                f"Refusing to serve on {address[0]}:{address[1]} with DJANGO_DEBUG on: debug pages would be "
                "open to the network. Bind 127.0.0.1 (HOST=127.0.0.1), or run in production mode "
                "(DJANGO_DEBUG=false with DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS and a master key: "
                "deploy/README.md)."
            )


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


def post_worker_init(worker: Any) -> None:
    # In the worker, after the fork and the app's load (Django is set up, gevent has patched threading): the
    # master never runs this, so it still never imports Django (.importlinter allows this one import).
    from audit.deferred import deferred_writer_start

    worker.audit_deferred_writer = deferred_writer_start()


def worker_exit(server: Any, worker: Any) -> None:
    # gunicorn also calls this in the master for a worker that vanished (Arbiter.kill_worker): there the
    # worker object never got a writer. In the worker, after its last request (graceful stop, max_requests
    # restart, quick exit), the queued events are written before the process ends.
    writer = getattr(worker, "audit_deferred_writer", None)
    if writer is not None and worker.pid == os.getpid():
        writer.stop()
