"""Every change to a blob row is an audit event written in the change's transaction, with old -> new values
(issue 15 item 1; docs/architecture.md §8, "in the change's transaction").

Two halves that keep each other honest:

- **The census** reads the source of every application module (tests and migrations aside) and lists each
  function that writes a ``Blob`` row: ``.save()``, ``.update()``, ``.delete_rows()``, ``.create()``, ... on
  ``Blob.objects``, on a name or attribute that holds a blob, or on what a function annotated to return a
  ``Blob``/``BlobQuerySet`` gives back. That list must equal the writers the cases below drive: a new writer
  fails ``test_every_blob_writer_is_driven_by_a_case`` until it is audited and given a case here.
- **The cases** drive each writer through the real services (real database, KMS, storage) while watching
  the SQL: every write to the blob table must come from the writers the case names (and the census must know
  them), must be followed by the case's audit event for that blob carrying its old -> new values, and — with
  the database refusing the audit insert — must leave the blob table exactly as it was (the same
  transaction, not "an event soon after").
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, OperationalError, connection
from django.utils import timezone

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.rotation import blob_move_storage, blob_reencrypt, blob_rewrap, rotation_target
from blobs.services import (
    BlobUpload,
    blob_claim,
    blob_delete,
    blob_mark_integrity_failure,
    blob_transfer_ownership,
    blob_verify,
    blobs_gc,
)
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, make_user, pattern

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]

ROOT = Path(__file__).resolve().parents[2]
#: The project's own packages: what the census reads and what a write is attributed to at run time.
PACKAGES = ("blobs", "audit", "kms", "flags", "erphub", "core")

# --------------------------------------------------------------------------------------------------------
# The census: which functions write a Blob row (static, over the source)
# --------------------------------------------------------------------------------------------------------

#: Model and queryset methods that write rows.
WRITE_METHODS = frozenset(
    {
        "save",
        "update",
        "delete",
        "delete_rows",
        "create",
        "bulk_create",
        "bulk_update",
        "update_or_create",
        "get_or_create",
    }
)
#: Annotations naming a blob or a queryset of blobs (not BlobStore, BlobReader, ...).
BLOB_TYPE = re.compile(r"\bBlob\b|\bBlobQuerySet\b")
#: Names and attributes that hold a blob by this codebase's naming: blob, blobs, self.blob, old_blob.
BLOB_NAME = re.compile(r"(?:\w*_)?blobs?")
MANAGERS = frozenset({"objects", "_default_manager", "_base_manager"})


def source_modules(root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(dotted module name, source) of every application module, tests and migrations aside."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            yield ".".join(parts), path.read_text(encoding="utf-8")


def blob_returning_functions(sources: list[tuple[str, str]]) -> frozenset[str]:
    """Names of functions annotated to return a blob or a blob queryset (``_unchanged`` in rotation)."""
    names = set()
    for _module, source in sources:
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.returns is not None
                and BLOB_TYPE.search(ast.unparse(node.returns))
            ):
                names.add(node.name)
    return frozenset(names)


class _Census(ast.NodeVisitor):
    def __init__(self, module: str, returning: frozenset[str]) -> None:
        self.module = module
        self.returning = returning
        self.scope: list[str] = []
        self.writers: set[str] = set()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # The qualified name as CPython spells it (co_qualname), so the run-time attribution matches.
        self.scope.append(node.name)
        qualname = ".".join(self.scope)
        typed = {
            arg.arg
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
            if arg.annotation is not None and BLOB_TYPE.search(ast.unparse(arg.annotation))
        }
        for child in _own_nodes(node):
            if isinstance(child, ast.Assign | ast.AnnAssign) and child.value is not None:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                holds_blob = self._blobish(child.value, typed) or (
                    isinstance(child, ast.AnnAssign) and BLOB_TYPE.search(ast.unparse(child.annotation))
                )
                if holds_blob:
                    typed.update(t.id for t in targets if isinstance(t, ast.Name))
            elif (
                isinstance(child, ast.For)
                and isinstance(child.target, ast.Name)
                and self._blobish(child.iter, typed)
            ):
                typed.add(child.target.id)
        for child in _own_nodes(node):
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in WRITE_METHODS
                and self._blobish(child.func.value, typed)
            ):
                self.writers.add(f"{self.module}:{qualname}")
        self.scope.append("<locals>")
        for child in ast.iter_child_nodes(node):
            self.visit(child)
        self.scope.pop()
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _blobish(self, node: ast.expr, typed: set[str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id == "Blob" or node.id in typed or bool(BLOB_NAME.fullmatch(node.id))
        if isinstance(node, ast.Attribute):
            if BLOB_NAME.fullmatch(node.attr):
                return True
            return node.attr in MANAGERS and self._blobish(node.value, typed)
        if isinstance(node, ast.Subscript):
            return self._blobish(node.value, typed)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                return node.func.id in self.returning
            if isinstance(node.func, ast.Attribute):
                # A queryset chain (Blob.objects.filter(...).order_by()) still yields blobs; a method
                # of something else (blob.owner.get_username()) does not reach here as blobish.
                return self._blobish(node.func.value, typed)
        return False


def _own_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of ``function``'s body, nested functions and classes excluded (they are their own)."""
    nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
    stack: list[ast.AST] = [node for node in function.body if not isinstance(node, nested)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, nested))


def blob_writers(sources: list[tuple[str, str]]) -> set[str]:
    """``module:qualname`` of every function whose own body writes a Blob row."""
    returning = blob_returning_functions(sources)
    writers: set[str] = set()
    for module, source in sources:
        census = _Census(module, returning)
        census.visit(ast.parse(source))
        writers |= census.writers
    return writers


def test_the_census_finds_each_kind_of_blob_write():
    # The census must be able to fail: each way of writing a row below is found, and the look-alikes
    # (a hash's update, a storage delete, a user's save) are not.
    sample = """
def _unchanged(blob) -> BlobQuerySet: ...
def store_obj(name) -> BlobStore: ...

def instance_save(blob):
    blob.save(update_fields=["size"])
def manager_chain():
    Blob.objects.filter(pk=1).order_by().update(state="ready")
def annotated(obj: Blob):
    obj.delete()
def assigned():
    found = Blob.objects.get(pk=1)
    found.save()
def helper_queryset():
    _unchanged(None).update(key_ref="k")
def looped(queryset: "QuerySet[Blob]"):
    for item in queryset:
        item.save()
def created():
    Blob.objects.create(filename="x")
class Upload:
    def finish(self):
        self.blob.save()
    def abort(self):
        Blob.objects.filter(pk=self.pk).delete_rows()
def outer():
    def inner(old_blob):
        old_blob.save()
    return inner

def look_alikes(digest, store, user, blob):
    digest.update(b"x")
    store.delete("ab/cd/x")
    store_obj("x").delete("y")
    user.save()
    blob.owner.save()
    blob.refresh_from_db()
"""
    found = blob_writers([("sample", sample)])
    assert found == {
        f"sample:{name}"
        for name in (
            "instance_save",
            "manager_chain",
            "annotated",
            "assigned",
            "helper_queryset",
            "looped",
            "created",
            "Upload.finish",
            "Upload.abort",
            "outer.<locals>.inner",
        )
    }


# --------------------------------------------------------------------------------------------------------
# The cases: each writer driven through the real services
# --------------------------------------------------------------------------------------------------------


@dataclass
class Env:
    owner: Any
    heir: Any
    local_providers: Callable[..., None]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    #: The census's writers this case drives (module:qualname).
    writers: frozenset[str]
    setup: Callable[[Env], Any]
    act: Callable[[Env, Any], object]
    #: The audit event each changed row must get; None for the pending-row bookkeeping (see below).
    action: str | None
    outcome: str = "success"


def _finished_upload(env: Env, data: bytes = b"pending bytes") -> BlobUpload:
    upload = BlobUpload(owner=env.owner, filename="upload.txt", content_type="text/plain")
    upload.write(data)
    upload.finish()
    return upload


def _written_upload(env: Env) -> BlobUpload:
    upload = BlobUpload(owner=env.owner, filename="upload.txt", content_type="text/plain")
    upload.write(b"half an upl")
    return upload


def _crashed_upload(env: Env) -> BlobUpload:
    # What kill -9 mid-upload leaves: a pending row and its object, both idle for two hours.
    upload = _finished_upload(env)
    Blob.objects.filter(pk=upload.blob.pk).update(created_at=timezone.now() - timedelta(hours=2))
    path = Path(blob_store("blobs").storage.path(upload.blob.storage_name))
    old = timezone.now().timestamp() - 7200
    os.utime(path, (old, old))
    return upload


def _blob_under_old_key(env: Env) -> Blob:
    env.local_providers({"local": ["mk-1"]})
    blob = make_blob(env.owner, pattern(300))
    env.local_providers({"local": ["mk-2", "mk-1"]})
    return blob


def _pending_bookkeeping(env: Env, _: object) -> None:
    # Creating a pending row and recording its size and hash: the upload's own progress, invisible to
    # everyone. Not an event of its own (one more serialized append per upload); every pending row ends
    # audited in the transaction that ends it: the claim, the abort, or blobs_gc (cases below).
    upload = _finished_upload(env)
    env.state["pending"] = upload.blob.pk


CASES = [
    Case(
        "pending-bookkeeping",
        frozenset({"blobs.services:BlobUpload.__init__", "blobs.services:BlobUpload.finish"}),
        setup=lambda env: None,
        act=_pending_bookkeeping,
        action=None,
    ),
    Case(
        "claim",
        frozenset({"blobs.services:_mark_ready"}),
        setup=_finished_upload,
        act=lambda env, upload: blob_claim(upload=upload, owner=env.heir, filename="renamed.txt"),
        action="blob.upload",
    ),
    Case(
        "abort",
        frozenset({"blobs.services:_remove_pending"}),
        setup=_written_upload,
        act=lambda env, upload: upload.abort(),
        action="blob.upload",
        outcome="error",
    ),
    Case(
        "gc",
        frozenset({"blobs.services:_remove_pending"}),
        setup=_crashed_upload,
        act=lambda env, upload: blobs_gc(older_than=timedelta(hours=1)),
        action="blob.gc",
    ),
    Case(
        "delete",
        frozenset({"blobs.services:blob_delete"}),
        setup=lambda env: make_blob(env.owner, b"to delete"),
        act=lambda env, blob: blob_delete(blob=blob),
        action="blob.delete",
    ),
    Case(
        "transfer",
        frozenset({"blobs.services:blob_transfer_ownership"}),
        setup=lambda env: make_blob(env.owner, b"to give away"),
        act=lambda env, blob: blob_transfer_ownership(blob=blob, new_owner=env.heir),
        action="blob.transfer",
    ),
    Case(
        "rewrap",
        frozenset({"blobs.rotation:blob_rewrap"}),
        setup=_blob_under_old_key,
        act=lambda env, blob: blob_rewrap(blob=blob, target=rotation_target()),
        action="blob.rewrap",
    ),
    Case(
        "reencrypt",
        frozenset({"blobs.rotation:blob_reencrypt"}),
        setup=_blob_under_old_key,
        act=lambda env, blob: blob_reencrypt(blob=blob),
        action="blob.reencrypt",
    ),
    Case(
        "migrate-storage",
        frozenset({"blobs.rotation:blob_move_storage"}),
        setup=lambda env: make_blob(env.owner, b"to move"),
        act=lambda env, blob: blob_move_storage(blob=blob, to_alias=OTHER_STORAGE),
        action="blob.migrate_storage",
    ),
]


def _failed_integrity(env: Env) -> Blob:
    blob = make_blob(env.owner, b"restored from backup")
    Blob.objects.filter(pk=blob.pk).update(integrity_failed_at=timezone.now() - timedelta(days=1))
    return Blob.objects.get(pk=blob.pk)


CASES += [
    Case(
        "integrity-failure",
        frozenset({"blobs.services:blob_mark_integrity_failure"}),
        setup=lambda env: make_blob(env.owner, b"tampered with"),
        act=lambda env, blob: blob_mark_integrity_failure(blob_id=blob.pk, where="download"),
        action="blob.integrity_failure",
        outcome="error",
    ),
    Case(
        "verify-clears-integrity",
        frozenset({"blobs.services:blob_verify"}),
        setup=_failed_integrity,
        act=lambda env, blob: blob_verify(blob=blob),
        action="blob.verify",
    ),
]
AUDITED = [case for case in CASES if case.action is not None]


#: A second filesystem store, for the storage move (blobs_migrate_storage; S3 in test_migrate_storage.py).
OTHER_STORAGE = "blobs_elsewhere"


@pytest.fixture
def env(owner, local_providers, settings, tmp_path) -> Env:
    local_providers({"local": ["mk-1"]})
    settings.STORAGES = {
        **settings.STORAGES,
        OTHER_STORAGE: {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "elsewhere")},
        },
    }
    return Env(owner=owner, heir=make_user("heir"), local_providers=local_providers)


def rows() -> dict[Any, tuple[Any, ...]]:
    """Every blob row, every column: what "unchanged" is compared against."""
    names = [f.attname for f in Blob._meta.concrete_fields]
    return {
        values[0]: tuple(bytes(v) if isinstance(v, memoryview) else v for v in values)
        for values in Blob.objects.order_by().values_list(*names)
    }


_BLOB_WRITE = re.compile(rf'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?{Blob._meta.db_table}"?\s', re.I)
_AUDIT_INSERT = re.compile(rf'^\s*INSERT\s+INTO\s+"?{AuditEvent._meta.db_table}"?\s', re.I)


def _writer_of_this_statement() -> str:
    """``module:qualname`` of the innermost application function on the stack (as the census names it)."""
    frame = sys._getframe(2)
    while frame is not None:
        try:
            parts = Path(frame.f_code.co_filename).resolve().relative_to(ROOT).with_suffix("").parts
        except ValueError:
            parts = ()
        # models.py (BlobQuerySet.delete_rows) and our database backend (core/backends) are machinery a
        # write goes through: the census names the function that calls them, so does this.
        machinery = parts[-1:] == ("models",) or parts[:2] == ("core", "backends")
        if parts and parts[0] in PACKAGES and "tests" not in parts and not machinery:
            return f"{'.'.join(parts)}:{frame.f_code.co_qualname}"
        frame = frame.f_back
    return "<not application code>"


class BlobWrites:
    """Database execute wrapper: who wrote the blob table; optionally refuse audit inserts (a full disk, a
    lost connection: the audit write fails at the database, like audit/tests/test_integration.py does)."""

    def __init__(self, *, refuse_audit: bool = False) -> None:
        self.refuse_audit = refuse_audit
        self.writers: set[str] = set()

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if _BLOB_WRITE.match(sql):
            self.writers.add(_writer_of_this_statement())
        if self.refuse_audit and _AUDIT_INSERT.match(sql):
            raise OperationalError("audit insert refused by the test")
        return execute(sql, params, many, context)


def _last_sequence() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


def test_every_blob_writer_is_driven_by_a_case():
    found = blob_writers(list(source_modules()))
    driven = set().union(*(case.writers for case in CASES))
    assert found, "the census found no writer at all: it is broken"
    assert found - driven == set(), (
        "These functions write Blob rows but no case here drives them: record an audit event with old -> new "
        "values in the write's transaction, and add a case"
    )
    assert driven - found == set(), "These cases drive writers the census no longer finds: update the cases"


@pytest.mark.parametrize("case", AUDITED, ids=lambda case: case.name)
def test_each_blob_change_is_audited_with_old_and_new_values(env, case):
    subject = case.setup(env)
    before, since = rows(), _last_sequence()
    watch = BlobWrites()
    with connection.execute_wrapper(watch):
        case.act(env, subject)
    after = rows()
    changed = {pk for pk in before.keys() | after.keys() if before.get(pk) != after.get(pk)}
    assert changed, "the case changed no blob row: it does not exercise its writer"
    assert case.writers <= watch.writers
    assert watch.writers <= blob_writers(list(source_modules())), "a write the census does not see"
    events = list(AuditEvent.objects.filter(sequence__gt=since, target_type="blob").order_by("sequence"))
    for pk in changed:
        (event,) = [e for e in events if e.target_id == str(pk) and e.action == case.action]
        assert event.outcome == case.outcome
        # Old -> new values: "changes" ({"field": {"old", "new"}}), or the rotations' {"from", "to"}.
        details = event.details
        if "changes" in details:
            assert details["changes"]
            assert all(set(change) == {"old", "new"} for change in details["changes"].values())
            assert all(change["old"] != change["new"] for change in details["changes"].values())
        else:
            assert details["from"] != details["to"]


@pytest.mark.parametrize("case", AUDITED, ids=lambda case: case.name)
def test_a_blob_change_whose_event_cannot_be_written_does_not_happen(env, settings, case):
    settings.AUDIT = {**settings.AUDIT, "AFTER_RETRY_DELAY": 0}
    subject = case.setup(env)
    before = rows()
    with connection.execute_wrapper(BlobWrites(refuse_audit=True)), pytest.raises(DatabaseError):
        case.act(env, subject)
    assert rows() == before


def test_pending_bookkeeping_touches_only_invisible_rows(env):
    (case,) = [case for case in CASES if case.action is None]
    since = _last_sequence()
    watch = BlobWrites()
    with connection.execute_wrapper(watch):
        case.act(env, case.setup(env))
    assert watch.writers == case.writers
    pending = Blob.objects.get(pk=env.state["pending"])
    assert pending.state == Blob.State.PENDING
    assert not Blob.objects.ready().filter(pk=pending.pk).exists()
    assert not AuditEvent.objects.filter(sequence__gt=since, target_id=str(pending.pk)).exists()


# --------------------------------------------------------------------------------------------------------
# What the events say
# --------------------------------------------------------------------------------------------------------


def test_transfer_records_the_old_and_the_new_owner_from_the_row(env):
    blob = make_blob(env.owner, b"x")
    blob.owner = env.heir  # what the admin's change form has done before save_model runs
    blob_transfer_ownership(blob=blob, new_owner=env.heir)
    event = AuditEvent.objects.get(action="blob.transfer")
    assert event.target_id == str(blob.pk)
    assert event.details == {
        "changes": {
            "owner": {"old": "owner", "new": "heir"},
            "owner_id": {"old": str(env.owner.pk), "new": str(env.heir.pk)},
        }
    }
    assert Blob.objects.get(pk=blob.pk).owner == env.heir


def test_transfer_to_the_current_owner_changes_and_records_nothing(env):
    blob = make_blob(env.owner, b"x")
    updated_at = Blob.objects.get(pk=blob.pk).updated_at
    blob_transfer_ownership(blob=blob, new_owner=env.owner)
    assert not AuditEvent.objects.filter(action="blob.transfer").exists()
    assert Blob.objects.get(pk=blob.pk).updated_at == updated_at


def test_a_claim_records_state_owner_and_sealed_filename_changes(env):
    from audit.sealed import unseal

    upload = _finished_upload(env)
    blob = blob_claim(upload=upload, owner=env.heir, filename="renamed.txt")
    event = AuditEvent.objects.get(action="blob.upload", target_id=str(blob.pk))
    changes = event.details["changes"]
    assert changes["state"] == {"old": "pending", "new": "ready"}
    assert changes["owner"] == {"old": "owner", "new": "heir"}
    assert "renamed.txt" not in str(changes)  # file names are sealed (audit/sealed.py)
    assert unseal("filename", changes["filename"]["old"]) == "upload.txt"
    assert unseal("filename", changes["filename"]["new"]) == "renamed.txt"


def test_gc_and_abort_events_need_no_key_service(env, monkeypatch):
    # Cleaning up must work while the KMS is down: these events carry no sealed file name.
    from kms.exceptions import KeyUnavailable
    from kms.providers.local import LocalKeyProvider

    crashed = _crashed_upload(env)
    aborted = _written_upload(env)

    def down(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "wrap", down)
    monkeypatch.setattr(LocalKeyProvider, "unwrap", down)
    aborted.abort()
    assert blobs_gc(older_than=timedelta(hours=1)).rows == 1
    assert not Blob.objects.exists()
    gc = AuditEvent.objects.get(action="blob.gc")
    assert (gc.target_id, gc.details["changes"]) == (
        str(crashed.blob.pk),
        {"state": {"old": "pending", "new": "removed"}},
    )
    abort = AuditEvent.objects.get(action="blob.upload", target_id=str(aborted.blob.pk))
    assert abort.outcome == "error"


def test_the_admin_writes_blobs_only_through_the_census_s_functions():
    # Django's own ModelAdmin.save_model/delete_model/delete_queryset write rows without an event, and the
    # census cannot see inside Django: the blob admin must override each, so its writes are code the census
    # reads (today each calls a service).
    from django.contrib import admin as django_admin

    blob_admin = type(django_admin.site._registry[Blob])
    for hook in ("save_model", "delete_model", "delete_queryset"):
        assert getattr(blob_admin, hook) is not getattr(django_admin.ModelAdmin, hook), hook
