"""kms.metrics: names and labels the dashboards and alerts use, and prometheus_client's multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from kms.exceptions import KeyNotFound, KeyUnavailable, KmsError, UnwrapFailed
from kms.metrics import STATUSES, status_of

BASE_DIR = Path(__file__).resolve().parents[2]


def test_status_labels():
    assert status_of(None) == "success"
    assert status_of(KeyUnavailable("x", transient=True)) == "unavailable"
    assert status_of(KeyNotFound("x")) == "not_found"
    assert status_of(UnwrapFailed("x")) == "unwrap_failed"
    assert status_of(KmsError("x")) == "error"
    assert status_of(ValueError()) == "error"
    assert set(STATUSES) == {"success", "unavailable", "not_found", "unwrap_failed", "error"}


def test_workers_in_multiprocess_mode_add_up(tmp_path):
    # Two "gunicorn workers" record calls into PROMETHEUS_MULTIPROC_DIR; the collector sums them.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    code = (
        "from kms.metrics import record_call; "
        "record_call(provider='aws', operation='unwrap', status='success', seconds=0.02)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, cwd=BASE_DIR, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    labels = {"provider": "aws", "operation": "unwrap", "status": "success"}
    assert registry.get_sample_value("kms_calls_total", labels) == 2
    assert (
        registry.get_sample_value(
            "kms_call_duration_seconds_count", {"provider": "aws", "operation": "unwrap"}
        )
        == 2
    )
