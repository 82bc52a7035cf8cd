"""erphub.gunicorn_conf: with DJANGO_DEBUG on, gunicorn serves on loopback only."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from blobs.tests.liveserver import free_port, gunicorn_command
from erphub import gunicorn_conf

ROOT = Path(__file__).resolve().parents[2]


def _server(*addresses: object) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(address=list(addresses)))


@pytest.mark.parametrize(
    "address", [("127.0.0.1", 8000), ("::1", 8000), ("localhost", 8000), ("127.0.0.2", 80), "/run/erp.sock"]
)
def test_debug_serves_on_loopback(monkeypatch, address):
    monkeypatch.delenv("DJANGO_DEBUG", raising=False)  # the default: on
    gunicorn_conf.on_starting(_server(address))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "erp.example.com"])  # noqa: S104
def test_debug_refuses_any_other_address(monkeypatch, host):
    monkeypatch.setenv("DJANGO_DEBUG", "true")
    with pytest.raises(RuntimeError, match="DJANGO_DEBUG=false"):
        gunicorn_conf.on_starting(_server(("127.0.0.1", 8000), (host, 8000)))


def test_production_mode_binds_anywhere(monkeypatch):
    monkeypatch.setenv("DJANGO_DEBUG", "false")
    gunicorn_conf.on_starting(_server(("0.0.0.0", 8000)))  # noqa: S104


def test_gunicorn_exits_before_listening(tmp_path):
    # A documentation address (RFC 5737), not on this machine: were the check missing, binding would fail too,
    # but without the message; nothing ever listens beyond loopback.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ERPHUB_VAR_DIR": str(tmp_path)}
    command = [*gunicorn_command(), "erphub.wsgi", "-c", "python:erphub.gunicorn_conf", "--no-control-socket"]
    done = subprocess.run(
        [*command, "--bind", f"192.0.2.10:{free_port()}"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "DJANGO_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Refusing to serve on 192.0.2.10" in done.stderr
