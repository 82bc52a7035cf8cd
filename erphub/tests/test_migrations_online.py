"""Migrations run while the previous release serves traffic (docs/scaling-out.md "Migrations while serving").

The rule (expand, then contract): a release's migrations only add — tables, nullable columns or columns with a
database default, indexes — so the code still serving, which knows nothing of them, keeps working. Dropping or
renaming what that code uses waits for a later release that no longer uses it. ``migrate`` runs with a
``lock_timeout``, so a DDL statement that cannot get its lock fails (and is retried) instead of queueing every
request behind it.

Two tests: every migration added from now on follows the rule (operations checked, exceptions listed with a
reason), and the real newest migrations are applied to PostgreSQL while the release before them (that commit's
source, exported from git) serves uploads and ranged downloads — not one request fails.
"""

from __future__ import annotations

import io
import random
import re
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.db.models.fields import NOT_PROVIDED

from blobs.tests.liveserver import ROOT, Gunicorn, ServerError, Session, manage, server_env

#: The project's apps (third-party migrations are theirs to keep safe).
PROJECT = ("core", "kms", "audit", "flags", "blobs", "erphub")

# --- the rule, on every migration -------------------------------------------------------------------------

#: Operations that remove or rename what the previous release's code reads or writes.
BREAKING = (
    migrations.RemoveField,
    migrations.DeleteModel,
    migrations.RenameField,
    migrations.RenameModel,
    migrations.AlterModelTable,
)
#: Migrations allowed to break the rule, with why that was safe (reviewed by hand). Only with a reason.
REVIEWED = {
    # AlterField of the state's choices: no SQL (choices live in Python); RemoveConstraint/AddConstraint
    # replaced a CHECK with a narrower one no row violated, since no code had ever written "failed".
    ("blobs", "0002_no_failed_state"): "choices only; no row in the removed state",
}


def _problems(
    app: str,
    name: str,
    migration: migrations.Migration,
    state_models: set[str],
    changes_schema: Callable[[migrations.AlterField], bool] = lambda op: True,
) -> list[str]:
    problems = []
    for op in migration.operations:
        if isinstance(op, BREAKING):
            problems.append(f"{type(op).__name__} ({op.describe()})")
        elif isinstance(op, migrations.AlterField) and changes_schema(op):
            problems.append(f"AlterField {op.model_name}.{op.name}: may rewrite or lock the table")
        elif isinstance(op, migrations.AddField) and op.model_name.lower() in state_models:
            field = op.field
            has_db_default = field.db_default is not NOT_PROVIDED
            if not field.null and not field.has_default() and not has_db_default:
                problems.append(f"AddField {op.model_name}.{op.name}: NOT NULL without a default")
            elif not field.null and not has_db_default:
                # Django fills existing rows with the Python default, then drops the column DEFAULT: rows
                # the previous release inserts afterwards (it does not know the column) then fail.
                problems.append(f"AddField {op.model_name}.{op.name}: NOT NULL needs db_default, not default")
    return problems


@pytest.mark.backend_settings  # the configured backend's schema editor tells what a change alters
def test_every_migration_only_adds_what_the_previous_release_can_ignore():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    found: dict[tuple[str, str], list[str]] = {}
    for key in loader.graph.nodes:
        app, name = key
        if app not in PROJECT:
            continue
        # Models that existed before this migration: adding to them is where the old code is affected.
        before = loader.project_state([parent.key for parent in loader.graph.node_map[key].parents])
        existing = {model_name for (model_app, model_name) in before.models if model_app == app}
        after = loader.project_state(key)

        def changes_schema(op: migrations.AlterField, app: str = app, before=before, after=after) -> bool:
            # Django's own test of whether an AlterField emits SQL: a help text, verbose name or choices
            # (Field.non_db_attrs) change nothing in the database.
            old = before.apps.get_model(app, op.model_name)._meta.get_field(op.name)
            new = after.apps.get_model(app, op.model_name)._meta.get_field(op.name)
            # Not entered: no SQL runs, the editor only compares the two fields' deconstructions.
            return connection.schema_editor()._field_should_be_altered(old, new)

        problems = _problems(app, name, loader.graph.nodes[key], existing, changes_schema)
        if problems and key not in REVIEWED:
            found[key] = problems
    assert not found, (
        "Migrations the serving release may not survive (docs/scaling-out.md, 'Migrations while serving'): "
        f"{found}. Split them: add now, remove in a later release; or list one in REVIEWED with the reason."
    )


def test_the_rule_catches_what_breaks_the_previous_release():
    from django.db import models

    bad = migrations.Migration("0099_bad", "blobs")
    bad.operations = [
        migrations.RemoveField(model_name="blob", name="filename"),
        migrations.RenameField(model_name="blob", old_name="size", new_name="length"),
        migrations.AddField(model_name="blob", name="tenant", field=models.IntegerField()),
        migrations.AddField(model_name="blob", name="tier", field=models.IntegerField(default=1)),
        migrations.AddField(model_name="blob", name="ok", field=models.IntegerField(db_default=1)),
        migrations.AddField(model_name="blob", name="note", field=models.TextField(null=True)),
    ]
    problems = _problems("blobs", bad.name, bad, {"blob"})
    assert [p.split(" ")[0] for p in problems] == ["RemoveField", "RenameField", "AddField", "AddField"]
    assert "tenant" in problems[2]
    assert "db_default" in problems[3]


# --- the newest real migrations, applied under load ---------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"needs the git history: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _migrations_at(commit: str) -> set[str]:
    listing = _git("ls-tree", "-r", "--name-only", commit, "--", *(f"{app}/migrations" for app in PROJECT))
    return {path for path in listing.split() if re.fullmatch(r"\w+/migrations/\d{4}_\w+\.py", path)}


def _number(path: str) -> tuple[str, str]:
    app, _, name = path.split("/")
    return app, name[:4]


def previous_release(newest: int = 2) -> tuple[str, list[str]]:
    """The release before the ``newest`` most recently added migrations, and those migrations (their names
    today). Releases are main's first-parent commits: a branch's migrations arrive with its merge, under their
    final names, however they were renamed on the branch."""
    commits = _git("rev-list", "--first-parent", "HEAD").split()
    head = later = _migrations_at(commits[0])
    added: list[str] = []
    for commit in commits[1:]:
        here = _migrations_at(commit)
        added += sorted(path for path in later - here if path in head and path not in added)
        # The previous release has none of them, not even under another name with the same number.
        if len(added) >= newest and not {_number(p) for p in here} & {_number(p) for p in added[:newest]}:
            return commit, added[:newest]
        later = here
    pytest.skip("fewer migrations than needed in the history")


def export_tree(commit: str, target: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def test_the_newest_migrations_apply_while_the_previous_release_serves(tmp_path, postgres_database):
    commit, pending = previous_release()
    old_tree = export_tree(commit, tmp_path / "previous-release")
    password = secrets.token_urlsafe(18)
    env = server_env(
        tmp_path / "var", username="admin", password=password, key_id="mig-1", DATABASE_URL=postgres_database
    )
    (tmp_path / "var").mkdir()
    for args in (("migrate", "--noinput", "-v", "0"), ("createsuperuser", "--noinput")):
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=old_tree, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    server = Gunicorn.start(env, tmp_path / "gunicorn.log", timeout=60, name="previous", cwd=old_tree)
    try:
        try:
            server.wait_until_healthy(60)
        except ServerError as exc:
            pytest.fail(str(exc))
        session = Session(server, timeout=30)
        session.login("admin", password)
        data = random.Random(3).randbytes(300_000)
        blob = upload(session, data, "before.bin")
        stop = threading.Event()
        results: list[str] = []

        def traffic(n: int) -> None:
            mine = Session(server, timeout=30)
            mine.cookies = dict(session.cookies)
            while not stop.is_set():
                start = random.randrange(len(data) - 100)
                reply = mine.request(
                    "GET",
                    f"/secure/files/{blob['id']}/stream",
                    headers={"Range": f"bytes={start}-{start + 99}"},
                )
                ok = reply.status == 206 and reply.body == data[start : start + 100]
                results.append("ok" if ok else f"range {reply.status} {reply.body[:200]!r}")
                if n == 0:  # one thread also writes: uploads (and their audit events) while tables change
                    listing = mine.request("GET", "/secure/files/")
                    results.append("ok" if listing.status == 200 else f"list {listing.status}")
                    try:
                        upload(mine, b"during the migration", "during.txt")
                        results.append("ok")
                    except AssertionError as exc:
                        results.append(f"upload {exc}")

        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            while len(results) < 10:  # traffic is flowing before the migration starts
                time.sleep(0.05)
            # The documented procedure: the current release's migrate, with a lock timeout.
            out = manage({**env, "PGOPTIONS": "-c lock_timeout=5s"}, "migrate", "--noinput", timeout=300)
            during = len(results)
            while len(results) < during + 10:  # and after it, against the new schema
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        for path in pending:
            app, name = path.split("/")[0], Path(path).stem
            assert f"Applying {app}.{name}... OK" in out, out
        failures = [r for r in results if r != "ok"]
        print(f"previous release {commit}: {len(results)} requests, migrations {pending} applied under load")
        assert not failures, failures[:5]
        assert "Traceback" not in server.log_tail(100_000)
    finally:
        server.stop()


def upload(session: Session, data: bytes, filename: str) -> dict:
    reply = session.request(
        "POST",
        f"/secure/files/?{urlencode({'filename': filename})}",
        body=data,
        headers={"Content-Type": "application/octet-stream", **session.csrf_headers()},
    )
    assert reply.status == 201, f"{reply.status} {reply.body[:200]!r}"
    return reply.json()
