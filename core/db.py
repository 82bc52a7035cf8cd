"""Database helpers: connections around long transfers, and querysets compiled once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, QuerySet

M = TypeVar("M", bound=Model)


def release_connections() -> None:
    """Close this thread's (under the event worker, this greenlet's) database connections, unless a
    transaction holds one: a download or upload may take hours, and a thousand slow clients must not hold a
    thousand connections (architecture.md §12). Closing gives the connection back to the worker's pool
    (PostgreSQL's, or core/backends/sqlite3's idle ones; ``DATABASE_POOL_MAX_SIZE``), so what a thousand slow
    clients leave open is bounded by the pool, not by them. The next query takes one from the pool (health-
    checked on PostgreSQL) or reconnects, so the end of the transfer (its audit event, the upload's row) does
    not run on one a restart may have killed. Django leaves in-memory SQLite databases (the test suite's) open
    whatever is asked."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def prepared_cursor(connection: BaseDatabaseWrapper) -> Any:
    """A cursor for a statement every request runs with other values: one whose statements the database keeps
    prepared where the backend offers it (core/backends/postgresql), an ordinary one elsewhere."""
    make = getattr(connection, "prepared_cursor", None)
    return make() if make is not None else connection.cursor()


def stale_prepared_statement(error: BaseException) -> bool:
    """Whether ``error`` (psycopg's, or Django's wrapping it) is PostgreSQL refusing a prepared statement
    whose result columns changed type since it was prepared ("cached plan must not change result type";
    core/backends/postgresql): SQLSTATE 0A000 raised where PostgreSQL revalidates a cached plan (the function
    it names does not depend on the server's language, unlike the message). In a transaction that loses the
    transaction, and its rollback makes psycopg forget every prepared statement: a caller that owned the
    transaction may run it once more."""
    return any(
        getattr(cause, "sqlstate", None) == "0A000"
        and getattr(getattr(cause, "diag", None), "source_function", None) == "RevalidateCachedQuery"
        for cause in (error, error.__cause__)
    )


@dataclass(frozen=True)
class Param:
    """A value a :class:`CompiledQuery` takes per run: the stand-in it is compiled with, and the model field
    whose lookup turns a value into its database form (``None``: passed as-is, e.g. to a ``RawSQL``)."""

    stand_in: Any
    field: Field[Any, Any] | None = None

    def prepare(self, value: Any, connection: BaseDatabaseWrapper) -> Any:
        if self.field is None:
            return value
        # What an ``exact`` lookup does to its right-hand side (Field.get_db_prep_lookup): the same errors for
        # a value of the wrong type, the same database form (a UUID's hex on SQLite, a uuid on PostgreSQL).
        return self.field.get_db_prep_value(self.field.get_prep_value(value), connection, prepared=True)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    slots: list[tuple[str | None, Any]]  # (None, a constant) or (a value's name, its Param)
    model: type[Model]
    init_list: list[str]
    fields_end: int
    # Position -> (converters, expression), as SQLCompiler.get_converters returns them. Django's converters
    # depend on the backend and the settings only, so those of the compiling connection serve every
    # connection of the alias; they are called with the running one.
    converters: dict[int, Any]
    related: list[Any]  # RelatedPopulator (select_related)


class CompiledQuery(Generic[M]):
    """A queryset compiled to SQL once per database, then run with other values (``rows``).

    Compiling a queryset (the Query's clones, its WHERE tree, the SQL) costs more than running it: on a
    request that is one primary-key lookup it was most of the lookup (issue 14). ``build`` is called once
    per database with each :class:`Param`'s stand-in; the SQL keeps the positions where the stand-ins
    landed and each run puts the prepared values there. The rows become model instances exactly as the
    ORM makes them (the backend's converters, ``Model.from_db``, ``select_related`` populators). Only plain
    model querysets are accepted (no annotations, ``values()`` or deferred fields); a stand-in that does
    not appear in the parameters exactly once per use, or that collides with a constant, is refused when
    compiled, so a value can never land in the wrong place.
    """

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]], **params: Param) -> None:
        self._model = model
        self._build = build
        self._params = params
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def rows(self, values: Mapping[str, Any], *, using: str | None = None, limit: int = 2) -> list[M]:
        """At most ``limit`` instances for ``values`` (a value per Param; ask for 2 to tell "exactly one"
        from "several")."""
        if values.keys() != self._params.keys():
            raise TypeError(f"expected values for {sorted(self._params)}, got {sorted(values)}")
        alias = using or router.db_for_read(self._model)
        connection = connections[alias]
        compiled = self._compiled.get((alias, connection.vendor)) or self._compile(alias, connection)
        args = [
            value if name is None else value.prepare(values[name], connection)
            for name, value in compiled.slots
        ]
        with prepared_cursor(connection) as cursor:
            cursor.execute(compiled.sql, args)
            fetched = cursor.fetchmany(limit)
        rows: list[Any] = fetched
        if compiled.converters:
            rows = [_convert(row, compiled.converters, connection) for row in fetched]
        found: list[M] = []
        for row in rows:
            obj = cast(M, compiled.model.from_db(alias, compiled.init_list, row[: compiled.fields_end]))
            for populator in compiled.related:
                populator.populate(row, obj)
            found.append(obj)
        return found

    def _compile(self, alias: str, connection: BaseDatabaseWrapper) -> _Compiled:
        from django.db.models.query import ModelIterable, get_related_populators  # type: ignore[attr-defined]

        # Compiled twice, with two sets of stand-ins: a position is a value's only if it holds that value's
        # stand-in in both (a constant equal to a stand-in stays put in the second, and is refused).
        alternatives = {name: _alternative(param.stand_in) for name, param in self._params.items()}
        queryset = self._build(**{name: param.stand_in for name, param in self._params.items()})
        query = queryset.query
        if (
            queryset._iterable_class is not ModelIterable
            or query.annotation_select
            or query.deferred_loading[0]
            or query.select_for_update
            or query.combinator
            or queryset._prefetch_related_lookups  # type: ignore[attr-defined]
            or queryset._known_related_objects  # type: ignore[attr-defined]
            or queryset._db is not None  # type: ignore[attr-defined]
        ):
            # What the compiled SQL and from_db() alone cannot honour (a row lock needs the caller's
            # transaction, prefetches their own queries, .using() a database the router did not choose).
            raise ImproperlyConfigured("CompiledQuery takes plain model querysets only")
        compiler = query.get_compiler(using=alias)
        sql, raw_params = compiler.as_sql()
        other_sql, other_params = self._build(**alternatives).query.get_compiler(using=alias).as_sql()
        if other_sql != sql or len(other_params) != len(raw_params):
            raise ImproperlyConfigured("CompiledQuery: the SQL depends on the values")
        klass_info = compiler.klass_info
        select_fields = klass_info["select_fields"]
        if select_fields[0] != 0:
            raise ImproperlyConfigured("CompiledQuery: the model's columns must come first")
        stand_ins = {name: param.prepare(param.stand_in, connection) for name, param in self._params.items()}
        others = {name: param.prepare(alternatives[name], connection) for name, param in self._params.items()}
        slots: list[tuple[str | None, Any]] = []
        used = dict.fromkeys(self._params, 0)
        for value, other in zip(raw_params, other_params, strict=True):
            matches = [name for name, stand_in in stand_ins.items() if _same(value, stand_in)]
            if len(matches) > 1:
                raise ImproperlyConfigured(f"CompiledQuery: stand-ins {matches} are not distinct")
            if matches and _same(other, others[matches[0]]):
                used[matches[0]] += 1
                slots.append((matches[0], self._params[matches[0]]))
            elif not matches and _same(other, value):
                slots.append((None, value))
            else:
                raise ImproperlyConfigured(f"CompiledQuery: {value!r} is neither a value nor a constant")
        if unused := [name for name, count in used.items() if not count]:
            raise ImproperlyConfigured(f"CompiledQuery: {unused} not found in the compiled parameters")
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        compiled = _Compiled(
            sql=sql,
            slots=slots,
            model=klass_info["model"],
            init_list=[column[0].target.attname for column in compiler.select[: select_fields[-1] + 1]],
            fields_end=select_fields[-1] + 1,
            converters=compiler.get_converters(fields),
            related=get_related_populators(klass_info, compiler.select, alias),
        )
        self._compiled[(alias, connection.vendor)] = compiled
        return compiled


def _same(value: Any, stand_in: Any) -> bool:
    # Same type too: a stand-in 7 must not match a constant True (1 == True in Python).
    return type(value) is type(stand_in) and value == stand_in


def _alternative(stand_in: Any) -> Any:
    """Another value of the stand-in's type, for the second compilation."""
    if isinstance(stand_in, uuid.UUID):
        return uuid.UUID(int=stand_in.int ^ 1)
    if isinstance(stand_in, int) and not isinstance(stand_in, bool):
        return stand_in ^ 1
    if isinstance(stand_in, str):
        # Characters a lookup would rewrite (LIKE's wildcards and escape, case folding): if the compiled
        # parameter is the value transformed (iexact, contains, ...), the two compilations disagree and the
        # query is refused, instead of binding a raw value where an escaped pattern belongs.
        return stand_in + "%_\\Ä"
    raise ImproperlyConfigured(f"CompiledQuery: no second stand-in for a {type(stand_in).__name__}")


def _convert(row: Any, converters: dict[int, Any], connection: BaseDatabaseWrapper) -> list[Any]:
    """``SQLCompiler.apply_converters`` for one row, called with ``connection``."""
    values = list(row)
    for pos, (convs, expression) in converters.items():
        value = values[pos]
        for converter in convs:
            value = converter(value, expression, connection)
        values[pos] = value
    return values
