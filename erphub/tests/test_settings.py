"""Start-up configuration (architecture §10): production refuses to start without secrets; development runs
with none, and without a usable master key neither ``manage.py check`` nor the WSGI app starts. Each case runs
in a fresh interpreter, as a deploy would. Also the first admin account (``manage.py bootstrap_admin``)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parents[2]
SETUP = "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)"
# Variables settings.py reads; a case starts from none of them so the developer's shell cannot leak in.
READ_BY_SETTINGS = (
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "DATABASE_CONN_MAX_AGE",
    "DATABASE_POOL_MAX_SIZE",
    "DATABASE_POOL_MIN_SIZE",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_PREPARED_STATEMENTS",
    "BLOB_STORAGE_DIR",
    "BLOB_STORAGE_BACKEND",
    "BLOB_S3_BUCKET",
    "BLOB_S3_PREFIX",
    "BLOB_S3_SSE_KMS_KEY_ID",
    "BLOB_S3_CONNECT_TIMEOUT",
    "BLOB_S3_READ_TIMEOUT",
    "BLOB_S3_MAX_CONNECTIONS",
    "BLOB_AZURE_CONTAINER",
    "BLOB_AZURE_PREFIX",
    "BLOB_AZURE_CONNECTION_STRING",
    "BLOB_AZURE_ACCOUNT_NAME",
    "BLOB_AZURE_CONNECT_TIMEOUT",
    "BLOB_AZURE_READ_TIMEOUT",
    "BLOB_GCS_BUCKET",
    "BLOB_GCS_PREFIX",
    "BLOB_GCS_CHUNK_BYTES",
    "BLOB_SEGMENT_SIZE",
    "BLOB_MAX_UPLOAD_BYTES",
    "BLOB_GC_GRACE_MINUTES",
    "KEY_PROVIDER",
    "BLOB_MASTER_KEYS",
    "BLOB_MASTER_KEY_FILE",
    "KMS_HEALTH_TTL_SECONDS",
    "KMS_KEY_ID",
    "AWS_REGION",
    "AZURE_VAULT_URL",
    "AZURE_KEY_NAME",
    "KMS_KEY_NAME",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_TRANSIT_KEY",
    "VAULT_TRANSIT_MOUNT",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "KMS_CONNECT_TIMEOUT",
    "KMS_READ_TIMEOUT",
    "KMS_MAX_ATTEMPTS",
    "ERPHUB_VAR_DIR",
    "DJANGO_SUPERUSER_USERNAME",
    "DJANGO_SUPERUSER_PASSWORD",
    "DJANGO_SUPERUSER_EMAIL",
    "REDIS_URL",
    "REDIS_TIMEOUT_SECONDS",
    "REDIS_RETRY_SECONDS",
    "ERPHUB_CACHE_DIR",
    "ERPHUB_CACHE_MAX_ENTRIES",
    "AUDIT_CHECKPOINT_DIR",
    "AUDIT_CHECKPOINT_BUCKET",
    "AUDIT_CHECKPOINT_PREFIX",
    "METRICS_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DJANGO_SECURE_HSTS_SECONDS",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "DJANGO_SECURE_HSTS_PRELOAD",
    "DJANGO_SECURE_PROXY_SSL_HEADER",
)


def start(
    tmp_path: Path, *, argv: tuple[str, ...] = ("-c", SETUP), **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs ``python *argv`` in the checkout with only ``env`` (plus a throwaway var dir) configured."""
    clean = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS}
    clean.update(DJANGO_SETTINGS_MODULE="erphub.settings", ERPHUB_VAR_DIR=str(tmp_path / "var"), **env)
    return subprocess.run(
        [sys.executable, *argv],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def master_keys() -> str:
    return "mk-prod-1:" + base64.b64encode(os.urandom(32)).decode()


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    result = start(tmp_path, DJANGO_DEBUG="false", BLOB_MASTER_KEYS=master_keys())
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=false" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()  # nothing invented in production


def test_production_without_a_master_key_refuses_to_start(tmp_path):
    result = start(tmp_path, DJANGO_DEBUG="false", DJANGO_SECRET_KEY="s" * 50)
    assert result.returncode != 0
    assert "needs an explicit master key: set BLOB_MASTER_KEYS or BLOB_MASTER_KEY_FILE" in result.stderr


@pytest.mark.parametrize("key_source", ["env", "file"])
def test_production_with_secret_and_master_key_starts(tmp_path, key_source):
    env = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 50}
    if key_source == "env":
        env["BLOB_MASTER_KEYS"] = master_keys()
    else:
        env["BLOB_MASTER_KEY_FILE"] = str(tmp_path / "master.key")
    result = start(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert "DEBUG False" in result.stdout
    assert not (tmp_path / "master.key").exists()  # production never creates a key file


def test_development_needs_no_configuration(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DEBUG True" in result.stdout
    secret = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    generated = secret.read_text()
    assert len(generated) >= 50
    assert start(tmp_path).returncode == 0
    assert secret.read_text() == generated  # kept across restarts


# Everything the embedded default keeps in var/ (issue 15 item 12), made the way `make run` makes it:
# settings, migrate, a local master key on first use, an upload, and a connection left open so SQLite's -wal
# and -shm files exist. The umask is the common 022, under which SQLite and mkdir -p would give 0644 and 0755.
EMBEDDED_DEFAULT = """
import io, json, os, stat
os.umask(0o022)
import django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from blobs.services import blob_create
call_command("migrate", verbosity=0)
owner = get_user_model().objects.create_user("owner")
blob_create(owner=owner, stream=io.BytesIO(b"payroll"), filename="payroll.csv", content_type="text/csv")
connection.cursor().execute("SELECT count(*) FROM blobs_blob")
var = str(settings.VAR_DIR)
modes = {".": stat.S_IMODE(os.stat(var).st_mode)}
for parent, dirs, files in os.walk(var):
    for name in dirs + files:
        path = os.path.join(parent, name)
        modes[os.path.relpath(path, var)] = stat.S_IMODE(os.lstat(path).st_mode)
print(json.dumps(modes))
"""


def test_the_embedded_default_keeps_var_owner_only(tmp_path):
    result = start(tmp_path, argv=("-c", EMBEDDED_DEFAULT))
    assert result.returncode == 0, result.stderr
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    # What must be there, so that the check below cannot pass on an empty directory.
    for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm", "master.key", "secret_key", "blobs"):
        assert name in modes, sorted(modes)
    objects = [name for name in modes if name.startswith("blobs/") and name.count("/") == 3]
    assert len(objects) == 1, sorted(modes)  # blobs/ab/cd/<id>: two shard directories and the object
    directories = {name for name in modes if (tmp_path / "var" / name).is_dir()}
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if name in directories else 0o600)
    }
    assert loose == {}  # password hashes, sessions, wrapped keys and ciphertext: the owner's only


def test_an_invalid_boolean_is_refused_with_the_fix(tmp_path):
    result = start(tmp_path, DJANGO_DEBUG="maybe")
    assert result.returncode != 0
    assert "DJANGO_DEBUG='maybe' is not a boolean; use true or false." in result.stderr


# --- production without a usable master key: `manage.py check` and the WSGI app refuse ----------------------

# METRICS_TOKEN too: without it `manage.py check` warns (erphub.W001, erphub/tests/test_metrics.py).
PRODUCTION = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 50, "METRICS_TOKEN": "m" * 32}
CHECK = ("manage.py", "check")
IMPORT_WSGI = ("-c", "import erphub.wsgi; print('booted')")


def test_check_fails_in_production_when_the_key_file_is_missing(tmp_path):
    missing = tmp_path / "nonexistent" / "master.key"
    result = start(tmp_path, argv=CHECK, BLOB_MASTER_KEY_FILE=str(missing), **PRODUCTION)
    assert result.returncode != 0
    assert "kms.E003" in result.stderr
    assert f"Master key file {missing} cannot be read" in result.stderr
    assert not missing.exists()  # checking never invents a key in production


def test_check_fails_in_production_when_the_env_keys_are_garbage(tmp_path):
    result = start(tmp_path, argv=CHECK, BLOB_MASTER_KEYS="garbage", **PRODUCTION)
    assert result.returncode != 0
    assert "kms.E003" in result.stderr
    assert "BLOB_MASTER_KEYS: entry 1 is not 'id:base64key'" in result.stderr


@pytest.mark.parametrize("key_source", ["env", "file"])
def test_check_passes_in_production_with_a_valid_key(tmp_path, key_source):
    env = dict(PRODUCTION)
    if key_source == "env":
        env["BLOB_MASTER_KEYS"] = master_keys()
    else:
        key_file = tmp_path / "master.key"
        key_file.write_text(master_keys() + "\n")
        env["BLOB_MASTER_KEY_FILE"] = str(key_file)
    # Checkpoints in a local directory are not write-once: production is warned, not refused.
    result = start(tmp_path, argv=CHECK, **env)
    assert result.returncode == 0, result.stderr
    assert "audit.W002" in result.stderr
    s3 = {"AUDIT_CHECKPOINT_BUCKET": "erphub-audit", "AWS_REGION": "eu-west-1"}
    result = start(tmp_path, argv=CHECK, **s3, **env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_wsgi_app_refuses_to_boot_without_a_usable_master_key(tmp_path):
    # gunicorn imports erphub.wsgi and runs no system checks of its own.
    missing = tmp_path / "nonexistent" / "master.key"
    result = start(tmp_path, argv=IMPORT_WSGI, BLOB_MASTER_KEY_FILE=str(missing), **PRODUCTION)
    assert result.returncode != 0
    assert "booted" not in result.stdout
    assert "ImproperlyConfigured" in result.stderr
    assert "kms.E003" in result.stderr
    assert f"Master key file {missing} cannot be read" in result.stderr


def test_the_wsgi_app_boots_with_a_valid_master_key(tmp_path):
    result = start(tmp_path, argv=IMPORT_WSGI, BLOB_MASTER_KEYS=master_keys(), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "booted" in result.stdout


def test_there_is_no_asgi_entry_point():
    # Under ASGI Django reads a synchronous StreamingHttpResponse into memory: whole blobs in RAM.
    assert not (BASE_DIR / "erphub" / "asgi.py").exists()
    assert importlib.util.find_spec("erphub.asgi") is None


# --- key providers from the deployment's variables (architecture.md §10) -------------------------------

PROVIDERS = (
    "import django; django.setup(); from django.conf import settings; "
    "print('PROVIDERS', ','.join(settings.KMS_PROVIDERS)); print('DEFAULT', settings.KMS_DEFAULT_PROVIDER)"
)
CLOUD_ENV = {
    "KMS_KEY_ID": "alias/erphub",
    "AWS_REGION": "eu-west-1",
    "AZURE_VAULT_URL": "https://erphub.vault.azure.net",
    "AZURE_KEY_NAME": "blob-kek",
    "KMS_KEY_NAME": "projects/p/locations/europe-west1/keyRings/erphub/cryptoKeys/blob-kek",
    "VAULT_ADDR": "https://vault.example:8200",
    "VAULT_TOKEN": "s.not-a-real-token",
    "VAULT_TRANSIT_KEY": "erphub-blobs",
}


def test_production_with_key_provider_aws_but_no_key_id_refuses_to_start(tmp_path):
    result = start(tmp_path, KEY_PROVIDER="aws", AWS_REGION="eu-west-1", **PRODUCTION)
    assert result.returncode != 0
    assert "KEY_PROVIDER=aws needs KMS_KEY_ID (docs/keys.md)" in result.stderr


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ("azure", "AZURE_VAULT_URL, AZURE_KEY_NAME"),
        ("gcp", "KMS_KEY_NAME"),
        ("vault", "VAULT_ADDR, VAULT_TOKEN"),
    ],
)
def test_production_refuses_a_cloud_provider_without_its_variables(tmp_path, provider, missing):
    env = {"VAULT_TRANSIT_KEY": "k"} if provider == "vault" else {}
    result = start(tmp_path, KEY_PROVIDER=provider, **env, **PRODUCTION)
    assert result.returncode != 0
    assert f"KEY_PROVIDER={provider} needs {missing}" in result.stderr


def test_the_seeds_kms_means_aws_and_production_needs_no_master_key_then(tmp_path):
    env = {"KEY_PROVIDER": "kms", "KMS_KEY_ID": "alias/erphub", "AWS_REGION": "eu-west-1", **PRODUCTION}
    result = start(tmp_path, argv=("-c", PROVIDERS), **env)
    assert result.returncode == 0, result.stderr
    assert "PROVIDERS aws\n" in result.stdout  # never had a master key: no local blobs to read
    assert "DEFAULT aws" in result.stdout
    result = start(tmp_path, argv=CHECK, **env)  # building the client needs no call to AWS
    assert result.returncode == 0, result.stderr


def test_every_cloud_alias_is_configured_from_its_variables_and_local_stays(tmp_path):
    result = start(tmp_path, argv=("-c", PROVIDERS), KEY_PROVIDER="vault", **CLOUD_ENV)
    assert result.returncode == 0, result.stderr
    assert "PROVIDERS local,aws,azure,gcp,vault" in result.stdout
    assert "DEFAULT vault" in result.stdout
    result = start(tmp_path, argv=CHECK, KEY_PROVIDER="vault", **CLOUD_ENV)
    assert result.returncode == 0, result.stderr


DATABASE_OPTIONS = (
    "import django; django.setup(); from django.conf import settings; d = settings.DATABASES['default'];"
    " print('ENGINE', d['ENGINE']); print('PREPARE', d['OPTIONS'].get('prepare_threshold'))"
)


@pytest.mark.parametrize(
    ("setting", "threshold"), [({}, "2"), ({"DATABASE_PREPARED_STATEMENTS": "false"}, "None")]
)
def test_postgresql_prepares_what_every_request_runs_unless_told_not_to(tmp_path, setting, threshold):
    url = "postgres://u@127.0.0.1:1/x"  # never connected to
    result = start(tmp_path, argv=("-c", DATABASE_OPTIONS), DATABASE_URL=url, **setting)
    assert result.returncode == 0, result.stderr
    assert "ENGINE core.backends.postgresql" in result.stdout
    assert f"PREPARE {threshold}" in result.stdout


def test_production_moving_from_local_to_a_cloud_kms_keeps_the_local_keys(tmp_path):
    env = {"KEY_PROVIDER": "gcp", "BLOB_MASTER_KEYS": master_keys(), **CLOUD_ENV, **PRODUCTION}
    result = start(tmp_path, argv=("-c", PROVIDERS), **env)
    assert result.returncode == 0, result.stderr
    assert "PROVIDERS local,aws,azure,gcp,vault" in result.stdout
    assert "DEFAULT gcp" in result.stdout


def test_an_unknown_key_provider_is_refused(tmp_path):
    result = start(tmp_path, KEY_PROVIDER="hsm")
    assert result.returncode != 0
    assert "KEY_PROVIDER='hsm' is not one of local, aws, azure, gcp, vault" in result.stderr


def test_development_with_key_provider_aws_but_no_key_id_names_the_missing_variable(tmp_path):
    result = start(tmp_path, argv=CHECK, KEY_PROVIDER="aws")
    assert result.returncode != 0
    assert "KEY_PROVIDER=aws needs KMS_KEY_ID (docs/keys.md)" in result.stderr


@pytest.mark.parametrize(
    ("module", "provider", "sdk"),
    [
        ("hvac", "vault", "hvac"),
        ("boto3", "aws", "boto3"),
        ("google.cloud.kms_v1", "gcp", "google-cloud-kms"),
        ("azure.keyvault.keys", "azure", "azure-keyvault-keys"),
    ],
)
def test_a_missing_sdk_fails_the_check_with_the_fix(tmp_path, module, provider, sdk):
    # The SDK is blocked in the child interpreter (sys.modules[name] = None makes its import fail).
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'check'])"
    )
    result = start(tmp_path, argv=("-c", code), KEY_PROVIDER=provider, **CLOUD_ENV)
    assert result.returncode != 0
    assert "kms.E002" in result.stderr
    assert sdk in result.stderr
    assert "pip install -r requirements.txt" in result.stderr


# --- bootstrap_admin ----------------------------------------------------------------------------------------


def bootstrap() -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("bootstrap_admin", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_bootstrap_creates_admin_with_a_generated_password_printed_once(settings):
    settings.BOOTSTRAP_SUPERUSER = {"USERNAME": "admin", "PASSWORD": None, "EMAIL": ""}
    out, _err = bootstrap()
    assert "Created admin account 'admin'." in out
    prefix = "Generated password (shown once, store it now): "
    [line] = [line for line in out.splitlines() if line.startswith(prefix)]
    password = line.removeprefix(prefix)
    assert len(password) >= 20
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser
    assert user.is_staff
    assert user.check_password(password)
    assert "manage.py changepassword admin" in out  # how to get back in, printed with the password

    out, err = bootstrap()
    assert out == ""  # not printed again
    assert "Admin account 'admin' exists; forgot its password? manage.py changepassword admin" in err
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    user.refresh_from_db()
    assert user.check_password(password)  # and not reset


@pytest.mark.django_db
def test_bootstrap_respects_the_configured_password(settings):
    settings.BOOTSTRAP_SUPERUSER = {
        "USERNAME": "root-admin",
        "PASSWORD": "Corr3ct-Horse!",
        "EMAIL": "ops@example.com",
    }
    out, _err = bootstrap()
    assert "Corr3ct-Horse!" not in out
    assert "Generated password" not in out
    user = get_user_model().objects.get(username="root-admin")
    assert user.email == "ops@example.com"
    assert user.check_password("Corr3ct-Horse!")


def test_redis_url_makes_the_default_cache_shared(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default'])"
    )
    shared = start(tmp_path, argv=("-c", code), REDIS_URL="redis://127.0.0.1:6379/7")
    assert shared.returncode == 0, shared.stderr
    assert "core.cache.ResilientRedisCache" in shared.stdout
    assert "redis://127.0.0.1:6379/7" in shared.stdout
    assert "'socket_timeout': 0.5" in shared.stdout  # a Redis that stops answering cannot hold a request
    # The backend works against the real server (django-prometheus counts its gets).
    use = (
        "import django; django.setup(); from django.core.cache import cache; "
        "cache.set('erphub-probe', 'ok', 5); print('GOT', cache.get('erphub-probe'))"
    )
    probe = start(tmp_path, argv=("-c", use), REDIS_URL="redis://127.0.0.1:6379/7")
    assert probe.returncode == 0, probe.stderr
    assert "GOT ok" in probe.stdout
    # Without Redis: files shared by the machine's workers (the login lockout holds across them).
    local = start(tmp_path, argv=("-c", code))
    assert "core.cache.LockedFileCache" in local.stdout


# --- audit checkpoints in S3 (deploy/README.md) -------------------------------------------------------------

CHECKPOINT_STORAGE = (
    "import django; django.setup(); from django.conf import settings; "
    "from django.core.files.storage import storages; "
    "print('CONFIG', settings.STORAGES['audit_checkpoints']); "
    "s = storages['audit_checkpoints']; print('CLASS', type(s).__module__, type(s).__name__); "
    "print('S3', getattr(s, 'bucket_name', None), getattr(s, 'location', None), "
    "getattr(s, 'file_overwrite', None))"
)


def test_a_checkpoint_bucket_selects_s3_storage_that_never_overwrites(tmp_path):
    result = start(
        tmp_path,
        argv=("-c", CHECKPOINT_STORAGE),
        AUDIT_CHECKPOINT_BUCKET="erphub-audit",
        AUDIT_CHECKPOINT_PREFIX="prod/checkpoints",
        AWS_REGION="eu-west-1",
    )
    assert result.returncode == 0, result.stderr
    assert "CLASS storages.backends.s3 S3Storage" in result.stdout
    assert "S3 erphub-audit prod/checkpoints False" in result.stdout


def test_without_a_checkpoint_bucket_checkpoints_stay_in_a_local_directory(tmp_path):
    result = start(tmp_path, argv=("-c", CHECKPOINT_STORAGE), AUDIT_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    assert result.returncode == 0, result.stderr
    assert "CLASS django.core.files.storage.filesystem FileSystemStorage" in result.stdout
    assert str(tmp_path / "ckpt") in result.stdout


# --- HTTPS in production: redirect, HSTS, the proxy's header (manage.py check --deploy) --------------------

HTTPS_PROBE = (
    "import django; django.setup(); from django.test import Client; c = Client(HTTP_HOST='erp.example.com'); "
    "r = c.get('/api/schema/'); print('plain', r.status_code, r.get('Location')); "
    "r = c.get('/health'); print('health', r.status_code); "
    "r = c.get('/health', HTTP_X_FORWARDED_PROTO='https'); "
    "print('hsts', r.get('Strict-Transport-Security'))"
)


def probe_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The probe's own output (stdout also carries each request's JSON access line)."""
    return [line for line in result.stdout.splitlines() if not line.startswith("{")]


def production_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "k" * 60,
        "DJANGO_ALLOWED_HOSTS": "erp.example.com",
        "BLOB_MASTER_KEYS": master_keys(),
        "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        **extra,
    }


def test_production_redirects_to_https_and_sends_hsts_behind_the_proxy(tmp_path):
    result = start(tmp_path, argv=("-c", HTTPS_PROBE), **production_env())
    assert result.returncode == 0, result.stderr
    lines = probe_lines(result)
    assert "plain 301 https://erp.example.com/api/schema/" in lines
    assert "health 200" in lines  # probes reach the pod over plain HTTP: never redirected
    assert "hsts max-age=31536000; includeSubDomains; preload" in lines


def test_hsts_and_the_redirect_are_configurable(tmp_path):
    env = production_env(
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SECURE_HSTS_SECONDS="600",
        DJANGO_SECURE_HSTS_PRELOAD="false",
        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
    )
    result = start(tmp_path, argv=("-c", HTTPS_PROBE), **env)
    assert result.returncode == 0, result.stderr
    lines = probe_lines(result)
    assert lines[0].startswith("plain 200") or lines[0].startswith("plain 4")  # not redirected
    assert "hsts max-age=600" in lines


def test_development_neither_redirects_nor_sends_hsts(tmp_path):
    result = start(tmp_path, argv=("-c", HTTPS_PROBE.replace("erp.example.com", "localhost")))
    assert result.returncode == 0, result.stderr
    assert "hsts None" in probe_lines(result)
    assert not probe_lines(result)[0].startswith("plain 301")


def test_check_deploy_warns_when_https_is_switched_off(tmp_path):
    env = production_env(
        DJANGO_SECURE_SSL_REDIRECT="false", DJANGO_SECURE_HSTS_SECONDS="0", METRICS_TOKEN="t"
    )
    result = start(tmp_path, argv=("manage.py", "check", "--deploy"), **env)
    assert "security.W008" in result.stdout + result.stderr
    assert "security.W004" in result.stdout + result.stderr


BLOB_STORES = (
    "import django, json; django.setup(); from django.conf import settings;"
    " s3 = settings.STORAGES.get('blobs_s3'); c = s3 and s3['OPTIONS'].pop('client_config');"
    " print(json.dumps({'alias': settings.BLOBS['STORAGE_ALIAS'],"
    " 'fs': settings.STORAGES['blobs']['BACKEND'], 's3': s3,"
    " 'timeouts': c and [c.connect_timeout, c.read_timeout, c.retries, c.max_pool_connections]}))"
)


def test_blob_storage_backend_chooses_the_alias_and_the_filesystem_alias_stays(tmp_path):
    default = json.loads(start(tmp_path, argv=("-c", BLOB_STORES)).stdout)
    assert (default["alias"], default["s3"]) == ("blobs", None)
    env = {
        "BLOB_STORAGE_BACKEND": "s3",
        "BLOB_S3_BUCKET": "erphub-blobs",
        "BLOB_S3_SSE_KMS_KEY_ID": "alias/b",
    }
    result = start(tmp_path, argv=("-c", BLOB_STORES), **env)
    assert result.returncode == 0, result.stderr
    s3 = json.loads(result.stdout)
    assert s3["alias"] == "blobs_s3"
    assert s3["fs"] == "django.core.files.storage.FileSystemStorage"  # old rows name "blobs": still readable
    assert s3["s3"] == {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": "erphub-blobs",
            "location": "blobs",
            "object_parameters": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/b"},
        },
    }
    assert s3["timeouts"] == [3.0, 20.0, {"mode": "standard", "total_max_attempts": 3}, 50]


AZURE_STORE = (
    "import django, json; django.setup(); from django.conf import settings;"
    " a = settings.STORAGES['blobs_azure']; o = a['OPTIONS']; c = o.pop('token_credential', None);"
    " print(json.dumps({'alias': settings.BLOBS['STORAGE_ALIAS'], 'azure': a,"
    " 'credential': type(c).__name__ if c else None}))"
)


def test_blob_storage_backend_azure_builds_its_alias_from_a_connection_string_or_an_identity(tmp_path):
    # Azurite's well-known development account: public test data.
    connection = "UseDevelopmentStorage=true"
    env = {"BLOB_STORAGE_BACKEND": "azure", "BLOB_AZURE_CONTAINER": "erphub-blobs"}
    result = start(tmp_path, argv=("-c", AZURE_STORE), **env, BLOB_AZURE_CONNECTION_STRING=connection)
    assert result.returncode == 0, result.stderr
    azure = json.loads(result.stdout)
    assert azure == {
        "alias": "blobs_azure",
        "azure": {
            "BACKEND": "storages.backends.azure_storage.AzureStorage",
            "OPTIONS": {
                "azure_container": "erphub-blobs",
                "location": "blobs",
                "client_options": {
                    "connection_timeout": 3.0,
                    "read_timeout": 20.0,
                    "retry_total": 3,
                    "initial_backoff": 1,
                    "increment_base": 2,
                },
                "connection_string": connection,
            },
        },
        "credential": None,
    }
    result = start(
        tmp_path, argv=("-c", AZURE_STORE), **env, BLOB_AZURE_ACCOUNT_NAME="erphub", BLOB_AZURE_PREFIX="p"
    )
    assert result.returncode == 0, result.stderr
    azure = json.loads(result.stdout)
    assert azure["azure"]["OPTIONS"]["account_name"] == "erphub"
    assert azure["azure"]["OPTIONS"]["location"] == "p"
    assert "connection_string" not in azure["azure"]["OPTIONS"]
    assert azure["credential"] == "DefaultAzureCredential"


GCS_STORES = (
    "import django, json; django.setup(); from django.conf import settings;"
    " print(json.dumps({'alias': settings.BLOBS['STORAGE_ALIAS'],"
    " 'gcs': settings.STORAGES.get('blobs_gcs')}))"
)


def test_blob_storage_backend_gcs_builds_the_gcs_alias(tmp_path):
    default = json.loads(start(tmp_path, argv=("-c", GCS_STORES)).stdout)
    assert default["gcs"] is None
    env = {"BLOB_STORAGE_BACKEND": "gcs", "BLOB_GCS_BUCKET": "erphub-blobs", "BLOB_GCS_PREFIX": "erp/blobs"}
    result = start(tmp_path, argv=("-c", GCS_STORES), **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "alias": "blobs_gcs",
        "gcs": {
            "BACKEND": "storages.backends.gcloud.GoogleCloudStorage",
            "OPTIONS": {"bucket_name": "erphub-blobs", "location": "erp/blobs", "blob_chunk_size": 8388608},
        },
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BLOB_STORAGE_BACKEND": "s3"}, "BLOB_STORAGE_BACKEND=s3 needs BLOB_S3_BUCKET"),
        ({"BLOB_STORAGE_BACKEND": "azure"}, "BLOB_STORAGE_BACKEND=azure needs BLOB_AZURE_CONTAINER"),
        (
            {"BLOB_AZURE_CONTAINER": "erphub-blobs"},
            "BLOB_AZURE_CONTAINER needs BLOB_AZURE_CONNECTION_STRING or BLOB_AZURE_ACCOUNT_NAME",
        ),
        ({"BLOB_STORAGE_BACKEND": "gcs"}, "BLOB_STORAGE_BACKEND=gcs needs BLOB_GCS_BUCKET"),
        (
            {"BLOB_GCS_BUCKET": "erphub-blobs", "BLOB_GCS_CHUNK_BYTES": "1000000"},
            "BLOB_GCS_CHUNK_BYTES=1000000 is not a multiple of 262144",
        ),
        (
            {"BLOB_STORAGE_BACKEND": "ftp"},
            "BLOB_STORAGE_BACKEND='ftp' is not one of filesystem, s3, azure, gcs",
        ),
    ],
)
def test_a_blob_storage_backend_it_cannot_use_stops_the_start(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
