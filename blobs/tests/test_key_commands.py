"""blobs_verify and blobs_export_key (architecture.md §10 conventions: results on stdout, the rest on stderr,
non-zero exit naming what failed)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
import tink
from django.core.management import call_command
from django.core.management.base import CommandError
from tink import cleartext_keyset_handle, streaming_aead

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, make_user, pattern, run
from kms.exceptions import KeyUnavailable
from kms.providers.local import LocalKeyProvider

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(256),
]


def run_failing(name: str, *args: str) -> tuple[str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue(), str(info.value)


def object_path(blob: Blob) -> Path:
    return Path(blob_store(blob.storage_alias).storage.path(blob.storage_name))


def tamper(blob: Blob) -> None:
    path = object_path(blob)
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 1
    path.write_bytes(bytes(raw))


@pytest.fixture
def mixed(owner, local_providers):
    """3 blobs under local:mk-1, 2 under local:mk-2, 1 under other:ok-1."""
    local_providers({"local": ["mk-1"], "other": ["ok-1"]})
    first = [make_blob(owner, pattern(400, seed=i)) for i in range(3)]
    local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]})
    second = [make_blob(owner, pattern(500, seed=10 + i)) for i in range(2)]
    local_providers({"local": ["mk-2", "mk-1"], "other": ["ok-1"]}, default="other")
    third = [make_blob(owner, b"other provider")]
    return first, second, third


# --- blobs_verify -------------------------------------------------------------------------------------------


def test_verify_counts_per_key_reference(mixed):
    out, err = run("blobs_verify")
    assert out.splitlines() == [
        "local\tmk-1\t3\t0",
        "local\tmk-2\t2\t0",
        "other\tok-1\t1\t0",
        "total\t6\t0",
    ]
    assert "FAILED" not in err


def test_verify_failures_are_named_and_exit_non_zero(mixed):
    first, second, _ = mixed
    tamper(first[1])
    object_path(second[0]).unlink()
    out, err, message = run_failing("blobs_verify")
    assert "local\tmk-1\t2\t1" in out.splitlines()
    assert "local\tmk-2\t1\t1" in out.splitlines()
    assert out.splitlines()[-1] == "total\t4\t2"
    assert f"FAILED {first[1].pk}: the object does not authenticate" in err
    assert f"FAILED {second[0].pk}: the object cannot be read" in err
    assert message.startswith("2 of 6 blob(s) failed verification: ")
    assert {str(first[1].pk), str(second[0].pk)} == set(message.split(": ", 1)[1].split(", "))


def test_verify_by_key_ref_and_by_provider(mixed):
    out, _ = run("blobs_verify", "--key-ref", "mk-2")
    assert out.splitlines() == ["local\tmk-2\t2\t0", "total\t2\t0"]
    out, _ = run("blobs_verify", "--provider", "other")
    assert out.splitlines() == ["other\tok-1\t1\t0", "total\t1\t0"]


def test_verify_key_ref_and_provider_are_exclusive(mixed):
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("blobs_verify", "--key-ref", "mk-1", "--provider", "local")


def test_verify_a_random_sample(mixed, counted_unwraps):
    out, _ = run("blobs_verify", "--sample", "4")
    assert out.splitlines()[-1] == "total\t4\t0"
    assert len(counted_unwraps) == 4
    out, _ = run("blobs_verify", "--sample", "100")
    assert out.splitlines()[-1] == "total\t6\t0"


def test_verify_a_sample_of_a_selection(mixed):
    out, _ = run("blobs_verify", "--key-ref", "mk-1", "--sample", "2")
    assert out.splitlines() == ["local\tmk-1\t2\t0", "total\t2\t0"]


def test_verify_with_the_kms_down_fails_naming_the_blobs(mixed, monkeypatch):
    def down(self, wrapped, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", down)
    _out, err, message = run_failing("blobs_verify", "--provider", "other")
    [(blob)] = mixed[2]
    assert f"FAILED {blob.pk}: the data key cannot be unwrapped: KMS unreachable" in err
    assert message == f"1 of 1 blob(s) failed verification: {blob.pk}"


def test_verify_nothing_to_verify():
    out, _ = run("blobs_verify")
    assert out == "total\t0\t0\n"


# --- blobs_export_key ---------------------------------------------------------------------------------------

FLAG = "--acknowledge-key-exposure"
AS = ("--as", "keyadmin")


@pytest.fixture(autouse=True)
def keyadmin(db):
    from erphub import roles

    return make_user("keyadmin", perms=(), roles=(roles.KEY_ADMINISTRATORS,))


def tink_decrypt(keyset_json: str, blob: Blob) -> bytes:
    """What docs/disaster-recovery.md tells an operator to do, with Python's Tink."""
    streaming_aead.register()
    handle = cleartext_keyset_handle.read(tink.JsonKeysetReader(keyset_json))
    primitive = handle.primitive(streaming_aead.StreamingAead)
    associated_data = uuid.UUID(str(blob.pk)).bytes
    with (
        open(object_path(blob), "rb") as ciphertext,
        primitive.new_decrypting_stream(ciphertext, associated_data) as plaintext,
    ):
        return plaintext.read()


@pytest.mark.parametrize("size", [0, 1, 5000])
def test_export_key_then_any_tink_decrypts_the_stored_object(owner, settings, size):
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 1 << 20}  # Tink's AES256_GCM_HKDF_1MB, the default
    blob = make_blob(owner, pattern(size))
    out, err = run("blobs_export_key", str(blob.pk), FLAG, *AS)
    keyset = json.loads(out)
    assert keyset["key"][0]["outputPrefixType"] == "RAW"
    assert tink_decrypt(out, blob) == pattern(size)
    assert "WARNING: this prints the data key" in err
    assert blob.pk.bytes.hex() in err


def test_export_key_with_small_segments(owner):
    blob = make_blob(owner, pattern(3000))
    out, _ = run("blobs_export_key", str(blob.pk), FLAG, *AS)
    assert tink_decrypt(out, blob) == pattern(3000)


def test_export_key_after_rewrap_and_reencrypt(owner, local_providers, django_capture_on_commit_callbacks):
    local_providers({"local": ["mk-1"]})
    blob = make_blob(owner, pattern(900))
    local_providers({"local": ["mk-2", "mk-1"]})
    run("blobs_rewrap")
    with django_capture_on_commit_callbacks(execute=True):
        run("blobs_reencrypt")
    blob = Blob.objects.get(pk=blob.pk)
    out, _ = run("blobs_export_key", str(blob.pk), FLAG, *AS)
    assert tink_decrypt(out, blob) == pattern(900)


def test_export_key_refuses_without_the_acknowledgement(owner):
    blob = make_blob(owner, b"secret")
    out, err, message = run_failing("blobs_export_key", str(blob.pk), *AS)
    assert out == ""
    assert message == f"Refusing to print a data key without {FLAG}."
    assert "WARNING" in err


@pytest.mark.parametrize("blob_id", ["00000000-0000-0000-0000-000000000000", "nope"])
def test_export_key_unknown_blob(blob_id):
    out, _err, message = run_failing("blobs_export_key", blob_id, FLAG, *AS)
    assert out == ""
    assert message == f"No ready blob with id {blob_id!r}."


def test_export_key_with_the_kms_down_prints_nothing(owner, monkeypatch):
    blob = make_blob(owner, b"secret")

    def down(self, wrapped, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", down)
    out, _err, message = run_failing("blobs_export_key", str(blob.pk), FLAG, *AS)
    assert out == ""
    assert message == f"The data key of blob {blob.pk} cannot be unwrapped: KMS unreachable"


def test_export_key_is_audited_with_the_named_key_administrator(owner):
    blob = make_blob(owner, b"secret")
    run("blobs_export_key", str(blob.pk), FLAG, *AS)
    event = AuditEvent.objects.get(action="blob.key_export")
    assert (event.actor, event.outcome, event.target_id) == ("keyadmin", "success", str(blob.pk))


@pytest.mark.parametrize("who", ["owner", "nobody", "retired-admin"])
def test_export_key_refuses_anyone_but_an_active_key_administrator(owner, who):
    from erphub import roles

    make_user("retired-admin", perms=(), roles=(roles.KEY_ADMINISTRATORS,), is_active=False)
    blob = make_blob(owner, b"secret")
    out, _err, message = run_failing("blobs_export_key", str(blob.pk), FLAG, "--as", who)
    assert out == ""
    assert message.startswith(f"{who!r} is not an active key administrator")
    event = AuditEvent.objects.get(action="blob.key_export")
    assert (event.outcome, event.details) == ("denied", {"as": who})


def test_export_key_refuses_a_superuser_outside_the_key_administrators_role(owner):
    # has_perm() is True for every active superuser; the data key in clear needs the explicit grant.
    make_user("root", perms=(), is_superuser=True, is_staff=True)
    blob = make_blob(owner, b"secret")
    with pytest.raises(CommandError) as info:
        call_command(
            "blobs_export_key", str(blob.pk), FLAG, "--as", "root", stdout=io.StringIO(), stderr=io.StringIO()
        )
    message = str(info.value)
    assert "\n" not in message  # one line, what manage.py prints after "CommandError: "
    assert message.startswith("'root' is not an active key administrator")
    assert "superuser status is not enough" in message
    assert info.value.returncode != 0  # manage.py exits with it
    event = AuditEvent.objects.get(action="blob.key_export")
    assert (event.outcome, event.details) == ("denied", {"as": "root"})


@pytest.mark.parametrize("grant", ["role", "permission"])
def test_export_key_allows_an_explicit_grant_superuser_or_not(owner, grant):
    from django.contrib.auth.models import Permission

    from erphub import roles

    user = make_user(
        "granted",
        perms=(),
        roles=(roles.KEY_ADMINISTRATORS,) if grant == "role" else (),
        is_superuser=grant == "role",  # a superuser inside the role is allowed: the role is the grant
    )
    if grant == "permission":
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="kms", codename="export_data_key")
        )
    blob = make_blob(owner, pattern(300))
    out, _ = run("blobs_export_key", str(blob.pk), FLAG, "--as", "granted")
    assert tink_decrypt(out, blob) == pattern(300)
    event = AuditEvent.objects.get(action="blob.key_export")
    assert (event.actor, event.outcome) == ("granted", "success")
