"""System checks for the audit configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.files.storage import FileSystemStorage
from django.utils.module_loading import import_string

from .conf import audit_setting
from .remote import parse_networks


@register()
def check_audit_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    try:
        parse_networks(audit_setting("TRUSTED_PROXIES"))
    except ValueError as exc:
        problems.append(Error(f"TRUSTED_PROXIES: {exc}", id="audit.E001"))
    alias = audit_setting("CHECKPOINT_STORAGE")
    if alias not in settings.STORAGES:
        problems.append(
            Error(f"STORAGES has no {alias!r} alias for audit checkpoints.", hint="Add one.", id="audit.E002")
        )
    else:
        problems.extend(checkpoint_storage_problems(settings.STORAGES[alias], debug=settings.DEBUG))
    problems.extend(database_problems(settings.DATABASES["default"]))
    if audit_setting("RETENTION_DAYS") < 1:
        problems.append(Error("AUDIT RETENTION_DAYS must be at least 1.", id="audit.E004"))
    return problems


def checkpoint_storage_problems(config: Any, *, debug: bool) -> list[Any]:
    """A missing backend SDK fails at start-up, not at the first checkpoint; a local directory in production
    is reported, because the checkpoints exist to outlive someone who can rewrite the database."""
    try:
        backend = import_string(config["BACKEND"])
    except ImportError as exc:
        return [
            Error(
                f"The audit checkpoint storage {config['BACKEND']!r} cannot be imported ({exc}).",
                hint="pip install -r requirements.txt (django-storages[s3] for AUDIT_CHECKPOINT_BUCKET).",
                id="audit.E005",
            )
        ]
    if not debug and isinstance(backend, type) and issubclass(backend, FileSystemStorage):
        return [
            Warning(
                "Audit checkpoints are kept in a local directory: checkpoints on the same machine as the "
                "database are not write-once.",
                hint="Set AUDIT_CHECKPOINT_BUCKET to an S3 bucket with Object Lock (deploy/README.md).",
                id="audit.W002",
            )
        ]
    return []


def database_problems(database: Any) -> list[Any]:
    problems: list[Any] = []
    engine = database.get("ENGINE", "")
    if engine.endswith("sqlite3") and database.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
        problems.append(
            Error(
                "SQLite without transaction_mode='IMMEDIATE': concurrent audit appends could fail with "
                "'database is locked' instead of queueing.",
                id="audit.E003",
            )
        )
    elif not engine.endswith(("sqlite3", "postgresql")):
        problems.append(
            Warning(
                "The audit log's append-only triggers exist for SQLite and PostgreSQL only.", id="audit.W001"
            )
        )
    return problems
