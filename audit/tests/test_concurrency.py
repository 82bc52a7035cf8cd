"""Several OS processes appending at once never fork the chain nor lose an event, on SQLite and on
PostgreSQL. Each run uses its own database (a new SQLite file; a PostgreSQL database created for it and
dropped at the end), so these commits never touch the test database and no guard is weakened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
EACH = 25


def _env(database_url: str, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "ERPHUB_", "DJANGO_"))}
    env.update(
        DATABASE_URL=database_url,
        ERPHUB_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="erphub.settings",
        AUDIT_LOG_STREAM="stderr",  # the appenders' stdout is their result
    )
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def append_concurrently(env: dict[str, str], tmp_path: Path, *, writers: int, each: int) -> list[str]:
    """Starts ``writers`` processes, releases them together, returns their outputs (fails if any failed)."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "audit.tests.appender", str(each), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


def verified(env: dict[str, str]) -> int:
    """``audit_verify --full``: how many events verified (those before its own ``audit.verify`` event)."""
    done = _manage(env, "audit_verify", "--full")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: "), done.stdout
    return int(done.stdout.split()[1])


def _run(database_url: str, tmp_path: Path) -> None:
    env = _env(database_url, tmp_path / "var")
    migrated = _manage(env, "migrate", "--noinput", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    before = verified(env) + 1  # migrate's own events (roles sync) and that verification's event
    append_concurrently(env, tmp_path, writers=WRITERS, each=EACH)
    # Every append is there, gap-free and linked.
    assert verified(env) == before + WRITERS * EACH


def test_concurrent_processes_on_sqlite(tmp_path):
    _run(f"sqlite:///{tmp_path / 'mp.sqlite3'}", tmp_path)


def test_concurrent_processes_on_postgresql(postgres_database, tmp_path):
    _run(postgres_database, tmp_path)
