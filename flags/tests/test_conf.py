"""FLAGS settings: the environment kill switch read in erphub/settings.py, the getter's defaults and refusals,
and the system checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from flags.checks import check_flags_settings
from flags.conf import flag_setting

ROOT = Path(__file__).resolve().parents[2]
PRINT_FLAGS = (
    "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.FLAGS))"
)


def flags_with(tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FEATURE_", "FLAG_", "DATABASE_"))}
    clean.update(DJANGO_SETTINGS_MODULE="erphub.settings", ERPHUB_VAR_DIR=str(tmp_path / "var"), **env)
    done = subprocess.run(
        [sys.executable, "-c", PRINT_FLAGS], cwd=ROOT, env=clean, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_environment_kill_switch_forces_the_flag_off(tmp_path):
    assert flags_with(tmp_path)["FORCED_OFF"] == []
    assert flags_with(tmp_path, FEATURE_SECURE_BLOB_ENABLED="false")["FORCED_OFF"] == [
        "secure_blob_streaming"
    ]
    tuned = flags_with(tmp_path, FLAG_VERSION_CHECK_SECONDS="0.5", FLAG_RETIRE_AFTER_DAYS="14")
    assert (tuned["VERSION_CHECK_SECONDS"], tuned["RETIRE_AFTER_DAYS"]) == (0.5, 14)


def test_defaults_and_partial_dicts(settings):
    settings.FLAGS = {"STAGE_HOLD_HOURS": {"beta": 24}}
    assert flag_setting("RETIRE_AFTER_DAYS") == 7
    assert flag_setting("STAGE_HOLD_HOURS") == {"internal": 48, "beta": 24, "25": 48, "50": 48, "100": 72}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"RETIRE_AFTER_DAY": 7}, "unknown key"),
        ({"STAGE_HOLD_HOURS": {"gamma": 1}}, "unknown key"),
    ],
)
def test_unknown_keys_are_refused(settings, flags, message):
    settings.FLAGS = flags
    with pytest.raises(ImproperlyConfigured, match=message):
        flag_setting("STAGE_HOLD_HOURS")
    assert [error.id for error in check_flags_settings()] == ["flags.E001"]


def test_an_unknown_name_is_a_bug():
    with pytest.raises(KeyError):
        flag_setting("NOPE")


@pytest.mark.parametrize(
    ("flags", "error_id"),
    [
        ({"FORCED_OFF": "secure_blob_streaming"}, "flags.E002"),
        ({"RETRY_AFTER_SECONDS": -1}, "flags.E003"),
        ({"VERSION_CHECK_SECONDS": 10}, "flags.E004"),
    ],
)
def test_the_checks_name_the_mistake(settings, flags, error_id):
    settings.FLAGS = flags
    assert error_id in [error.id for error in check_flags_settings()]


def test_the_shipped_settings_pass_the_checks():
    assert check_flags_settings() == []
