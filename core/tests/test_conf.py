"""core.conf: one settings getter shape — defaults in one dict, unknown keys refused, never ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from blobs.conf import blob_setting
from core.conf import AppSettings

ROOT = Path(__file__).resolve().parents[2]

sample = AppSettings("SAMPLE_APP", {"LIMIT": 3, "NESTED": {"A": 1, "B": 2}})


def test_defaults_apply_and_configured_values_win(settings):
    assert sample("LIMIT") == 3
    settings.SAMPLE_APP = {"LIMIT": 9}
    assert sample("LIMIT") == 9


def test_a_dict_setting_is_merged_over_its_defaults(settings):
    settings.SAMPLE_APP = {"NESTED": {"B": 5}}
    assert sample("NESTED") == {"A": 1, "B": 5}


def test_an_unknown_name_asked_for_is_a_key_error():
    with pytest.raises(KeyError, match="TYPO"):
        sample("TYPO")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"LIMTI": 3}, r"SAMPLE_APP: unknown key\(s\) \['LIMTI'\]; known: \['LIMIT', 'NESTED'\]"),
        ({"NESTED": {"C": 1}}, r"SAMPLE_APP\['NESTED'\]: unknown key\(s\) \['C'\]"),
        ({"NESTED": 7}, r"must be a dict"),
        ([("LIMIT", 3)], r"SAMPLE_APP must be a dict"),
    ],
)
def test_a_typo_is_refused_when_the_setting_changes(settings, value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        settings.SAMPLE_APP = value


@pytest.mark.parametrize("app_setting", ["BLOBS", "AUDIT", "KMS"])
def test_the_apps_refuse_unknown_keys_at_start_up(app_setting, tmp_path):
    # The real start-up path: django.setup() runs every app's ready(), in a fresh interpreter.
    (tmp_path / "typo_settings.py").write_text(
        f"from erphub.settings import *\n{app_setting} = {{**{app_setting}, 'MAX_RANGE': 4}}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "DJANGO_SETTINGS_MODULE": "typo_settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {app_setting}: unknown key(s) ['MAX_RANGE']" in result.stderr


def test_the_blobs_defaults_hold_one_max_ranges():
    from blobs import ranges

    assert blob_setting("MAX_RANGES") == ranges.MAX_RANGES
