"""core.db.CompiledQuery: a queryset compiled once, run with other values, gives what the ORM gives."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from core.db import CompiledQuery, Param

pytestmark = pytest.mark.django_db

User = get_user_model()


def _fields(obj):
    return {field.attname: getattr(obj, field.attname) for field in type(obj)._meta.concrete_fields}


def _by_pk() -> CompiledQuery:
    return CompiledQuery(User, lambda pk: User.objects.filter(pk=pk), pk=Param(-0x7E57, field=User._meta.pk))


def test_rows_are_the_orm_rows_with_the_same_types():
    users = [
        User.objects.create_user("ada", password="pw-123456!", is_staff=True),
        User.objects.create_user("bob", email="b@example.com", is_active=False),
    ]
    lookup = _by_pk()
    for user in users:
        expected = User.objects.get(pk=user.pk)
        (found,) = lookup.rows({"pk": user.pk})
        assert _fields(found) == _fields(expected)
        # Converted as the ORM converts (datetimes, booleans): same types, not just equal values.
        assert {k: type(v) for k, v in _fields(found).items()} == {
            k: type(v) for k, v in _fields(expected).items()
        }
        assert found._state.db == "default"
        assert not found._state.adding
    assert lookup.rows({"pk": 10**6}) == []


def test_each_value_lands_in_its_own_place():
    lookup = CompiledQuery(
        Permission,
        lambda codename, app: Permission.objects.filter(codename=codename, content_type__app_label=app),
        codename=Param("stand-in-codename"),
        app=Param("stand-in-app"),
    )
    assert [p.codename for p in lookup.rows({"codename": "add_user", "app": "auth"})] == ["add_user"]
    assert lookup.rows({"codename": "auth", "app": "add_user"}) == []  # swapped: nothing


def test_compiled_once_per_database():
    built = []

    def build(pk):
        built.append(pk)
        return User.objects.filter(pk=pk)

    lookup = CompiledQuery(User, build, pk=Param(-0x7E57, field=User._meta.pk))
    user = User.objects.create_user("ada")
    for _ in range(3):
        assert [u.pk for u in lookup.rows({"pk": user.pk})] == [user.pk]
    assert built == [-0x7E57, -0x7E57 ^ 1]  # once, with two sets of stand-ins


def test_select_related_comes_in_the_same_query():
    lookup = CompiledQuery(
        Permission,
        lambda codename: Permission.objects.select_related("content_type").filter(codename=codename),
        codename=Param("stand-in-codename"),
    )
    lookup.rows({"codename": "add_user"})  # compiled
    with CaptureQueriesContext(connection) as ctx:
        (perm,) = lookup.rows({"codename": "add_user"})
        assert perm.content_type.app_label == "auth"
    assert len(ctx.captured_queries) == 1


def test_a_value_of_the_wrong_type_fails_as_in_the_orm():
    with pytest.raises(ValueError, match="expected a number") as orm:
        User.objects.filter(pk="abc").first()
    with pytest.raises(ValueError, match="expected a number") as compiled:
        _by_pk().rows({"pk": "abc"})
    assert str(compiled.value) == str(orm.value)


def test_every_value_and_no_other_is_asked_for():
    lookup = _by_pk()
    with pytest.raises(TypeError):
        lookup.rows({})
    with pytest.raises(TypeError):
        lookup.rows({"pk": 1, "other": 2})


@pytest.mark.parametrize(
    ("build", "params"),
    [
        # The stand-in equals a constant of the query: which position is the value's cannot be told.
        (
            lambda codename: Permission.objects.filter(codename=codename, content_type__app_label="auth"),
            {"codename": Param("auth")},
        ),
        # A value the compiled SQL does not use.
        (lambda codename: Permission.objects.filter(codename="add_user"), {"codename": Param("x")}),
        # Not a plain model queryset.
        (lambda name: Group.objects.filter(name=name).annotate(n=Count("user")), {"name": Param("x")}),
        (lambda name: Group.objects.filter(name=name).values("pk"), {"name": Param("x")}),
        (lambda name: Group.objects.filter(name=name).only("pk"), {"name": Param("x")}),
        # What the compiled SQL alone cannot honour.
        (lambda name: Group.objects.filter(name=name).prefetch_related("permissions"), {"name": Param("x")}),
        (lambda name: Group.objects.filter(name=name).select_for_update(), {"name": Param("x")}),
        (lambda name: Group.objects.filter(name=name).using("default"), {"name": Param("x")}),
        (
            lambda name: Group.objects.filter(name=name).union(Group.objects.filter(name="y")),
            {"name": Param("x")},
        ),
    ],
    ids=[
        "stand-in-collides",
        "stand-in-unused",
        "annotated",
        "values",
        "deferred",
        "prefetch",
        "select-for-update",
        "using",
        "union",
    ],
)
def test_queries_it_cannot_compile_safely_are_refused(build, params):
    lookup = CompiledQuery(Group, build, **params)
    with pytest.raises(ImproperlyConfigured):
        lookup.rows(dict.fromkeys(params, "y"))


@pytest.mark.django_db(transaction=True)  # committed: the other thread's connection reads it
def test_rows_are_converted_with_the_running_connection():
    # Compiled in one thread, run in another (another connection of the same alias): same rows.
    import threading

    user = User.objects.create_user("ada")
    lookup = _by_pk()
    lookup.rows({"pk": user.pk})
    found = []

    def run():
        try:
            found.extend(lookup.rows({"pk": user.pk}))
        finally:
            connection.close()  # this thread's

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [_fields(u) for u in found] == [_fields(User.objects.get(pk=user.pk))]


@pytest.mark.parametrize("lookup", ["iexact", "contains", "startswith"])
def test_a_lookup_that_rewrites_its_value_is_refused_or_answers_as_the_orm(lookup):
    # SQLite's iexact and every backend's contains/startswith bind an escaped LIKE pattern made from the
    # value: a raw value bound there would match "a%" as a wildcard. Refused when the compiled parameter is
    # not the value itself; where it is (PostgreSQL's iexact: UPPER(col) = UPPER(%s)), the answers agree.
    for name in ("alice", "bob", "Al%ce"):
        Group.objects.create(name=name)
    compiled = CompiledQuery(
        Group, lambda name: Group.objects.filter(**{f"name__{lookup}": name}), name=Param("stand-in")
    )
    try:
        compiled.rows({"name": "x"})
    except ImproperlyConfigured:
        return
    for value in ("a%", "_ob", "AL%CE", "b", "\\"):
        expected = sorted(g.name for g in Group.objects.filter(**{f"name__{lookup}": value}))
        assert sorted(g.name for g in compiled.rows({"name": value}, limit=10)) == expected, value


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_on_postgresql_a_compiled_query_is_prepared_on_its_connection_and_the_orm_is_not():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements: PostgreSQL (core/backends/postgresql)")
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 2  # erphub/settings.py
    user = User.objects.create_user("ada")
    lookup = _by_pk()
    for _ in range(3):
        assert list(User.objects.filter(pk=user.pk)) == [user]  # the ORM's own query, as often
        (found,) = lookup.rows({"pk": user.pk})
        assert _fields(found) == _fields(User.objects.get(pk=user.pk))
    prepared = _prepared_statements()
    (statement,) = [sql for sql in prepared if 'FROM "auth_user"' in sql]
    assert '"auth_user"."id" = $1' in statement  # bound on the server: one statement for every value
    with CaptureQueriesContext(connection) as ctx:
        lookup.rows({"pk": user.pk})
    (logged,) = ctx.captured_queries
    assert f'"auth_user"."id" = {user.pk}' in logged["sql"]  # the query log shows the values, as the ORM's


@pytest.mark.django_db(transaction=True)  # outside a transaction, as a request's lookup runs
def test_on_postgresql_a_column_a_migration_widens_under_a_prepared_lookup_is_read_again(
    migration_connection,
):
    other = migration_connection
    user = User.objects.create_user("ada", first_name="Ada")
    lookup = _by_pk()
    for _ in range(3):
        lookup.rows({"pk": user.pk})
    assert any('FROM "auth_user"' in sql for sql in _prepared_statements())
    # What a migration widening a CharField does while this connection holds the prepared statement:
    # PostgreSQL now refuses it ("cached plan must not change result type").
    other.execute('ALTER TABLE "auth_user" ALTER COLUMN "first_name" TYPE varchar(151)')
    try:
        (found,) = lookup.rows({"pk": user.pk})
        assert found.first_name == "Ada"
        for _ in range(2):
            (found,) = lookup.rows({"pk": user.pk})
            assert found.pk == user.pk
        assert any('FROM "auth_user"' in sql for sql in _prepared_statements())  # prepared anew
    finally:
        other.execute('ALTER TABLE "auth_user" ALTER COLUMN "first_name" TYPE varchar(150)')
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")  # the next tests' transactions start from no statement
