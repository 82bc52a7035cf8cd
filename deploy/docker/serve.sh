#!/bin/sh
# Serves ERP Hub with gunicorn gthread workers: the command of the container image, the Kubernetes
# Deployment and docker-compose.yml (the same flags as `make run`). Environment: GUNICORN_WORKERS,
# GUNICORN_THREADS, GUNICORN_GRACEFUL_TIMEOUT (seconds in-flight streams get at shutdown), GUNICORN_BIND,
# METRICS_PORT (9100: the gunicorn master's own /metrics listener on GUNICORN_BIND's host, answered while
# every worker thread is busy; empty: none); further arguments are passed to gunicorn.
set -eu

# Read by erphub.gunicorn_conf in the master (it needs PROMETHEUS_MULTIPROC_DIR, below).
export METRICS_PORT="${METRICS_PORT-9100}"

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  # prometheus_client multiprocess mode: files left by an earlier server would be summed into this one's
  # counters (a container restart keeps the pod's emptyDir), so the directory starts empty.
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

exec gunicorn erphub.wsgi:application \
  -c python:erphub.gunicorn_conf \
  --worker-class gthread \
  --workers "${GUNICORN_WORKERS:-4}" \
  --threads "${GUNICORN_THREADS:-8}" \
  --bind "${GUNICORN_BIND:-0.0.0.0:8000}" \
  --timeout 120 \
  --graceful-timeout "${GUNICORN_GRACEFUL_TIMEOUT:-300}" \
  --no-sendfile \
  --no-control-socket \
  "$@"
