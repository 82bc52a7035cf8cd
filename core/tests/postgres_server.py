"""A private PostgreSQL for tests that restart it (never the machine's PostgreSQL service on 5432).

``initdb`` into a fresh directory (trust authentication, superuser ``postgres``), then ``postgres`` on its
own loopback port with its socket in that directory; stopped and started again by its PID, on the same port,
so that clients reconnect to the same address. initdb and postgres refuse to run as root: as root, both run
as the ``postgres`` OS user (the directory is given to that user). Standard library only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
# Debian's layout (postgresql-NN); the newest installed major version wins.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
# Env flag .ci/run sets: there a missing initdb fails the test instead of skipping it.
REQUIRED = os.environ.get("REQUIRE_POSTGRES_SERVER") == "1"


def bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None if they are not installed."""
    candidates = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("postgres") else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``start()`` / ``stop()`` as often as needed (``stop()`` is PostgreSQL's fast shutdown); ``close()``
    stops it and removes its directory."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root (0700), and the server may run as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="erphub-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: int | None = None
        self._group: int | None = None
        self._extra_groups: list[int] | None = None
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._user, self._group, self._extra_groups = account.pw_uid, account.pw_gid, []
        self._run(
            [
                str(binaries / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",  # a throwaway cluster: durability across a machine crash is not needed
            ]
        )

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
            group=self._group,
            extra_groups=self._extra_groups,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binaries / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    f"listen_addresses={HOST}",
                    "-c",
                    "fsync=off",  # as --no-sync: nothing here must survive a power cut
                ],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._user,
                group=self._group,
                extra_groups=self._extra_groups,
            )
        deadline = time.monotonic() + timeout
        while not self.accepting():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"postgres on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)

    def accepting(self) -> bool:
        """True once a query answers (a port that is open may still say "the database system is starting
        up")."""
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, every client connection is closed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown
                self.proc.wait(timeout=timeout)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
