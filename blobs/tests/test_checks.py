"""System checks for BLOBS: values every upload would trip over fail `manage.py check`, not requests."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings


def blob_errors(**overrides) -> list[tuple[str, str]]:
    with override_settings(BLOBS={**settings.BLOBS, **overrides}):
        return [(m.id, m.msg) for m in run_checks() if m.id and m.id.startswith("blobs.")]


@pytest.mark.backend_settings
def test_the_shipped_settings_pass():
    assert blob_errors() == []


@pytest.mark.parametrize("segment_size", [4096, 1 << 20, (1 << 31) - 1])
def test_segment_sizes_the_format_accepts_pass(segment_size):
    assert blob_errors(SEGMENT_SIZE=segment_size) == []


@pytest.mark.parametrize(
    ("segment_size", "reason"),
    [
        (32, "segment_size must be > header_size + 16 = 56"),
        (56, "segment_size must be > header_size + 16 = 56"),
        (0, "segment_size must be > header_size + 16"),
        (1 << 31, "segment_size must be <= 2147483647"),
        ("1048576", "segment_size"),
    ],
)
def test_e001_a_segment_size_the_format_rejects(segment_size, reason):
    ((error_id, message),) = blob_errors(SEGMENT_SIZE=segment_size)
    assert error_id == "blobs.E001"
    assert f"BLOBS['SEGMENT_SIZE'] (BLOB_SEGMENT_SIZE) = {segment_size!r}" in message
    assert reason in message


@pytest.mark.parametrize(
    ("name", "error_id", "env"),
    [
        ("MAX_UPLOAD_BYTES", "blobs.E002", " (BLOB_MAX_UPLOAD_BYTES)"),
        ("MAX_RANGES", "blobs.E003", ""),
    ],
)
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "16", None])
def test_a_non_positive_or_non_integer_limit(name, error_id, env, value):
    assert blob_errors(**{name: value}) == [
        (error_id, f"BLOBS[{name!r}]{env} = {value!r} must be a positive integer.")
    ]


@pytest.mark.parametrize("name", ["MAX_UPLOAD_BYTES", "MAX_RANGES"])
def test_a_positive_limit_passes(name):
    assert blob_errors(**{name: 1}) == []


def test_each_mistake_is_reported_at_once():
    ids = [error_id for error_id, _ in blob_errors(SEGMENT_SIZE=32, MAX_UPLOAD_BYTES=0, MAX_RANGES=-5)]
    assert ids == ["blobs.E001", "blobs.E002", "blobs.E003"]


@pytest.mark.parametrize("value", ["next year", "2027-01-01", "2027-13-01T00:00:00Z", None])
@pytest.mark.parametrize("name", ["LEGACY_DEPRECATED_AT", "LEGACY_SUNSET_AT"])
def test_e004_legacy_dates_must_be_iso_with_a_zone(name, value):
    errors = blob_errors(**{name: value})
    assert [e[0] for e in errors] == ["blobs.E004"]
    assert name in errors[0][1]


def test_e004_accepts_a_zoned_date():
    assert blob_errors(LEGACY_SUNSET_AT="2030-06-30T12:00:00+02:00") == []


@pytest.mark.parametrize("value", [0, 512, 1023, 3000, 10_000, True, "4096", None])
def test_e005_the_part_header_limit_is_a_power_of_two_from_1024(value):
    assert [e[0] for e in blob_errors(MAX_PART_HEADER_BYTES=value)] == ["blobs.E005"]


@pytest.mark.parametrize("value", [1024, 4096, 16384])
def test_e005_passes_powers_of_two(value):
    assert blob_errors(MAX_PART_HEADER_BYTES=value) == []


def s3_errors(**overrides) -> list[str]:
    entry = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "erphub-blobs"}}
    with override_settings(STORAGES={**settings.STORAGES, "blobs_s3": entry}):
        return [e[0] for e in blob_errors(**overrides)]


def test_the_shipped_settings_pass_with_an_s3_alias():
    assert s3_errors() == []


@pytest.mark.parametrize("value", [0, 1024 * 1024, 5 * 1024 * 1024 - 1, "8388608"])
def test_e006_an_s3_part_below_five_mib(value):
    assert s3_errors(S3_PART_BYTES=value) == ["blobs.E006"]
    assert blob_errors(S3_PART_BYTES=value) == []  # no S3 alias: no parts


def test_w001_read_ahead_below_a_segment():
    assert s3_errors(READ_AHEAD_BYTES=512 * 1024, SEGMENT_SIZE=1 << 20) == ["blobs.W001"]
