"""The root conftest.py's ``--database-only`` (CI's second, PostgreSQL run): it keeps every test that can
reach the database and only those, and a test that takes the database without saying so fails the
whole-suite run instead of silently losing its PostgreSQL run. Each case runs in a pytest of its own
(database_only_cases.py), on the suite's database settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = "erphub/tests/database_only_cases.py"


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _collected(*args: str) -> set[str]:
    done = _pytest("--collect-only", CASES, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split("::")[1] for line in done.stdout.splitlines() if line.startswith(f"{CASES}::")}


def test_database_only_keeps_the_tests_that_can_reach_the_database():
    kept = {"test_marked", "test_backend_settings", "test_db_fixture"}
    assert _collected() == kept | {"test_pure", "test_database_at_run_time"}
    assert _collected("--database-only") == kept


def test_the_declared_database_tests_pass_and_the_undeclared_one_is_refused():
    done = _pytest(CASES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 passed, 1 error" in done.stdout
    assert "test_database_at_run_time gets the database through 'db' at run time" in done.stdout
