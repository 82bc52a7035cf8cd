"""The upload throttle counts every upload once, however many processes take them at the same moment: its
history is updated atomically in the shared cache (core.cache ``update``), with files and with Redis.
DRF's own get-then-set lets concurrent uploads read the same history and overwrite each other's entry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
RATE = 60
PROCESSES, ATTEMPTS = 4, 40

WORKER = textwrap.dedent(
    """
    import django
    django.setup()
    from types import SimpleNamespace
    from blobs.throttling import UploadThrottle

    request = SimpleNamespace(user=SimpleNamespace(pk=7, is_authenticated=True), META={})
    allowed = sum(UploadThrottle().allow_request(request, None) for _ in range(ATTEMPTS))
    print("ALLOWED", allowed, flush=True)
    """
).replace("ATTEMPTS", str(ATTEMPTS))


@pytest.fixture(params=["files", "redis"])
def cache_env(request, tmp_path) -> Iterator[dict[str, str]]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("REDIS_", "ERPHUB_", "DATABASE_", "DJANGO_", "UPLOAD_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="erphub.settings",
        ERPHUB_VAR_DIR=str(tmp_path / "var"),
        UPLOAD_THROTTLE_RATE=f"{RATE}/min",
    )
    if request.param == "files":
        yield env
        return
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    server.start()
    try:
        yield {**env, "REDIS_URL": server.url}
    finally:
        server.stop()


def test_concurrent_uploads_from_several_processes_are_each_counted_once(cache_env):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            cwd=ROOT,
            env=cache_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    allowed = [int(out.split()[-1]) for out, _ in outputs]
    # 160 attempts within one minute against 60/min: exactly 60 get through, spread over the processes.
    assert sum(allowed) == RATE, allowed
