"""Several OS processes appending at once never fork the chain nor lose an event, on SQLite and on
PostgreSQL. Each run uses its own database (a new SQLite file; a PostgreSQL database created for it and
dropped at the end), so these commits never touch the test database and no guard is weakened."""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import subprocess
import sys
from pathlib import Path

import pytest

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


def append_concurrently(
    env: dict[str, str], tmp_path: Path, *, writers: int, each: int, extra: tuple[str, ...] = ()
) -> list[str]:
    """Starts ``writers`` processes, releases them together, returns their outputs (fails if any failed).
    ``extra``: one more process with its own arguments (``WRITERS MODE``, see appender.py)."""
    go = tmp_path / "go"
    commands = [[str(each), str(go)] for _ in range(writers)]
    if extra:
        commands.append([str(each), str(go), *extra])
    # stderr (the audit log lines) goes to files, not pipes: a writer blocked on a full pipe that nobody reads
    # yet (outputs are collected one process at a time) would hold the audit lock and stall the others.
    logs = [tmp_path / f"appender-{n}.err" for n in range(len(commands))]
    procs = []
    for arguments, log in zip(commands, logs, strict=True):
        with log.open("w") as err_file:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "audit.tests.appender", *arguments],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=err_file,
                    text=True,
                )
            )
    go.touch()
    outputs = []
    for proc, log in zip(procs, logs, strict=True):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log.read_text()[-4000:]
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


# --- group commit (issue 14): 64 writers in one process, beside a process appending one at a time -----------

MANY = 64
MANY_EACH = 4


def _run_many(database_url: str, tmp_path: Path, mode: str) -> None:
    env = _env(database_url, tmp_path / "var")
    migrated = _manage(env, "migrate", "--noinput", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    before = verified(env) + 1
    outputs = append_concurrently(env, tmp_path, writers=1, each=MANY_EACH, extra=(str(MANY), mode))
    many = json.loads(outputs[-1])
    # Gap-free, linked, none lost: every writer's every event, and the other process's.
    assert verified(env) == before + MANY * MANY_EACH + MANY_EACH
    # Every standalone append went through the group commit.
    assert many["grouped"] == MANY * MANY_EACH
    if mode == "gevent":
        # Greenlets switch only where they yield: the leader's yield lets every ready writer queue behind
        # it, so 64 writers must share transactions (with threads it depends on the scheduler).
        assert many["transactions"] < MANY * MANY_EACH / 4, many


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_64_writers_in_one_process_on_sqlite(tmp_path, mode):
    _run_many(f"sqlite:///{tmp_path / 'many.sqlite3'}", tmp_path, mode)


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_64_writers_in_one_process_on_postgresql(postgres_database, tmp_path, mode):
    _run_many(postgres_database, tmp_path, mode)


# --- SQLite's audit lock held by another process (issue 14) -------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_log(tmp_path_factory) -> tuple[dict[str, str], Path]:
    """A migrated SQLite database of its own (shared by the tests below): its environment and file."""
    tmp_path = tmp_path_factory.mktemp("auditlock")
    database = tmp_path / "lock.sqlite3"
    env = _env(f"sqlite:///{database}", tmp_path / "var")
    migrated = _manage(env, "migrate", "--noinput", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    return env, database


def _hold_audit_lock(database: Path) -> int:
    """Take the audit lock as another writer process would; the descriptor to close to release it."""
    fd = os.open(f"{database}-auditlock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _lock_waiter(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "audit.tests.lock_waiter", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _first_line(proc: subprocess.Popen[str], *, within: float) -> str:
    # A guard against a hang, not a measurement: the old blocking flock never printed while the lock was held.
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        return proc.stdout.readline() if selector.select(timeout=within) else ""


@pytest.mark.parametrize("mode", ["gevent", "threads"])
def test_waiting_for_another_process_s_audit_lock_blocks_only_the_waiting_writer(sqlite_log, mode):
    env, database = sqlite_log
    before = verified(env) + 1
    fd = _hold_audit_lock(database)
    try:
        proc = _lock_waiter(env, mode)
        # The append found the lock taken, and the process's main greenlet (thread) ran on meanwhile. With a
        # blocking flock under gevent, every greenlet stopped until the release below.
        line = _first_line(proc, within=60)
    finally:
        os.close(fd)  # released: the waiting append takes it
    out, _ = proc.communicate(timeout=120)
    assert line == "waiting\n"
    assert proc.returncode == 0
    assert json.loads(out) == {"written": 1}
    assert verified(env) == before + 1


def test_an_audit_lock_never_released_fails_the_append_as_a_busy_database(sqlite_log):
    env, database = sqlite_log
    before = verified(env) + 1
    fd = _hold_audit_lock(database)
    try:
        proc = _lock_waiter(env, "gevent", "0.2")  # busy timeout 0.2 s
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0
    assert out.splitlines() == [
        "waiting",
        json.dumps({"error": "database is locked (no audit log lock within the busy timeout)"}),
    ]
    # Nothing written, and the chain is intact.
    assert verified(env) == before
