"""Query budgets of the API's endpoints (issue 14): every request pays its queries, and a range-heavy client
(a player seeking, a segmented downloader) pays them hundreds of times a minute. Each test counts the SQL a
request runs once the process is warm and fails if the count grows; the assertions on what the queries are
keep a cut from silently dropping a check (authentication, the permission answer, the audit append).

Counts are as seen inside the test's transaction: an append's own transaction is a SAVEPOINT/RELEASE pair
here, where a server runs BEGIN/COMMIT. The flags snapshot is warm and its clock frozen, so the interval's
version check (one query per ``VERSION_CHECK_SECONDS`` per process) does not land in a counted request.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework_simplejwt.tokens import RefreshToken

from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user, pattern
from erphub import roles
from flags import services as flag_services

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(1024),
]


@pytest.fixture(autouse=True)
def _frozen_flag_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flag_services, "clock", lambda: 1_000_000.0)


@pytest.fixture
def alice():
    return make_user("alice", perms=(), roles=(roles.BLOB_USERS,))


@pytest.fixture
def api(alice) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(alice).access_token}")


@pytest.fixture
def blob(alice) -> Blob:
    return make_blob(alice, pattern(5000), filename="q3.bin", content_type="application/octet-stream")


def _consume(response) -> None:  # type: ignore[no-untyped-def]
    # A streamed body's end event is written when the server closes it: count it with the request. Reading
    # it to the end closes it (the test client wraps it); an explicit close() would fire request_finished
    # again and close the test's PostgreSQL connection.
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)


def counted(call: Callable[[], object]) -> tuple[object, list[str]]:
    """Run ``call`` twice (the first warms per-process state: flags snapshot, content types) and return the
    second response with the SQL it ran."""
    _consume(call())
    with CaptureQueriesContext(connection) as ctx:
        response = call()
        _consume(response)
    return response, [q["sql"] for q in ctx.captured_queries]


def assert_budget(queries: list[str], budget: int) -> None:
    """``budget`` as counted on SQLite; PostgreSQL adds one statement per append, its advisory lock."""
    if connection.vendor == "postgresql":
        budget += appends(queries)
    listing = "\n".join(f"  {sql[:160]}" for sql in queries)
    assert len(queries) <= budget, f"{len(queries)} queries, budget {budget}:\n{listing}"


def matching(queries: list[str], pattern_: str) -> list[str]:
    return [sql for sql in queries if re.search(pattern_, sql)]


def assert_permission_in_blob_query(queries: list[str]) -> None:
    """The caller's view_any_blob grant (own or a group's) is asked inside the blob's one query."""
    (blob_query,) = matching(queries, r'FROM "blobs_blob"')
    assert '"auth_user_user_permissions"' in blob_query
    assert '"auth_user_groups"' in blob_query


def appends(queries: list[str]) -> int:
    return len(matching(queries, r'^INSERT INTO "audit_auditevent"'))


# --- the stream ---------------------------------------------------------------------------------------------


def test_one_byte_range(api, blob):
    # User (JWT); the blob with its permission answer (one statement: no has_perm query, and no owner join:
    # the stream never names the owner); the start event (the chain's head, the insert) and the end event in
    # its own transaction (here a savepoint pair around the same two statements).
    url = reverse("blobs:stream", args=[blob.id])
    response, queries = counted(lambda: api.get(url, headers={"Range": "bytes=0-0"}))
    assert response.status_code == 206  # type: ignore[attr-defined]
    assert len(matching(queries, r'FROM "auth_user"')) == 1
    # No has_perm query: the permission table is read only inside the blob's query.
    assert [sql for sql in matching(queries, r'"auth_permission"') if 'FROM "blobs_blob"' not in sql] == []
    assert_permission_in_blob_query(queries)
    assert appends(queries) == 2  # blob.download.start and blob.download.end
    assert_budget(queries, 8)


def _one_byte_as(user, blob):  # type: ignore[no-untyped-def]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    url = reverse("blobs:stream", args=[blob.id])
    return counted(lambda: client.get(url, headers={"Range": "bytes=0-0"}))


def test_one_byte_range_of_someone_elses_blob_as_a_blob_manager(blob):
    # A Blob manager (view_any_blob through the role's group, not a superuser) reads another owner's file:
    # the grant is answered inside the blob's query, as for an owner.
    manager = make_user("manny", perms=(), roles=(roles.BLOB_MANAGERS,))
    response, queries = _one_byte_as(manager, blob)
    assert response.status_code == 206  # type: ignore[attr-defined]
    assert len(matching(queries, r'FROM "auth_user"')) == 1
    assert_permission_in_blob_query(queries)
    assert appends(queries) == 2
    assert_budget(queries, 8)


def test_someone_elses_blob_is_still_404_to_a_blob_user(blob):
    # The folded permission still refuses: another Blob user gets the missing blob's answer.
    bob = make_user("bob", perms=(), roles=(roles.BLOB_USERS,))
    response, queries = _one_byte_as(bob, blob)
    assert response.status_code == 404  # type: ignore[attr-defined]
    assert appends(queries) == 0
    assert_budget(queries, 2)


def test_one_byte_range_over_a_session(owner, owner_client):
    blob = make_blob(owner, pattern(3000))
    url = reverse("blobs:stream", args=[blob.id])
    response, queries = counted(lambda: owner_client.get(url, headers={"Range": "bytes=0-0"}))
    assert response.status_code == 206  # type: ignore[attr-defined]
    assert len(matching(queries, r'FROM "django_session"')) == 1
    assert appends(queries) == 2
    assert_budget(queries, 9)


def test_head(api, blob):
    # HEAD answers from the row: no key, no read, no audit event (nothing is disclosed but metadata).
    response, queries = counted(lambda: api.head(reverse("blobs:stream", args=[blob.id])))
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert len(matching(queries, r'FROM "blobs_blob"')) == 1
    assert_budget(queries, 2)


# --- metadata and list --------------------------------------------------------------------------------------


def test_metadata(api, blob):
    # The owner's name comes with the blob (one join), not from a second query; the permission answer too.
    response, queries = counted(lambda: api.get(reverse("blobs:detail", args=[blob.id])))
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.json()["owner"] == "alice"  # type: ignore[attr-defined]
    assert_permission_in_blob_query(queries)
    assert_budget(queries, 2)


def test_metadata_of_someone_elses_blob_as_a_blob_manager(blob):
    manager = make_user("manny", perms=(), roles=(roles.BLOB_MANAGERS,))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(manager).access_token}")
    response, queries = counted(lambda: client.get(reverse("blobs:detail", args=[blob.id])))
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.json()["owner"] == "alice"  # type: ignore[attr-defined]
    assert_budget(queries, 2)


def test_list(api, alice):
    for index in range(5):
        make_blob(alice, pattern(100 + index), filename=f"f{index}.bin")
    response, queries = counted(lambda: api.get(reverse("blobs:collection")))
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert len(response.json()["results"]) == 5  # type: ignore[attr-defined]
    # The count for the page links, then the page with its owners joined: not one query per blob (both
    # carry the permission answer).
    assert_budget(queries, 3)


# --- writes -------------------------------------------------------------------------------------------------


def test_upload(api):
    # Each call stores a new file, so the warm-up call is a real upload too.
    response, queries = counted(
        lambda: api.post(
            f"{reverse('blobs:collection')}?filename=raw.bin",
            data=pattern(3000),
            content_type="application/octet-stream",
        )
    )
    assert response.status_code == 201, response.content  # type: ignore[attr-defined]
    assert appends(queries) == 1
    assert_budget(queries, BUDGETS["upload"])


def test_delete(api, alice):
    blobs = iter([make_blob(alice, pattern(200)), make_blob(alice, pattern(300))])
    response, queries = counted(lambda: api.delete(reverse("blobs:detail", args=[next(blobs).id])))
    assert response.status_code == 204  # type: ignore[attr-defined]
    assert appends(queries) == 1
    assert_budget(queries, BUDGETS["delete"])


# delete: 9 since its event names the upload's event (sequence, hash) instead of sealing the file name again,
# so that deleting needs no key service (issue 15 item 20): one indexed lookup. 10 since a delete asks whether
# a legal hold keeps the blob (issue 17 item 5): one more indexed lookup. 9 again since the blob's query
# answers whether the caller may see it (no has_perm query; an owner's delete asks no permission either).
BUDGETS = {"upload": 9, "delete": 9}
