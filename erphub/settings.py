"""Django settings for ERP Hub — Secure Blob Streaming.

This module is the only place that reads the environment (architecture.md §10). Every value has a development
default with a short comment, except production secrets: with ``DJANGO_DEBUG=false`` a missing secret key
or master key stops start-up here rather than surfacing mid-request.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, overload

import dj_database_url
import structlog
from django.core.exceptions import ImproperlyConfigured

from core.secret_files import create_private_file, create_secret_file

BASE_DIR = Path(__file__).resolve().parent.parent


@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: None = None) -> str | None: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false.")


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None


def _env_float(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in (_env(name, default) or "").split(",") if item.strip()]


# Development state (SQLite database, local blobs, generated secrets) lives here; never in git.
VAR_DIR = Path(_env("ERPHUB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = _env_bool("DJANGO_DEBUG", True)  # false = production: secrets below become mandatory


def _development_secret_key() -> str:
    """A per-checkout secret generated once into var/ (0600), so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    create_secret_file(path, secrets.token_urlsafe(50))  # a no-op once it exists (or another process won)
    return path.read_text().strip()


SECRET_KEY = _env("DJANGO_SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=false.")
    SECRET_KEY = _development_secret_key()

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")  # comma list
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")  # comma list of scheme://host[:port]

INSTALLED_APPS = [
    "erphub.apps.ErphubAdminConfig",  # django.contrib.admin, gated by roles (erphub/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",  # refresh rotation + logout (POST /api/token/blacklist/)
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: no CDN, strict CSP
    "erphub",
    "kms",
    "blobs",
    "audit",
    "flags",  # rollout flags (DESIGN §7): gate the secure file API
    "audit.apps.ConfigHistoryConfig",  # django-auditlog, named "Configuration history" (audit/apps.py)
    # Request, database and cache metrics on /metrics (with ours; multiprocess mode under gunicorn).
    "django_prometheus",
]

MIDDLEWARE = [
    # django-prometheus times and counts every request: first in, last out.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # First of ours: every response, errors included, carries the X-Request-ID its audit events were
    # written under.
    "audit.middleware.RequestContextMiddleware",
    # One JSON line per request, written when its response (a streamed body included) is over.
    "erphub.access_log.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A Content-Security-Policy on every response that has none (pages: same-origin files only, no inline
    # script; JSON: nothing), errors from the middleware below included (erphub/csp.py).
    "erphub.csp.ContentSecurityPolicyMiddleware",
    # Outermost of ours: maps domain errors raised outside DRF (upload handler, admin, health) to the one
    # JSON error body, and discards uploads that no view claimed (architecture.md §5).
    "blobs.middleware.BlobErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any view-time parsing (the CSRF check reads request.POST): no multipart bodies from anonymous
    # clients (blobs/middleware.py says why).
    "blobs.middleware.MultipartNeedsAuthMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-auditlog: who changed a configuration model, for its admin history (not the blob trail);
    # skipped for GET/HEAD, which change no configuration (audit/middleware.py says what it saves).
    "audit.middleware.ConfigHistoryMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "erphub.urls"
WSGI_APPLICATION = "erphub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite (WAL) by default, PostgreSQL in production. DATABASE_URL follows dj-database-url.
DATABASES = {
    "default": dj_database_url.parse(
        _env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=_env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# django-prometheus's wrappers of the same backends count queries, errors and connections per database.
_PROMETHEUS_DB_ENGINES = {
    # django-prometheus's SQLite wrapper, with one writer per process at a time (core/backends/sqlite3).
    "django.db.backends.sqlite3": "core.backends.sqlite3",
    # django-prometheus's, with prepared statements for what every request runs (core/backends/postgresql).
    "django.db.backends.postgresql": "core.backends.postgresql",
}
DATABASES["default"]["ENGINE"] = _PROMETHEUS_DB_ENGINES.get(
    DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"]
)
# A pool of database connections per worker process (architecture.md §12). Under the event worker each
# request is a greenlet with its own Django connection, so CONN_MAX_AGE cannot reuse one; closing it (at the
# end of the request, or core.db.release_connections before a body streams) gives it back to the pool.
# Connecting cost ~7 ms a request on PostgreSQL, ~1.4 ms on SQLite. Per worker process, PostgreSQL lends at
# most this many connections (a request waits for one); SQLite keeps at most this many idle per database
# file. 0 = no pool.
_pool_max_size = _env_int("DATABASE_POOL_MAX_SIZE", 8)  # connections per worker process
if _pool_max_size < 0:
    raise ImproperlyConfigured(f"DATABASE_POOL_MAX_SIZE={_pool_max_size} must be 0 (no pool) or more.")
if DATABASES["default"]["ENGINE"].endswith(".sqlite3"):
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so two writers
    # queue on the busy timeout, not failing with "database is locked" on lock upgrade (architecture.md §8).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        # Idle connections kept per database file (core/backends/sqlite3, its docstring).
        "pool_max_size": _pool_max_size,
    }
    # SQLite creates a missing database file with the umask's mode (0644: password hashes, sessions and
    # wrapped keys readable by every local user) and gives its -wal and -shm files the database file's own
    # mode: create it empty and owner-only first, its directory (var/) 0700 (issue 15 item 12).
    _sqlite_name = str(DATABASES["default"].get("NAME") or "")
    if _sqlite_name and _sqlite_name != ":memory:" and not _sqlite_name.startswith("file:"):
        create_private_file(Path(_sqlite_name))
elif DATABASES["default"]["ENGINE"].endswith(".postgresql") and _pool_max_size:
    # Django's psycopg_pool integration.
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 with the connection pool (DATABASE_POOL_MAX_SIZE > 0): "
            "a closed connection goes back to the pool instead."
        )
    # The pool checks a connection before lending it (an empty query) and replaces a dead one: a backend
    # killed by pg_terminate_backend() or a PostgreSQL restart does not fail the next request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "name": "erphub",
        "min_size": min(_env_int("DATABASE_POOL_MIN_SIZE", 2), _pool_max_size),  # kept open when idle
        "max_size": _pool_max_size,
        # a request waits this long for a connection, then fails with 503 database_unavailable
        "timeout": _env_float("DATABASE_POOL_TIMEOUT", 10.0),
        "max_idle": 300.0,  # seconds an idle connection above min_size is kept
    }

_prepared_statements = _env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "core.backends.postgresql" and _prepared_statements:
    # Statements of core.backends.postgresql's prepared_cursor() (the lookups and the audit append every
    # request runs) are prepared on a connection once they ran this many times there; the ORM's other queries
    # never are. false: none (PgBouncer before 1.22 in transaction mode, docs/scaling-out.md).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

BLOB_STORAGE_DIR = Path(_env("BLOB_STORAGE_DIR", str(VAR_DIR / "blobs")))  # filesystem storage root

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    # Ciphertext only (architecture §5). Rows record their alias: after a move to S3, old blobs stay readable.
    "blobs": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(BLOB_STORAGE_DIR),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
    # Signed audit checkpoints, outside the database. Write-once in production: an S3 bucket with Object
    # Lock in compliance mode (deploy/README.md); a local directory in development.
    "audit_checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": _env("AUDIT_CHECKPOINT_DIR", str(VAR_DIR / "audit-checkpoints")),
            "file_permissions_mode": 0o400,
            "directory_permissions_mode": 0o700,
        },
    },
}
# Production keeps checkpoints in S3 (django-storages): a bucket with Object Lock in compliance mode and a
# default retention, so every new object is locked on arrival (deploy/README.md). No per-object retention
# parameters: the bucket's default applies without s3:PutObjectRetention, and a date computed here at start-up
# would be stale for a long-running process. Region, credentials and AWS_ENDPOINT_URL_S3 come from boto3's
# own AWS_* variables.
_checkpoint_bucket = _env("AUDIT_CHECKPOINT_BUCKET")  # unset = the local directory above
if _checkpoint_bucket:
    STORAGES["audit_checkpoints"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _checkpoint_bucket,
            "location": _env("AUDIT_CHECKPOINT_PREFIX", "audit-checkpoints"),  # key prefix in the bucket
            # A name is never reused: an existing key gets a new name instead of a new version.
            "file_overwrite": False,
            "object_parameters": {"ContentType": "application/json"},
        },
    }

# Blob objects in S3 or an S3-compatible store (MinIO) through django-storages (architecture.md §5). A second
# alias, not a new backend for "blobs": rows record their alias, so blobs already on the filesystem stay
# readable there, and `manage.py blobs_migrate_storage --to blobs_s3` moves them. Region, credentials and the
# endpoint (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) come from boto3's own AWS_* variables.
# BLOB_STORAGE_BACKEND -> alias
_BLOB_STORAGE_BACKENDS = {"filesystem": "blobs", "s3": "blobs_s3", "azure": "blobs_azure", "gcs": "blobs_gcs"}
BLOB_STORAGE_BACKEND = _env("BLOB_STORAGE_BACKEND", "filesystem")  # where new blobs go
if BLOB_STORAGE_BACKEND not in _BLOB_STORAGE_BACKENDS:
    raise ImproperlyConfigured(
        f"BLOB_STORAGE_BACKEND={BLOB_STORAGE_BACKEND!r} is not one of {', '.join(_BLOB_STORAGE_BACKENDS)}."
    )
BLOB_S3_BUCKET = _env("BLOB_S3_BUCKET")  # unset = no S3 alias
if BLOB_STORAGE_BACKEND == "s3" and not BLOB_S3_BUCKET:
    raise ImproperlyConfigured("BLOB_STORAGE_BACKEND=s3 needs BLOB_S3_BUCKET (the bucket for blob objects).")
if BLOB_S3_BUCKET:
    from botocore.config import Config as _BotoConfig

    _blob_sse_kms_key = _env("BLOB_S3_SSE_KMS_KEY_ID")  # unset = the bucket's default encryption
    STORAGES["blobs_s3"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": BLOB_S3_BUCKET,
            "location": _env("BLOB_S3_PREFIX", "blobs"),  # key prefix in the bucket
            # SSE-KMS on top of our own encryption (the objects are ciphertext already): the bucket's
            # policy and CloudTrail then cover the objects too.
            "object_parameters": (
                {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": _blob_sse_kms_key}
                if _blob_sse_kms_key
                else {}
            ),
            # Our timeouts, not botocore's 60 s: an outage costs a request seconds (503 + Retry-After).
            # Pool: downloads each hold a connection while they stream.
            "client_config": _BotoConfig(
                connect_timeout=_env_float("BLOB_S3_CONNECT_TIMEOUT", 3.0),
                read_timeout=_env_float("BLOB_S3_READ_TIMEOUT", 20.0),
                retries={"mode": "standard", "total_max_attempts": 3},
                max_pool_connections=_env_int("BLOB_S3_MAX_CONNECTIONS", 50),
            ),
        },
    }

# Blob objects in Azure Blob Storage through django-storages (architecture.md §5): a third alias, as for S3
# (`blobs_migrate_storage --to blobs_azure`). Credentials: BLOB_AZURE_CONNECTION_STRING (account key or SAS;
# Azurite), else azure-identity's DefaultAzureCredential (managed or workload identity, AZURE_CLIENT_ID, ...)
# on the account BLOB_AZURE_ACCOUNT_NAME, which needs the role Storage Blob Data Contributor on the container.
BLOB_AZURE_CONTAINER = _env("BLOB_AZURE_CONTAINER")  # unset = no Azure alias
if BLOB_STORAGE_BACKEND == "azure" and not BLOB_AZURE_CONTAINER:
    raise ImproperlyConfigured(
        "BLOB_STORAGE_BACKEND=azure needs BLOB_AZURE_CONTAINER (the container for blob objects)."
    )
if BLOB_AZURE_CONTAINER:
    _blob_azure_connection = _env("BLOB_AZURE_CONNECTION_STRING")
    _blob_azure_account = _env("BLOB_AZURE_ACCOUNT_NAME")
    if not _blob_azure_connection and not _blob_azure_account:
        raise ImproperlyConfigured(
            "BLOB_AZURE_CONTAINER needs BLOB_AZURE_CONNECTION_STRING or BLOB_AZURE_ACCOUNT_NAME "
            "(with an Azure identity)."
        )
    _blob_azure_options: dict[str, Any] = {
        "azure_container": BLOB_AZURE_CONTAINER,
        "location": _env("BLOB_AZURE_PREFIX", "blobs"),  # name prefix in the container
        # Our timeouts, not the SDK's (20 s connect, 60 s read), and three retries 1 s, 3 s and 5 s apart
        # (plus jitter), not 15 s, 18 s and 24 s: an outage costs a request seconds (503 + Retry-After).
        "client_options": {
            "connection_timeout": _env_float("BLOB_AZURE_CONNECT_TIMEOUT", 3.0),
            "read_timeout": _env_float("BLOB_AZURE_READ_TIMEOUT", 20.0),
            "retry_total": 3,
            "initial_backoff": 1,
            "increment_base": 2,
        },
    }
    if _blob_azure_connection:
        _blob_azure_options["connection_string"] = _blob_azure_connection
    else:
        from azure.identity import DefaultAzureCredential as _DefaultAzureCredential

        _blob_azure_options["account_name"] = _blob_azure_account
        _blob_azure_options["token_credential"] = _DefaultAzureCredential()
    STORAGES["blobs_azure"] = {
        "BACKEND": "storages.backends.azure_storage.AzureStorage",
        "OPTIONS": _blob_azure_options,
    }
# Blob objects in Google Cloud Storage through django-storages (architecture.md §5), an alias like blobs_s3.
# Project and credentials are Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS or the metadata
# server, GOOGLE_CLOUD_PROJECT); the SDK itself reads STORAGE_EMULATOR_HOST (an emulator, the tests).
BLOB_GCS_BUCKET = _env("BLOB_GCS_BUCKET")  # unset = no GCS alias
if BLOB_STORAGE_BACKEND == "gcs" and not BLOB_GCS_BUCKET:
    raise ImproperlyConfigured("BLOB_STORAGE_BACKEND=gcs needs BLOB_GCS_BUCKET (the bucket for blob objects)")
if BLOB_GCS_BUCKET:
    # Memory per upload is one chunk; GCS takes resumable chunks in multiples of 256 KiB.
    _blob_gcs_chunk = _env_int("BLOB_GCS_CHUNK_BYTES", 8 * 1024 * 1024)
    if _blob_gcs_chunk <= 0 or _blob_gcs_chunk % (256 * 1024):
        raise ImproperlyConfigured(f"BLOB_GCS_CHUNK_BYTES={_blob_gcs_chunk} is not a multiple of 262144.")
    STORAGES["blobs_gcs"] = {
        "BACKEND": "storages.backends.gcloud.GoogleCloudStorage",
        "OPTIONS": {
            "bucket_name": BLOB_GCS_BUCKET,
            "location": _env("BLOB_GCS_PREFIX", "blobs"),  # object name prefix in the bucket
            "blob_chunk_size": _blob_gcs_chunk,
        },
    }

# Every multipart file is encrypted as it arrives: Django parses bodies before views run (CSRF middleware,
# the admin): a per-view handler would come too late, and plaintext would reach a temp file (architecture §5).
FILE_UPLOAD_HANDLERS = ["blobs.uploadhandler.EncryptingUploadHandler"]

# --- Keys (architecture.md §4) ---------------------------------------------------------------------------
_PROVIDER_ALIASES = {"kms": "aws"}  # the rollout guide calls AWS KMS "kms"
_KEY_PROVIDERS = ("local", "aws", "azure", "gcp", "vault")
_key_provider_env = _env("KEY_PROVIDER", "local") or "local"
KEY_PROVIDER = _PROVIDER_ALIASES.get(_key_provider_env, _key_provider_env)  # provider for new blobs
if KEY_PROVIDER not in _KEY_PROVIDERS:
    raise ImproperlyConfigured(
        f"KEY_PROVIDER={_key_provider_env!r} is not one of {', '.join(_KEY_PROVIDERS)} (or kms, meaning aws)."
    )

BLOB_MASTER_KEYS = _env("BLOB_MASTER_KEYS")  # "id:base64key,..." — first is active
_master_key_file_env = _env("BLOB_MASTER_KEY_FILE")
BLOB_MASTER_KEY_FILE = Path(_master_key_file_env or VAR_DIR / "master.key")  # same format, one per line
_master_key_set = BLOB_MASTER_KEYS is not None or _master_key_file_env is not None
if not DEBUG and KEY_PROVIDER == "local" and not _master_key_set:
    raise ImproperlyConfigured(
        "Production (DJANGO_DEBUG=false) needs an explicit master key: set BLOB_MASTER_KEYS or "
        "BLOB_MASTER_KEY_FILE. Old blobs wrapped by the local provider stay readable only with their key."
    )

# Our own timeouts and retries for every cloud provider (kms.retry): a KMS outage must cost a request
# seconds, not the SDK defaults' minutes. Applied to each cloud alias below.
_KMS_REMOTE_OPTIONS = {
    "connect_timeout": _env_float("KMS_CONNECT_TIMEOUT", 2.0),  # seconds to connect (TCP + TLS)
    "read_timeout": _env_float("KMS_READ_TIMEOUT", 5.0),  # seconds to wait for an answer
    "max_attempts": _env_int("KMS_MAX_ATTEMPTS", 3),  # attempts per operation, transient errors only
}

KMS_PROVIDERS: dict[str, dict[str, Any]] = {}
# The local provider stays configured whenever it may hold old blobs' keys, so blobs wrapped locally stay
# readable after KEY_PROVIDER moves to a cloud KMS. A production install that never had a master key has
# no such blobs and needs no key file.
if DEBUG or KEY_PROVIDER == "local" or _master_key_set:
    KMS_PROVIDERS["local"] = {
        "BACKEND": "kms.providers.local.LocalKeyProvider",
        "OPTIONS": {
            "keys": BLOB_MASTER_KEYS,
            "key_file": str(BLOB_MASTER_KEY_FILE),
            # Only development creates a key on first use; production refuses to invent one.
            "create_if_missing": DEBUG and BLOB_MASTER_KEYS is None,
        },
    }

# AWS KMS: boto3 reads its own standard variables too (credentials chain, AWS_ENDPOINT_URL_KMS).
KMS_KEY_ID = _env("KMS_KEY_ID")  # key id, ARN or alias/NAME
AWS_REGION = _env("AWS_REGION")  # else boto3's AWS_DEFAULT_REGION / shared config
if KMS_KEY_ID:
    KMS_PROVIDERS["aws"] = {
        "BACKEND": "kms.providers.aws.AwsKmsKeyProvider",
        "OPTIONS": {"key_id": KMS_KEY_ID, "region": AWS_REGION, **_KMS_REMOTE_OPTIONS},
    }

# Azure Key Vault: azure-identity's DefaultAzureCredential reads AZURE_CLIENT_ID, AZURE_TENANT_ID, ...
AZURE_VAULT_URL = _env("AZURE_VAULT_URL")  # https://NAME.vault.azure.net
AZURE_KEY_NAME = _env("AZURE_KEY_NAME")  # an RSA key in that vault
if AZURE_VAULT_URL or AZURE_KEY_NAME:
    KMS_PROVIDERS["azure"] = {
        "BACKEND": "kms.providers.azure.AzureKeyVaultKeyProvider",
        "OPTIONS": {"vault_url": AZURE_VAULT_URL, "key_name": AZURE_KEY_NAME, **_KMS_REMOTE_OPTIONS},
    }

# Google Cloud KMS: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity).
KMS_KEY_NAME = _env("KMS_KEY_NAME")  # projects/P/locations/L/keyRings/R/cryptoKeys/K
if KMS_KEY_NAME:
    KMS_PROVIDERS["gcp"] = {
        "BACKEND": "kms.providers.gcp.GcpKmsKeyProvider",
        "OPTIONS": {"key_name": KMS_KEY_NAME, **_KMS_REMOTE_OPTIONS},
    }

# HashiCorp Vault / OpenBao Transit.
VAULT_ADDR = _env("VAULT_ADDR")  # https://vault.example:8200
VAULT_TOKEN = _env("VAULT_TOKEN")  # a token whose policy allows encrypt/decrypt/rewrap on the key
VAULT_TRANSIT_KEY = _env("VAULT_TRANSIT_KEY")  # a transit key created with derived=true
VAULT_TRANSIT_MOUNT = _env("VAULT_TRANSIT_MOUNT", "transit")  # where the transit engine is mounted
VAULT_NAMESPACE = _env("VAULT_NAMESPACE")  # Vault Enterprise / OpenBao namespace, if any
VAULT_CACERT = _env("VAULT_CACERT")  # CA bundle for the Vault server's TLS certificate, else system CAs
if VAULT_ADDR or VAULT_TRANSIT_KEY:
    KMS_PROVIDERS["vault"] = {
        "BACKEND": "kms.providers.vault.VaultTransitKeyProvider",
        "OPTIONS": {
            "url": VAULT_ADDR,
            "token": VAULT_TOKEN,
            "key": VAULT_TRANSIT_KEY,
            "mount": VAULT_TRANSIT_MOUNT,
            "namespace": VAULT_NAMESPACE,
            "verify": VAULT_CACERT or True,
            **_KMS_REMOTE_OPTIONS,
        },
    }

# Start-up fails here, not on the first upload, when the chosen provider lacks its variables (development
# too: a KEY_PROVIDER that cannot wrap anything is a mistake whatever the mode).
_PROVIDER_NEEDS = {
    "aws": ("KMS_KEY_ID",),
    "azure": ("AZURE_VAULT_URL", "AZURE_KEY_NAME"),
    "gcp": ("KMS_KEY_NAME",),
    "vault": ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_TRANSIT_KEY"),
}
_missing = [name for name in _PROVIDER_NEEDS.get(KEY_PROVIDER, ()) if _env(name) is None]
if _missing:
    raise ImproperlyConfigured(
        f"KEY_PROVIDER={_key_provider_env} needs {', '.join(_missing)} (docs/keys.md); "
        "unset KEY_PROVIDER to use the local master key."
    )
KMS_DEFAULT_PROVIDER = KEY_PROVIDER  # alias used to wrap the data keys of new blobs
# The kms app's tunables (kms/conf.py has their defaults and meanings).
KMS = {
    "HEALTH_TTL_SECONDS": _env_int("KMS_HEALTH_TTL_SECONDS", 60),  # /ready reuses a round-trip this long
    # Key-provider calls in flight per provider and process; more get 503 at once, not queued. 0 = off.
    "MAX_CONCURRENT_CALLS": _env_int("KMS_MAX_CONCURRENT_CALLS", 16),
    # Unwrapped data keys cached in process memory for downloads (never Redis). Any 0 turns it off.
    "DEK_CACHE": {
        "TTL_SECONDS": _env_int("KMS_DEK_CACHE_TTL_SECONDS", 300),  # a revoked KEK still serves this long
        "MAX_USES": _env_int("KMS_DEK_CACHE_MAX_USES", 10_000),  # downloads per unwrap
        "MAX_ENTRIES": _env_int("KMS_DEK_CACHE_MAX_ENTRIES", 1_000),  # LRU bound (a few hundred bytes each)
    },
}

# --- Metrics (architecture.md §9) ---------------------------------------------------------------------------
# Bearer token Prometheus sends to /metrics; unset = open (development; erphub.W001 warns in production).
METRICS_TOKEN = _env("METRICS_TOKEN")
# prometheus_client's multiprocess mode (gunicorn workers): set for the server by `make run`; the client
# library reads the same variable itself when metrics are defined, /metrics sums the workers' files here.
PROMETHEUS_MULTIPROC_DIR = _env("PROMETHEUS_MULTIPROC_DIR")

# --- Blobs -------------------------------------------------------------------------------------------
BLOBS = {
    "SEGMENT_SIZE": _env_int("BLOB_SEGMENT_SIZE", 1 << 20),  # ciphertext segment size for new blobs
    "MAX_UPLOAD_BYTES": _env_int("BLOB_MAX_UPLOAD_BYTES", 10 * 1024**3),  # larger uploads get 413
    "GC_GRACE_MINUTES": _env_int("BLOB_GC_GRACE_MINUTES", 60),  # pending rows younger than this are kept
    "MIN_FREE_BYTES": _env_int("BLOB_MIN_FREE_BYTES", 256 * 1024**2),  # /ready: nearly_full below; 0 = off
    "STORAGE_ALIAS": _BLOB_STORAGE_BACKENDS[BLOB_STORAGE_BACKEND],  # STORAGES alias for new blobs
    # The retired /legacy/files/ answers 410 with RFC 9745 Deprecation and RFC 8594 Sunset (ISO 8601).
    "LEGACY_DEPRECATED_AT": _env("LEGACY_DEPRECATED_AT", "2026-01-01T00:00:00Z"),
    "LEGACY_SUNSET_AT": _env("LEGACY_SUNSET_AT", "2027-01-01T00:00:00Z"),
}

# --- Rollout flags (DESIGN §7) ---------------------------------------------------------------------------
# false = the guide's immediate rollback: the secure file API answers 503 for everyone, whatever the
# database says (the kill switch an operator sets on the deployment).
FEATURE_SECURE_BLOB_ENABLED = _env_bool("FEATURE_SECURE_BLOB_ENABLED", True)
FLAGS = {
    "FORCED_OFF": [] if FEATURE_SECURE_BLOB_ENABLED else ["secure_blob_streaming"],  # whatever the DB says
    "VERSION_CHECK_SECONDS": _env_float("FLAG_VERSION_CHECK_SECONDS", 1.0),  # how often workers look (s)
    "RETRY_AFTER_SECONDS": _env_int("FLAG_RETRY_AFTER_SECONDS", 300),  # Retry-After of a kill switch's 503
    "RETIRE_AFTER_DAYS": _env_int("FLAG_RETIRE_AFTER_DAYS", 7),  # healthy days at 100 % before retiring
    # manage.py rollout_guard (docs/flags.md "Guarded rollout"); thresholds: flags.conf, the guide's values.
    "GUARD": {
        # Prometheus with our recording rules (http://prometheus:9090); unset = the workers' own metrics.
        "PROMETHEUS_URL": _env("PROMETHEUS_URL"),
        "MULTIPROC_DIR": PROMETHEUS_MULTIPROC_DIR,  # read twice, LOCAL_SAMPLE_SECONDS apart, without it
        # true = metrics that cannot be read trip the kill switch too (default: fail, exit 2, no trip)
        "FAIL_CLOSED": _env_bool("FLAG_GUARD_FAIL_CLOSED", False),
    },
}

# --- Cache ---------------------------------------------------------------------------------------------
# Shared state between workers (login lockout, upload throttle, flag version stamp) — never data keys, which
# stay in process memory. core/cache.py, docs/scaling-out.md. With REDIS_URL: shared by every worker and
# replica; if Redis fails, each process answers from its own memory meanwhile (logged, counted), never an
# error. Without it: files under var/cache, shared by the processes of one machine (`make run`'s workers) —
# several replicas need REDIS_URL.
REDIS_URL = _env("REDIS_URL")  # e.g. redis://127.0.0.1:6379/0
CACHE_DIR = _env("ERPHUB_CACHE_DIR", str(VAR_DIR / "cache"))  # without REDIS_URL; created 0700
if REDIS_URL:
    _redis_timeout = _env_float("REDIS_TIMEOUT_SECONDS", 0.5)  # connect and per-command timeout (s)
    CACHES = {
        "default": {
            "BACKEND": "core.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": _redis_timeout,
                "socket_timeout": _redis_timeout,
                # after a Redis error, the process-local fallback answers this long before Redis is retried
                "RETRY_SECONDS": _env_float("REDIS_RETRY_SECONDS", 5.0),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "core.cache.LockedFileCache",
            "LOCATION": CACHE_DIR,
            # the bound (files); culling drops expired entries first
            "OPTIONS": {"MAX_ENTRIES": _env_int("ERPHUB_CACHE_MAX_ENTRIES", 10_000)},
        }
    }

# --- Authentication and the API ------------------------------------------------------------------------
# Every login path (admin, /accounts/login/, POST /api/token/) goes through authenticate(): the backend
# refuses while an account/address pair is locked out after repeated failures (erphub/login_throttle.py).
AUTHENTICATION_BACKENDS = ["erphub.login_throttle.ThrottledModelBackend"]
LOGIN_THROTTLE = {
    "FAILURES": _env_int("LOGIN_THROTTLE_FAILURES", 10),  # failed logins per username+address per window
    "WINDOW_SECONDS": _env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 900),  # and how long the lockout lasts
}

REST_FRAMEWORK = {
    # JWT first: its WWW-Authenticate makes unauthenticated API calls 401 (not 403), RFC 6750 §3.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "erphub.authentication.JWTAuthentication",  # simplejwt's, its user loaded by a compiled query
        "rest_framework.authentication.SessionAuthentication",  # the browser and the admin (CSRF enforced)
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSONParser with a nesting limit: deep nesting was a RecursionError (erphub/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["erphub.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "blobs.pagination.BlobPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "erphub.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "uploads": _env("UPLOAD_THROTTLE_RATE", "120/min"),  # per user, shared through the cache
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=_env_int("JWT_ACCESS_MINUTES", 5)),  # minutes, not hours
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=_env_int("JWT_REFRESH_HOURS", 24)),
    "ROTATE_REFRESH_TOKENS": True,  # each refresh returns a new refresh token...
    "BLACKLIST_AFTER_ROTATION": True,  # ...and the old one stops working (replay is refused)
    "UPDATE_LAST_LOGIN": False,  # erphub.tokens.TokenObtainPairSerializer sets last_login with one UPDATE
    "ALGORITHM": "HS256",
    "SIGNING_KEY": _env("JWT_SIGNING_KEY", SECRET_KEY),  # rotate separately from DJANGO_SECRET_KEY if set
    "AUDIENCE": "erphub",
    "ISSUER": "erphub",
    "LEEWAY": 10,  # seconds of clock skew tolerated
    "CHECK_USER_IS_ACTIVE": True,  # a deactivated user's tokens stop working at once
    "CHECK_REVOKE_TOKEN": True,  # tokens carry a hash of the password hash: a password change revokes them
    "USER_ID_FIELD": "id",
    # Checks the claims of a validly signed token before simplejwt looks its user up (erphub/tokens.py).
    "AUTH_TOKEN_CLASSES": ("erphub.tokens.AccessToken",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ERP Hub — Secure Blob Streaming API",
    "DESCRIPTION": (
        "Files encrypted at rest (AES-256-GCM streaming, per-file data keys) and streamed back with "
        "RFC 9110 ranges. Authenticate with a JWT from POST /api/token/ (Authorization: Bearer …) or a "
        "browser session."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "DEFAULT_GENERATOR_CLASS": "erphub.schema.SchemaGenerator",  # documents HEAD where a view has its own
    "ENUM_NAME_OVERRIDES": {},
    # The default hook, then the JWT scheme first in Swagger UI's "Authorize" dialog (erphub/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "erphub.schema.security_schemes_jwt_first",
    ],
}

# --- Audit (architecture.md §8) --------------------------------------------------------------------------
_audit_key_file_env = _env("AUDIT_SIGNING_KEY_FILE")
AUDIT = {
    "TRUSTED_PROXIES": _env_list("TRUSTED_PROXIES", ""),  # CIDRs whose X-Forwarded-For is believed
    "RETENTION_DAYS": _env_int("AUDIT_RETENTION_DAYS", 7 * 365 + 2),  # 7 years; purge never goes nearer
    "MAX_DETAILS_BYTES": _env_int("AUDIT_MAX_DETAILS_BYTES", 16 * 1024),  # larger details become a digest
    # Ed25519 checkpoint signing key (base64 seed), never in the database: a value or a file (0600).
    "SIGNING_KEY": _env("AUDIT_SIGNING_KEY"),
    "SIGNING_KEY_FILE": _audit_key_file_env or str(VAR_DIR / "audit_signing.key"),
    "SIGNING_KEY_CREATE": DEBUG and _env("AUDIT_SIGNING_KEY") is None,  # development creates it on first use
    "VERIFY_PUBLIC_KEYS": _env_list("AUDIT_VERIFY_PUBLIC_KEYS", ""),  # older keys' public halves (base64)
    # Server workers: seconds an after-the-fact event (a download's end) waits for the next group commit
    # before the deferred writer writes it itself, and how many may wait before they are written inline.
    "DEFERRED_INTERVAL": _env_float("AUDIT_DEFERRED_INTERVAL", 0.05),
    "DEFERRED_MAX_QUEUED": _env_int("AUDIT_DEFERRED_MAX_QUEUED", 1000),
}

LOGIN_URL = "login"  # /accounts/login/: every account, not only staff (the admin's login refuses others)
LOGIN_REDIRECT_URL = "blobs:my-files"  # an owner's own files

# Production hardening: only when not in development.
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HTTPS (TLS ends at the load balancer): redirect plain HTTP and send Strict-Transport-Security, in production
# by default. The probes and the scrape reach pods over plain HTTP inside the cluster: never redirected.
SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SECURE_HSTS_SECONDS = _env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)  # RFC 6797
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# "preload": browsers may ship the host as HTTPS-only; set false if any subdomain cannot serve HTTPS.
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
# The header the TLS-terminating proxy sets (e.g. X-Forwarded-Proto), trusted to say the request was HTTPS.
# Set it only behind a proxy that overwrites the client's own value.
_proxy_ssl_header = _env("DJANGO_SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)

# Error pages and reports cleanse key material and plaintext from every frame, DEBUG or not.
DEFAULT_EXCEPTION_REPORTER_FILTER = "erphub.errors.KeyMaterialReporterFilter"

# structlog hands its events to the standard library's logging (configured below), which renders them.
_STRUCTLOG_PRE_CHAIN: list[Any] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        *_STRUCTLOG_PRE_CHAIN,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

_AUDIT_LOG_STREAM = {"stdout": "ext://sys.stdout", "stderr": "ext://sys.stderr"}[
    _env("AUDIT_LOG_STREAM", "stderr" if Path(sys.argv[0]).name == "manage.py" else "stdout") or "stdout"
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "bare": {"format": "%(message)s"},
        # structlog renders the access log (and, in production, every other line) as one JSON object.
        "json": {
            "()": "structlog.stdlib.ProcessorFormatter",
            "processors": [
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
            "foreign_pre_chain": _STRUCTLOG_PRE_CHAIN,
        },
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain" if DEBUG else "json"},
        "access": {"class": "logging.StreamHandler", "stream": _AUDIT_LOG_STREAM, "formatter": "json"},
        # Audit events, one JSON object per line, for central logging (ELK, Splunk, CloudWatch): stdout for
        # the server; stderr for manage.py, whose stdout carries command results (architecture.md §10).
        "audit_stdout": {"class": "logging.StreamHandler", "stream": _AUDIT_LOG_STREAM, "formatter": "bare"},
    },
    "root": {"handlers": ["stderr"], "level": _env("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "audit": {"handlers": ["audit_stdout"], "level": "INFO", "propagate": False},
        "erphub.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        # azure-core logs every Key Vault request and response (key URLs included) at INFO: one multi-line
        # record per KMS call. Our own kms_calls_total and warnings say what operators need.
        "azure": {"level": "WARNING"},
    },
}

# The first admin account `make run` creates (manage.py bootstrap); a generated password is printed once.
BOOTSTRAP_SUPERUSER: dict[str, str | None] = {
    "USERNAME": _env("DJANGO_SUPERUSER_USERNAME", "admin"),
    "PASSWORD": _env("DJANGO_SUPERUSER_PASSWORD"),
    "EMAIL": _env("DJANGO_SUPERUSER_EMAIL", ""),
}
