"""Cases for test_conftest.py, run there by a pytest of their own (not collected by the suite: no ``test_``
prefix). What the root conftest.py's ``--database-only`` keeps, and the test it must refuse."""

from __future__ import annotations

import pytest


def test_pure() -> None:
    assert sum([1, 2]) == 3


@pytest.mark.django_db
def test_marked() -> None:
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.count() == 0


@pytest.mark.backend_settings
def test_backend_settings() -> None:
    from django.conf import settings

    assert settings.DATABASES["default"]["ENGINE"].startswith("core.backends.")


def test_db_fixture(db) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.exists()


@pytest.fixture
def database_at_run_time(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("db")  # invisible to --database-only, which reads marks and fixture names


def test_database_at_run_time(database_at_run_time) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.exists()
