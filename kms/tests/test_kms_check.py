"""``manage.py kms_check``: a fresh data key round-trips through the provider, or a clear non-zero exit."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kms.base import KeyProvider, WrappedKey

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("kms_check", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class LyingProvider(KeyProvider):
    """A provider whose unwrap answers with another key (a broken KMS or proxy)."""

    def wrap(self, data_key, *, context):
        return WrappedKey(ciphertext=b"x" * 40, key_ref="lie-1", algorithm="none")

    def unwrap(self, wrapped, *, context):
        return os.urandom(32)


@pytest.mark.django_db  # the master key's check value is compared with the recorded one
def test_round_trip_ok_names_alias_and_key_ref(counted_wraps, counted_unwraps):
    out, err = run()
    assert out == "✓ KMS key round-trip OK: 32 bytes (local, mk-test-1)\n"
    assert err == ""
    assert counted_wraps == ["local"]
    assert counted_unwraps == ["local:mk-test-1"]


@pytest.mark.django_db
def test_another_provider_by_alias(local_providers):
    local_providers({"local": ["mk-a"], "vault-dr": ["dr-2", "dr-1"]})
    out, _ = run("--provider", "vault-dr")
    assert out.strip() == "✓ KMS key round-trip OK: 32 bytes (vault-dr, dr-2)"


def test_unknown_alias_is_a_clear_error():
    with pytest.raises(CommandError, match=r"'nope' is not configured in KMS_PROVIDERS \(\['local'\]\)"):
        run("--provider", "nope")


def test_missing_master_key_fails_with_the_reason(master_key_missing):
    with pytest.raises(CommandError, match=r"FAILED \(local\): Master key file .*gone.key cannot be read"):
        run()


def test_a_provider_returning_another_key_fails(settings):
    settings.KMS_PROVIDERS = {"liar": {"BACKEND": f"{__name__}.LyingProvider"}}
    settings.KMS_DEFAULT_PROVIDER = "liar"
    with pytest.raises(CommandError, match="returned a different key"):
        run()


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_exit_status_and_no_traceback_from_manage_py(tmp_path):
    env = {**os.environ, "ERPHUB_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "true", "BLOB_MASTER_KEYS": "bad"}
    env.pop("DATABASE_URL", None)
    bad = manage(env, "kms_check")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "KMS key round-trip FAILED (local): BLOB_MASTER_KEYS: entry 1 is not 'id:base64key'." in bad.stderr
    assert bad.stdout == ""

    env["BLOB_MASTER_KEYS"] = f"mk-cli:{base64.b64encode(os.urandom(32)).decode()}"
    ok = manage(env, "kms_check")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "✓ KMS key round-trip OK: 32 bytes (local, mk-cli)\n"
