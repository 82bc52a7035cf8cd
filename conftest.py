"""Suite-wide fixtures: every test gets its own blob storage directory and master key."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

# Hypothesis profiles: a smaller one in CI than locally (fewer examples). Select with HYPOTHESIS_PROFILE.
hypothesis_settings.register_profile("ci", max_examples=25)
hypothesis_settings.register_profile("dev", max_examples=200)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The suite's own process talks to PostgreSQL without the connection pool: its tests start threads that
    query and never close their connections (Django closes a request's, not a thread's), and each would keep
    a pooled connection for good. The pool is exercised where it runs in production, in live servers
    (erphub/tests/test_db_pool.py, blobs/tests/test_reconnect.py and every liveserver test on PostgreSQL)."""
    from django.db import connections

    connections["default"].settings_dict.get("OPTIONS", {}).pop("pool", None)


@pytest.fixture(autouse=True)
def _isolated_blob_environment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if "settings" not in request.fixturenames and not _uses_django(request):
        return
    settings = request.getfixturevalue("settings")
    root = tmp_path_factory.mktemp("blobenv")
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {
                "location": str(root / "blobs"),
                "file_permissions_mode": 0o600,
                "directory_permissions_mode": 0o700,
            },
        },
        "audit_checkpoints": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root / "audit-checkpoints")},
        },
    }
    # A fresh checkpoint signing key per test, never the developer's var/ one.
    settings.AUDIT = {
        **settings.AUDIT,
        "SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SIGNING_KEY_FILE": None,
        "SIGNING_KEY_CREATE": False,
        "VERIFY_PUBLIC_KEYS": [],
        "TRUSTED_PROXIES": [],
    }
    key = base64.b64encode(os.urandom(32)).decode()
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"keys": f"mk-test-1:{key}"},
        }
    }
    settings.KMS_DEFAULT_PROVIDER = "local"
    # Password hashing is not under test here; the default hasher costs most of a user-heavy test's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.FILE_UPLOAD_TEMP_DIR = str(root / "upload-tmp")
    (root / "upload-tmp").mkdir()
    from django.core.cache import cache

    from flags.services import flag_cache_reset
    from kms import health

    health.reset()
    cache.clear()  # throttle counters (uploads, failed logins) must not leak from one test into the next
    flag_cache_reset()  # a flag snapshot loaded inside the previous test's (rolled back) transaction


@pytest.fixture
def master_key_missing(settings, tmp_path):
    """The local provider's master key file (``gone.key``) is missing and may not be created."""
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"keys": None, "key_file": str(tmp_path / "gone.key"), "create_if_missing": False},
        }
    }


def _uses_django(request: pytest.FixtureRequest) -> bool:
    # Pure-core tests (crypto, ranges, ...) import nothing from Django and need none of this.
    return request.module.__name__ not in PURE_TEST_MODULES


#: The test modules of the pure cores, by dotted name. Every name must be a test module that exists
#: (pytest_configure below refuses to start otherwise), so a renamed or deleted module cannot linger here.
PURE_TEST_MODULES = frozenset(
    {
        "blobs.tests.test_crypto",
        "blobs.tests.test_ranges",
        "blobs.tests.test_conditional",
        "blobs.tests.test_disposition",
        "blobs.tests.test_digest",
        "blobs.tests.test_keyset",
        "audit.tests.test_canonical",
        "audit.tests.test_chain",
        "audit.tests.test_remote",
        "core.tests.test_secret_files",
        "flags.tests.test_bucketing",
        "flags.tests.test_evaluation",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-only",
        action="store_true",
        help="Run only the tests that can reach the configured database (reaches_database in conftest.py): "
        "a second database backend's run, after the whole suite has run once (.ci/run).",
    )


#: Fixtures through which a test reaches the configured database: pytest-django's, and the suite's PostgreSQL
#: server (a fresh database for processes of their own). A live server of blobs/tests/liveserver.py started
#: without one of them gets an SQLite file of its own whatever DATABASE_URL says: it does not see the backend.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "django_db_setup",
        "live_server",
        "postgres_database",
        "module_postgres_database",
        "migration_connection",
    }
)


def reaches_database(item: pytest.Item) -> bool:
    """Whether ``item`` can reach the configured database: the ``django_db`` mark or one of DATABASE_FIXTURES,
    or the ``backend_settings`` mark (a test of what the configured backend's settings make of the app,
    system checks or a schema editor, without a query). pytest-django refuses every other test the database,
    and those run once. A fixture that asks for a database fixture only while running
    (``request.getfixturevalue("db")``) is caught by pytest_fixture_setup below, in the run that has every
    test; a test that reads ``settings.DATABASES`` without saying so is not, hence the mark."""
    if item.get_closest_marker("django_db") is not None or item.get_closest_marker("backend_settings"):
        return True
    return bool(DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("database_only"):
        return
    kept, left = [], []
    for item in items:
        (kept if reaches_database(item) else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    # A test that --database-only leaves out but that gets the database anyway (a fixture asking for "db" at
    # run time) would lose its second backend silently: refused here, so that the whole-suite run fails.
    node = request.node
    undeclared = isinstance(node, pytest.Item) and not reaches_database(node)
    if fixturedef.argname in DATABASE_FIXTURES and undeclared:
        raise pytest.UsageError(
            f"{node.nodeid} gets the database through {fixturedef.argname!r} at run time; mark it "
            "@pytest.mark.django_db (or ask for the fixture by name) so that --database-only keeps it"
        )
    yield


def pytest_configure(config: pytest.Config) -> None:
    missing = sorted(
        name
        for name in PURE_TEST_MODULES
        if not config.rootpath.joinpath(*name.split(".")).with_suffix(".py").is_file()
    )
    if missing:
        raise pytest.UsageError(f"conftest.py PURE_TEST_MODULES names modules that do not exist: {missing}")


@pytest.fixture
def owner():  # type: ignore[no-untyped-def]
    """A user named "owner" with the default blob permissions (blobs/tests/factories.py make_user)."""
    from blobs.tests.factories import make_user

    return make_user("owner")


@pytest.fixture
def owner_client(owner):  # type: ignore[no-untyped-def]
    """Django's test client, signed in as ``owner``."""
    from django.test import Client

    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def counted_wraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count real LocalKeyProvider.wrap calls (the spy delegates to the real method)."""
    from kms.providers.local import LocalKeyProvider

    calls: list[str] = []
    real_wrap = LocalKeyProvider.wrap

    def spy(self, data_key, *, context):  # type: ignore[no-untyped-def]
        calls.append(self.alias)
        return real_wrap(self, data_key, context=context)

    monkeypatch.setattr(LocalKeyProvider, "wrap", spy)
    return calls


@pytest.fixture
def counted_unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count real LocalKeyProvider.unwrap calls as ``alias:key_ref`` (the spy delegates to the real one)."""
    from kms.providers.local import LocalKeyProvider

    calls: list[str] = []
    real_unwrap = LocalKeyProvider.unwrap

    def spy(self, wrapped, *, context):  # type: ignore[no-untyped-def]
        calls.append(f"{self.alias}:{wrapped.key_ref}")
        return real_unwrap(self, wrapped, context=context)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", spy)
    return calls


@pytest.fixture
def local_providers(settings):  # type: ignore[no-untyped-def]
    """Configure local providers: ``local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})``.

    Each alias gets its master keys in order (the first is active); a key id keeps its key material across
    calls, so re-configuring with a new id first is a rotation that keeps old blobs readable. The optional
    ``default`` names the alias for new blobs (the first alias otherwise).
    """
    material: dict[str, str] = {}

    def configure(aliases: dict[str, list[str]], *, default: str | None = None) -> None:
        providers = {}
        for alias, key_ids in aliases.items():
            for key_id in key_ids:
                material.setdefault(key_id, base64.b64encode(os.urandom(32)).decode())
            providers[alias] = {
                "BACKEND": "kms.providers.local.LocalKeyProvider",
                "OPTIONS": {"keys": ",".join(f"{key_id}:{material[key_id]}" for key_id in key_ids)},
            }
        settings.KMS_PROVIDERS = providers
        settings.KMS_DEFAULT_PROVIDER = default or next(iter(aliases))

    return configure


@pytest.fixture(autouse=True)
def _migration_flags_restored(request: pytest.FixtureRequest) -> None:
    """Tests that really commit start from a flushed database, the rows migrations made included: put back
    the rollout flag (flags/testing.py), or the secure file API would answer 404 to everyone."""
    marker = request.node.get_closest_marker("django_db")
    transactional = marker is not None and marker.kwargs.get("transaction")
    if not (transactional or {"transactional_db", "live_server"} & set(request.fixturenames)):
        return
    request.getfixturevalue("transactional_db")
    from flags.testing import restore_migration_flags

    restore_migration_flags()


@pytest.fixture(autouse=True)
def _audit_tables_emptied_by_owner(request: pytest.FixtureRequest):
    """Tests that really commit leave audit events behind, which the append-only triggers keep Django's
    flush from removing: empty them as the owner first (audit/tests/wipe.py), before the flush runs."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so this teardown runs before its flush
    yield
    from audit.tests.wipe import wipe_audit_tables_as_owner

    wipe_audit_tables_as_owner()


@pytest.fixture
def browser(tmp_path):  # type: ignore[no-untyped-def]
    """Headless Chromium (blobs/tests/browser.py); mark the test ``requires_browser``."""
    from blobs.tests.browser import start_browser

    driver = start_browser(tmp_path / "profile")
    yield driver
    driver.quit()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the suite's server, as a DATABASE_URL, dropped afterwards: for
    processes of their own (a live server, concurrent writers). Skips outside the PostgreSQL suite."""
    import secrets

    from django.conf import settings

    default = settings.DATABASES["default"]
    if not default["ENGINE"].endswith(".postgresql"):
        pytest.skip("runs in the PostgreSQL suite (DATABASE_URL=postgres://...)")
    import psycopg

    name = f"erphub_t_{secrets.token_hex(4)}"
    params = _psycopg_params(default, dbname="postgres")
    with psycopg.connect(**params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    password = f":{default['PASSWORD']}" if default["PASSWORD"] else ""
    try:
        yield f"postgres://{default['USER']}{password}@{params['host']}:{params['port']}/{name}"
    finally:
        with psycopg.connect(**params) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migration_connection():  # type: ignore[no-untyped-def]
    """A psycopg connection of its own (autocommit) to the suite's PostgreSQL test database, as a migration
    running beside the app has. Skips outside the PostgreSQL suite."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL suite (DATABASE_URL=postgres://...)")
    import psycopg

    with psycopg.connect(**_psycopg_params(connection.settings_dict)) as other:
        yield other


def _psycopg_params(settings: dict, *, dbname: str | None = None) -> dict:
    """psycopg's connection parameters (autocommit) for a Django PostgreSQL database; ``dbname`` another
    database of the same server."""
    return {
        "host": settings["HOST"] or "127.0.0.1",
        "port": settings["PORT"] or 5432,
        "user": settings["USER"],
        "password": settings["PASSWORD"] or None,
        "dbname": dbname or settings["NAME"],
        "autocommit": True,
    }


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """``fresh_postgres_database()`` for one test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_database() -> Iterator[str]:
    """``fresh_postgres_database()`` for a module's tests (servers they share)."""
    with fresh_postgres_database() as url:
        yield url
