"""System checks for the audit configuration."""

from __future__ import annotations

from audit.checks import check_audit_settings, database_problems


def ids(settings_problems) -> set[str]:
    return {problem.id for problem in settings_problems}


def test_the_shipped_configuration_passes():
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


def test_retention_must_be_positive(settings):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 0}
    assert "audit.E004" in ids(check_audit_settings())
