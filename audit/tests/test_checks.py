"""System checks for the audit configuration."""

from __future__ import annotations

import sys

import pytest

from audit.checks import check_audit_settings, checkpoint_storage_problems, database_problems

S3 = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "b", "file_overwrite": False}}
LOCAL = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": "/tmp/x"}}


def ids(settings_problems) -> set[str]:
    return {problem.id for problem in settings_problems}


@pytest.mark.backend_settings
def test_the_shipped_configuration_passes(settings):
    settings.DEBUG = True  # development: checkpoints in a local directory are expected there
    assert check_audit_settings() == []


def test_bad_trusted_proxy_is_an_error(settings):
    settings.AUDIT = {**settings.AUDIT, "TRUSTED_PROXIES": ["10.0.0.0/8", "not-a-net"]}
    assert "audit.E001" in ids(check_audit_settings())


def test_missing_checkpoint_storage_is_an_error(settings):
    settings.STORAGES = {k: v for k, v in settings.STORAGES.items() if k != "audit_checkpoints"}
    assert "audit.E002" in ids(check_audit_settings())


def test_sqlite_without_immediate_transactions_is_an_error():
    sqlite = {"ENGINE": "django.db.backends.sqlite3"}
    assert ids(database_problems({**sqlite, "OPTIONS": {}})) == {"audit.E003"}
    assert database_problems({**sqlite, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}) == []
    assert ids(database_problems({"ENGINE": "django.db.backends.mysql"})) == {"audit.W001"}


def test_the_engines_the_settings_choose_carry_the_triggers():
    # erphub/settings.py swaps Django's engines for ours (core/backends): still SQLite and PostgreSQL.
    immediate = {"OPTIONS": {"transaction_mode": "IMMEDIATE"}}
    assert database_problems({"ENGINE": "core.backends.sqlite3", **immediate}) == []
    assert database_problems({"ENGINE": "core.backends.postgresql"}) == []


def test_retention_must_be_positive(settings):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 0}
    assert [problem.id for problem in check_audit_settings()].count("audit.E004") == 1


def test_local_checkpoints_in_production_are_a_warning(settings):
    settings.DEBUG = False
    assert "audit.W002" in ids(check_audit_settings())
    [warning] = checkpoint_storage_problems(LOCAL, debug=False)
    assert "not write-once" in warning.msg
    assert "AUDIT_CHECKPOINT_BUCKET" in warning.hint
    assert checkpoint_storage_problems(LOCAL, debug=True) == []
    assert checkpoint_storage_problems(S3, debug=False) == []


def test_a_missing_storage_sdk_is_an_error_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "storages.backends.s3", None)  # the import fails as if not installed
    [error] = checkpoint_storage_problems(S3, debug=False)
    assert error.id == "audit.E005"
    assert "pip install -r requirements.txt" in error.hint
