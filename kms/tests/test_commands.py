"""``manage.py local_master_key``: create, add (rotate), list — never printing key material."""

from __future__ import annotations

import base64
import io
import os
import stat

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from kms.providers.local import LocalKeyProvider, parse_keys

pytestmark = pytest.mark.django_db  # key changes are audited


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("local_master_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def key_material(path) -> list[str]:
    return [base64.b64encode(key).decode() for _id, key in parse_keys(path.read_text(), source="t")]


@pytest.fixture
def key_file(tmp_path, settings):
    settings.DEBUG = True  # development, where `make run` creates the key (pytest-django turns DEBUG off)
    settings.BLOB_MASTER_KEYS = None
    path = tmp_path / "keys" / "master.key"
    settings.BLOB_MASTER_KEY_FILE = path
    return path


def test_create_makes_a_0600_file_once(key_file):
    out, err = run("--create")
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "Created" in err
    assert "Back it up" in err
    before = key_file.read_text()
    for secret in key_material(key_file):
        assert secret not in out + err

    out, err = run("--create")
    assert "Kept existing" in err
    assert key_file.read_text() == before


def test_create_refuses_to_invent_a_key_in_production(key_file, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError) as info:
        run("--create")
    message = str(info.value)
    assert str(key_file) in message
    assert "Restore the key file from backup" in message
    assert "--allow-production" in message
    assert not key_file.exists()


def test_create_in_production_with_allow_production_makes_the_first_key(key_file, settings):
    settings.DEBUG = False
    _out, err = run("--create", "--allow-production")
    assert "Created" in err
    assert len(parse_keys(key_file.read_text(), source="t")) == 1
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_create_in_production_keeps_an_existing_file_without_the_flag(key_file, settings):
    run("--create")
    before = key_file.read_text()
    settings.DEBUG = False
    _out, err = run("--create")  # `make run` on an installed machine: nothing to invent, nothing to refuse
    assert "Kept existing" in err
    assert key_file.read_text() == before


def test_create_with_explicit_file(tmp_path, settings):
    settings.DEBUG = True
    settings.BLOB_MASTER_KEYS = f"mk-env:{base64.b64encode(os.urandom(32)).decode()}"
    target = tmp_path / "other.key"
    run("--create", "--file", str(target))  # --file wins even when keys come from the environment
    assert len(parse_keys(target.read_text(), source="t")) == 1


def test_add_prepends_an_active_key_and_keeps_old_ones(key_file):
    run("--create")
    ((old_id, _),) = parse_keys(key_file.read_text(), source="t")
    out, err = run("--add")
    new_id = out.strip()
    assert new_id != old_id
    assert new_id in err
    assert [k for k, _ in parse_keys(key_file.read_text(), source="t")] == [new_id, old_id]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for secret in key_material(key_file):
        assert secret not in out + err
    assert LocalKeyProvider(alias="local", key_file=str(key_file)).active_key_ref() == new_id
    # Both changes are in the audit log: the key ids and the file, never a key.
    events = list(AuditEvent.objects.filter(target_type="key").order_by("sequence"))
    assert [(e.action, e.target_id) for e in events] == [
        ("kms.master_key_create", f"local:{old_id}"),
        ("kms.master_key_add", f"local:{new_id}"),
    ]
    assert all(e.actor.startswith("system:cli:") and e.details == {"file": str(key_file)} for e in events)
    for secret in key_material(key_file):
        assert all(secret not in str(e.details) for e in events)


def test_list_shows_ids_and_roles_never_keys(key_file):
    run("--create")
    run("--add")
    ids = [k for k, _ in parse_keys(key_file.read_text(), source="t")]
    out, err = run()
    assert out.splitlines() == [f"{ids[0]}\tactive", f"{ids[1]}\tunwrap-only"]
    for secret in key_material(key_file):
        assert secret not in out + err


def test_list_or_add_without_a_file_is_a_command_error(key_file):
    with pytest.raises(CommandError, match=str(key_file)):
        run()
    with pytest.raises(CommandError, match=f"{key_file} does not exist: create it with --create"):
        run("--add")
    assert not key_file.exists()


def test_malformed_file_is_a_command_error_without_rewriting_it(key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_text("mk-1:not-base64!\n")
    with pytest.raises(CommandError, match="not valid base64"):
        run("--add")
    assert key_file.read_text() == "mk-1:not-base64!\n"


def test_env_keys_are_not_managed_as_a_file(key_file, settings):
    secret = base64.b64encode(os.urandom(32)).decode()
    settings.BLOB_MASTER_KEYS = f"mk-env:{secret}"
    out, err = run("--create")
    assert "BLOB_MASTER_KEYS is set" in err
    assert secret not in out + err
    assert not key_file.exists()


def test_create_and_add_are_exclusive(key_file):
    with pytest.raises(CommandError):
        run("--create", "--add")


def test_first_production_key_can_be_created_although_checks_need_one(tmp_path):
    # System checks load the keys (kms.E003 without one); the command that makes the first key must not
    # depend on them. A real manage.py process, as an operator runs it.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    key_file = tmp_path / "keys" / "master.key"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "x" * 50,
        "ERPHUB_VAR_DIR": str(tmp_path / "var"),
        "BLOB_MASTER_KEY_FILE": str(key_file),
    }
    manage = [sys.executable, str(root / "manage.py")]
    run = subprocess.run([*manage, "check"], env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "kms.E003" in run.stderr
    run = subprocess.run(
        [*manage, "local_master_key", "--create", "--allow-production"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Created master key file" in run.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
