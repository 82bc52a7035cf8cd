"""``make run`` as a newcomer meets it: a fresh install in a temporary ERPHUB_VAR_DIR, read line by line until
the server is up. What it prints is short and in an order that helps: the new master key, then where it
serves, then the generated admin password (with how to reset it) as the last thing before the server's own
log; migrate's steps and audit events only if it fails; a busy port one line before anything else.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from blobs.tests.liveserver import HOST, ROOT, free_port, server_env

pytestmark = pytest.mark.e2e

SERVER_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:]+ [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")  # gunicorn's log format


def make_run(env: dict[str, str], port: int, metrics_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        # -e: the test's environment wins over a developer's .env; -o: never reinstall the shared venv.
        [
            "make",
            "--no-print-directory",
            "-e",
            "-o",
            ".venv/.installed",
            "run",
            f"PORT={port}",
            f"METRICS_PORT={metrics_port}",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make, gunicorn and its workers: one process group, stopped together
    )


def lines_until(proc: subprocess.Popen[str], done: re.Pattern[str], timeout: float = 180) -> Iterator[str]:
    """The process's output lines, up to and including the first that matches ``done``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = proc.stdout.readline()
            if not line:
                return
            yield line.rstrip("\n")
            if done.search(line):
                return
    raise AssertionError(f"no line matching {done.pattern!r} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # gunicorn's graceful shutdown; make goes with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def fresh_env(tmp_path) -> dict[str, str]:
    env = server_env(tmp_path, username="admin", password="unused", key_id="unused", DJANGO_DEBUG="true")
    # A fresh development install: a key file to create, a password to generate.
    for name in ("BLOB_MASTER_KEYS", "DJANGO_SUPERUSER_PASSWORD", "DJANGO_SECRET_KEY"):
        env.pop(name)
    return env


def test_fresh_install_prints_little_and_the_password_last(fresh_env, tmp_path):
    port, metrics_port = free_port(), free_port()
    proc = make_run(fresh_env, port, metrics_port)
    try:
        lines = list(lines_until(proc, re.compile(r"Booting worker")))
        before_server = [line for line in lines if not SERVER_LOG.match(line)]
        first_server_line = next(i for i, line in enumerate(lines) if SERVER_LOG.match(line))
        assert lines[:first_server_line] == before_server  # nothing of ours after the server started

        assert before_server[0] == f"Created master key file {tmp_path / 'master.key'} (0600)."
        assert before_server[1].startswith("Back it up now")
        assert not any("not recorded" in line for line in before_server)  # the first key is no lost change
        assert not any(line.startswith("{") or "Applying" in line for line in before_server)  # migrate: quiet
        serving = before_server.index(
            f"Serving on http://{HOST}:{port}/ (admin at /admin/, metrics at /metrics)"
        )
        assert before_server[serving + 2] == "Created admin account 'admin'."
        assert before_server[-2].startswith("Generated password (shown once, store it now): ")
        assert before_server[-1] == "Forgot it? Set a new one with: manage.py changepassword admin"
        password = before_server[-2].rsplit(": ", 1)[1]
        assert len(password) >= 20

        # A second `make run` while this one serves: one line about the port, before anything else.
        busy = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-e",
                "-o",
                ".venv/.installed",
                "run",
                f"PORT={port}",
                f"METRICS_PORT={free_port()}",
            ],
            cwd=ROOT,
            env=fresh_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode != 0
        output = busy.stdout + busy.stderr
        assert output.splitlines()[0] == (
            f"Port {port} on {HOST} is in use (PORT): stop what listens there, or make run PORT={port + 1}."
        )
        assert "Serving on" not in output
        assert "Traceback" not in output
    finally:
        stop(proc)
