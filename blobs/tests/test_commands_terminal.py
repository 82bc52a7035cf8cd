"""The operator commands as a person meets them: ``manage.py`` in a real process, its output on a pseudo-
terminal (a progress bar drawn, the audit log's JSON lines whole between its redraws) or piped (no bar at
all), and mistakes answered with one line and a non-zero exit, no traceback.

Each run is a fresh interpreter with production settings (JSON logs, audit events on stderr) against a
SQLite database of its own (blobs.tests.liveserver.server_env), as an operator's shell would run it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import secrets
import select
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass

import pytest

from blobs.tests.factories import pattern
from blobs.tests.liveserver import ROOT, prepare_database, server_env

BAR = re.compile(r"\d+%\|")  # tqdm's "42%|████ |"


@dataclass
class Done:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    var_dir = tmp_path_factory.mktemp("cli")
    environ = server_env(var_dir, username="admin", password=secrets.token_urlsafe(16), key_id="mk-cli")
    prepare_database(environ)
    return environ


@pytest.fixture(scope="module")
def imported(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """One blob of 3 MiB (a few hundred segments: the verify bar moves within it)."""
    data = pattern(3 << 20)
    source = tmp_path_factory.mktemp("import") / "big.bin"
    source.write_bytes(data)
    done = piped(env, "blobs_import", str(source), "--owner", "admin")
    assert done.code == 0, done.err
    blob_id, _path = done.out.strip().split("\t")
    return blob_id, data


def piped(env: dict[str, str], *args: str) -> Done:
    """``manage.py *args`` with stdout and stderr on pipes. Without the system checks: this production-like
    install has no S3 checkpoint bucket nor metrics token, and their warnings are not what is tested."""
    proc = subprocess.run(
        [sys.executable, "manage.py", *args, "--skip-checks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


def on_terminal(env: dict[str, str], *args: str) -> Done:
    """``manage.py *args`` with stdout and stderr on one pseudo-terminal of 120 columns; ``out`` is all the
    terminal received (carriage returns included), ``err`` is empty."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args, "--skip-checks"],  # as piped() does
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    received = bytearray()
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 120)
            if not ready:
                raise AssertionError(f"no output for 120 s:\n{received.decode(errors='replace')}")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal's last other end
                break
            if not chunk:
                break
            received += chunk
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    # The terminal turns each "\n" into "\r\n" (onlcr); a bare "\r" is the bar redrawing itself.
    return Done(code, received.decode(errors="replace").replace("\r\n", "\n"), "")


def log_lines(text: str) -> list[str]:
    """Lines that carry an audit event or a log record (JSON), as the terminal shows them at the end: what
    follows the line's last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if '"event"' in line or '"action"' in line]


# --- progress bars ------------------------------------------------------------------------------------------


def test_verify_on_a_terminal_counts_bytes_and_log_lines_stay_whole(env, imported):
    done = on_terminal(env, "blobs_verify")
    assert done.code == 0, done.out
    assert BAR.search(done.out), done.out
    assert "3.00M/3.00M" in done.out  # bytes decrypted, not "1/1 blob"
    events = log_lines(done.out)
    assert events, done.out  # the blob.verify audit event was printed ...
    for line in events:
        assert json.loads(line)  # ... whole, on a line of its own: not glued to a bar's redraw
    assert "\x1b[31m" not in done.out  # nothing painted as an error


def test_verify_piped_draws_no_bar(env, imported):
    done = piped(env, "blobs_verify")
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == "total\t1\t0"
    assert "\r" not in done.err
    assert not BAR.search(done.err)
    for line in done.err.splitlines():
        assert json.loads(line)  # stderr carries the audit events, one JSON object per line, nothing else


def test_export_to_a_file_on_a_terminal_shows_a_byte_bar_and_a_plain_note(env, imported, tmp_path):
    blob_id, data = imported
    target = tmp_path / "out.bin"
    done = on_terminal(env, "blobs_export", blob_id, "-o", str(target))
    assert done.code == 0, done.out
    assert target.read_bytes() == data
    assert "3.00M/3.00M" in done.out
    assert f"Wrote {target}" in done.out
    assert "\x1b[31m" not in done.out  # success is not red
    for line in log_lines(done.out):
        assert json.loads(line)


def test_rewrap_on_a_terminal_shows_a_bar(env, imported):
    # A new active key, so that there is something to rewrap; the old one stays for the tests after this.
    env["BLOB_MASTER_KEYS"] = f"mk-new:{base64.b64encode(os.urandom(32)).decode()},{env['BLOB_MASTER_KEYS']}"
    done = on_terminal(env, "blobs_rewrap")
    assert done.code == 0, done.out
    assert BAR.search(done.out), done.out
    assert "1/1" in done.out  # blobs, not bytes: a rewrap moves a wrapped key, whatever the blob's size
    assert "rewrapped\t1" in done.out
    for line in log_lines(done.out):
        assert json.loads(line)


def test_reencrypt_on_a_terminal_counts_bytes(env, imported, tmp_path):
    blob_id, data = imported
    done = on_terminal(env, "blobs_reencrypt")
    assert done.code == 0, done.out
    assert "3.00M/3.00M" in done.out  # every byte is rewritten: the bar moves within the one blob
    assert "re-encrypted\t1" in done.out
    for line in log_lines(done.out):
        assert json.loads(line)
    assert piped(env, "blobs_export", blob_id, "-o", str(tmp_path / "after")).code == 0
    assert (tmp_path / "after").read_bytes() == data


# --- mistakes: one line, non-zero exit ----------------------------------------------------------------------


def one_line_error(done: Done, *fragments: str) -> None:
    assert done.code != 0
    assert "Traceback" not in done.err
    [line] = done.err.strip().splitlines()
    for fragment in fragments:
        assert fragment in line, line


def test_verify_unknown_provider_or_key_ref_is_an_error(env, imported):
    one_line_error(piped(env, "blobs_verify", "--provider", "bogus"), "No key provider 'bogus'", "local")
    one_line_error(piped(env, "blobs_verify", "--key-ref", "nope"), "key ref 'nope'", "nothing verified")


def test_export_mistakes(env, imported, tmp_path):
    blob_id, _data = imported
    missing = tmp_path / "missing" / "dir" / "file"
    done = piped(env, "blobs_export", blob_id, "-o", str(missing))
    one_line_error(done, f"{missing.parent} does not exist")
    assert not (tmp_path / "missing").exists()
    one_line_error(piped(env, "blobs_export", blob_id, "-o", str(tmp_path)), "is a directory")

    refused = on_terminal(env, "blobs_export", blob_id)
    assert refused.code == 1
    assert "stdout is a terminal" in refused.out
    assert len(refused.out) < 200  # that line, and no binary on the screen


def test_rewrap_batch_size_zero_is_refused_dry_run_too(env, imported):
    for args in (("--batch-size", "0"), ("--batch-size", "0", "--dry-run")):
        done = piped(env, "blobs_rewrap", *args)
        assert done.code == 2
        one_line_error(done, "blobs_rewrap: error: argument --batch-size: must be at least 1 (got 0)")
        assert done.out == ""
    one_line_error(piped(env, "blobs_verify", "--sample", "x"), "--sample: 'x' is not a whole number")
    assert "usage:" in piped(env, "blobs_verify", "--help").out  # --help still shows it


def test_audit_verify_names_the_missing_export(env, tmp_path):
    export = tmp_path / "events.jsonl"
    one_line_error(piped(env, "audit_verify", "--export", str(export)), f"Cannot read {export}: no such file")
    export.write_text("")
    done = piped(env, "audit_verify", "--export", str(export))
    one_line_error(done, f"Cannot read {export}.manifest.json: no such file")


def test_audit_export_into_a_missing_directory(env, tmp_path):
    target = tmp_path / "nope" / "events.jsonl"
    one_line_error(piped(env, "audit_export", "-o", str(target)), f"Cannot write {target}")
