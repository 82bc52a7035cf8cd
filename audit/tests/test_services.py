"""audit/services.py is the one place other apps import audit services from: it re-exports each service
from the module of its job, and nothing else."""

from __future__ import annotations

import importlib

from audit import services

HOMES = {
    "audit_record": "audit.recording",
    "audit_record_after": "audit.recording",
    "request_context": "audit.context",
    "audit_chain_status": "audit.verification",
    "audit_checkpoint": "audit.verification",
    "legal_hold_create": "audit.holds",
    "legal_hold_release": "audit.holds",
    "legal_hold_covering": "audit.holds",
    "register_hold_target": "audit.holds",
    "HoldTarget": "audit.holds",
    "audit_purge": "audit.retention",
    "audit_export": "audit.export",
    "audit_export_verify": "audit.export",
}


def test_the_facade_re_exports_each_service_from_its_home():
    assert sorted(services.__all__) == sorted(HOMES)
    for name, home in HOMES.items():
        assert getattr(services, name) is getattr(importlib.import_module(home), name), name


def test_the_facade_defines_nothing_of_its_own():
    public = {name for name in vars(services) if not name.startswith("_") and name != "annotations"}
    assert public == set(HOMES)
