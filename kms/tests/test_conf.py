"""kms.conf: the app's tunables through one getter with defaults (core.conf)."""

from __future__ import annotations

import pytest

from kms.conf import DEFAULTS, kms_setting


def test_a_configured_value_wins(settings):
    settings.KMS = {"HEALTH_TTL_SECONDS": 5}
    assert kms_setting("HEALTH_TTL_SECONDS") == 5


def test_the_default_applies_when_the_setting_is_absent(settings):
    del settings.KMS
    assert kms_setting("HEALTH_TTL_SECONDS") == DEFAULTS["HEALTH_TTL_SECONDS"] == 60


def test_an_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="TYPO"):
        kms_setting("TYPO")
