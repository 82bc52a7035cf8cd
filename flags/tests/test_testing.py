"""flags.testing: the rows a flush removes come back exactly as migration 0002 made them."""

from __future__ import annotations

import pytest

from flags.models import SECURE_BLOB_STREAMING, Flag, FlagStamp
from flags.testing import restore_migration_flags

FIELDS = ("description", "enabled", "kill_switch", "beta_enabled", "rollout_basis_points", "retired")


@pytest.mark.django_db
def test_restored_rows_match_the_migration():
    made = Flag.objects.filter(name=SECURE_BLOB_STREAMING).values(*FIELDS).get()
    Flag.objects.all().delete()
    FlagStamp.objects.all().delete()
    restore_migration_flags()
    assert Flag.objects.filter(name=SECURE_BLOB_STREAMING).values(*FIELDS).get() == made
    assert FlagStamp.objects.filter(pk=1).exists()


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_finds_the_flag_after_earlier_flushes():
    assert Flag.objects.filter(name=SECURE_BLOB_STREAMING, rollout_basis_points=10_000).exists()

