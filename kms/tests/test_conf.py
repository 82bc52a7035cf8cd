"""kms.conf: the app's tunables through one getter with defaults (like blobs.conf)."""

from __future__ import annotations

import pytest

from kms.conf import DEFAULTS, kms_setting


def test_a_configured_value_wins(settings):
    settings.KMS_HEALTH_TTL_SECONDS = 5
    assert kms_setting("KMS_HEALTH_TTL_SECONDS") == 5


def test_the_default_applies_when_the_setting_is_absent(settings):
    del settings.KMS_HEALTH_TTL_SECONDS
    assert kms_setting("KMS_HEALTH_TTL_SECONDS") == DEFAULTS["KMS_HEALTH_TTL_SECONDS"] == 60


def test_an_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="KMS_TYPO"):
        kms_setting("KMS_TYPO")
