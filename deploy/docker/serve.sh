#!/bin/sh
# Serves ERP Hub with gunicorn's event-driven worker (erphub/event_worker.py, erphub.gunicorn_conf's default:
# a greenlet per connection): the command of the container image, the Kubernetes Deployment and
# docker-compose.yml (the same flags as `make run`). Environment: GUNICORN_WORKERS (processes: one per CPU),
# GUNICORN_GRACEFUL_TIMEOUT (seconds in-flight streams get at shutdown), GUNICORN_BIND, METRICS_PORT (9100:
# the gunicorn master's own /metrics listener on GUNICORN_BIND's host; empty: none), and the worker's limits
# SERVER_HEADER_TIMEOUT, SERVER_IDLE_TIMEOUT, SERVER_MAX_CONNECTIONS, SERVER_MAX_CONNECTIONS_PER_ADDRESS
# (.env.example); further arguments are passed to gunicorn.
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
  --workers "${GUNICORN_WORKERS:-2}" \
  --bind "${GUNICORN_BIND:-0.0.0.0:8000}" \
  --timeout 120 \
  --graceful-timeout "${GUNICORN_GRACEFUL_TIMEOUT:-300}" \
  --no-sendfile \
  --no-control-socket \
  "$@"
