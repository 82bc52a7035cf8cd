"""AWS KMS (boto3): Encrypt/Decrypt bound to the blob by an EncryptionContext; rewrap is ReEncrypt.

The data key is made by us (``secrets``) and sent to ``Encrypt``; ``GenerateDataKey`` would only move the
random-number generator, not change what is stored. The wrap is bound to the blob with
``EncryptionContext=context`` (AWS KMS authenticates it as AAD; Decrypt with another blob's context fails
with InvalidCiphertextException).

Key reference: the key ARN that ``Encrypt`` reports, so an alias (``alias/erphub``) moved to a new key
later does not strand old blobs: ``Decrypt`` is told ``KeyId=<that ARN>`` and never "whatever the alias
means now". AWS rotates key *material* inside one ARN (automatic or on-demand rotation) and keeps every
material version; the ciphertext names its material, so Decrypt needs only the ARN. ``KeyMaterialId`` is
returned by Decrypt, ReEncrypt and GenerateDataKey but not by Encrypt, so recording it would give blobs
wrapped under the same material different references depending on how they were wrapped; the reference
is the ARN alone, and a rewrap to the same ARN (after material rotation) keeps it (docs/keys.md).

Rewrap is ``ReEncrypt`` from the recorded ARN to the configured key (the data key never leaves KMS).

boto3's standard configuration keeps working: the credential chain, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL_KMS``/``AWS_ENDPOINT_URL``. botocore's own retries are switched off
(``total_max_attempts=1``) and its 60 s timeouts replaced: ``kms.retry`` decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from ..base import KeyProvider, WrappedKey
from ..exceptions import KeyNotFound, KeyUnavailable, KmsError, UnwrapFailed
from ..retry import REMOTE_OPTIONS, remote_settings

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as exc:  # pragma: no cover - exercised by the missing-SDK check test in a subprocess
    raise ImproperlyConfigured(
        f"The AWS KMS provider needs boto3 ({exc}); install it with `pip install -r requirements.txt`."
    ) from exc

ALGORITHM = "SYMMETRIC_DEFAULT"
T = TypeVar("T")

# Errors worth another attempt (AWS KMS API reference, "Common Errors" and each operation's errors).
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "LimitExceededException",  # request-rate quota (KMS returns it for bursts too)
        "KMSInternalException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "DependencyTimeoutException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_NOT_FOUND_CODES = frozenset({"NotFoundException"})
_UNWRAP_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


class AwsKmsKeyProvider(KeyProvider):
    """Options: ``key_id`` (required: key id, ARN or ``alias/...``), ``region`` (else boto3's chain),
    ``endpoint_url`` (else ``AWS_ENDPOINT_URL_KMS``/boto3's default), ``profile``, plus ``REMOTE_OPTIONS``."""

    options = REMOTE_OPTIONS | frozenset({"key_id", "region", "endpoint_url", "profile"})

    def __init__(
        self,
        *,
        alias: str,
        key_id: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        **options: Any,
    ) -> None:
        remote = {k: options.pop(k) for k in list(options) if k in REMOTE_OPTIONS}
        super().__init__(alias=alias, **options)
        if not key_id:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: the AWS KMS provider needs key_id; set KMS_KEY_ID to the key's "
                "id, ARN or alias/NAME."
            )
        self.key_id = key_id
        timeouts, self.retry_policy = remote_settings(alias, remote)
        config = botocore.config.Config(
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        session = boto3.session.Session(profile_name=profile, region_name=region)
        try:
            self._client = session.client("kms", endpoint_url=endpoint_url, config=config)
        except botocore.exceptions.NoRegionError:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: no AWS region; set AWS_REGION (or use the key's full ARN and "
                "AWS_DEFAULT_REGION)."
            ) from None
        except botocore.exceptions.ProfileNotFound as exc:
            raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}]: {exc}.") from None

    def close(self) -> None:
        self._client.close()

    def _request(self, fn: Callable[[], T], *, unwrapping: bool) -> T:
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            raise self._translate(exc, unwrapping=unwrapping) from None
        except botocore.exceptions.SSLError:
            raise KeyUnavailable(
                "AWS KMS's TLS certificate did not verify (AWS_CA_BUNDLE?).", provider=self.alias
            ) from None
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            # Connect/read timeouts, refused or reset connections (botocore wraps urllib3's errors).
            raise KeyUnavailable(
                f"AWS KMS did not answer ({type(exc).__name__}).", provider=self.alias, transient=True
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise KeyUnavailable(
                "No AWS credentials found (environment, shared config, or instance/task role).",
                provider=self.alias,
            ) from None

    def _translate(self, exc: botocore.exceptions.ClientError, *, unwrapping: bool) -> KmsError:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"AWS KMS {exc.operation_name} failed: {code or status}."
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return KeyUnavailable(message, provider=self.alias, transient=True)
        if code in _NOT_FOUND_CODES:
            return KeyNotFound(message, provider=self.alias, key_ref=self.key_id)
        if unwrapping and code in _UNWRAP_CODES:
            return UnwrapFailed(
                f"{message} The wrapped key does not belong to this blob or key, or was altered.",
                provider=self.alias,
            )
        # AccessDenied, DisabledException, KMSInvalidStateException, ...: retrying will not help.
        return KeyUnavailable(message, provider=self.alias)

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        def attempt() -> WrappedKey:
            response = self._request(
                lambda: self._client.encrypt(
                    KeyId=self.key_id, Plaintext=data_key, EncryptionContext=dict(context)
                ),
                unwrapping=False,
            )
            return WrappedKey(
                ciphertext=response["CiphertextBlob"],
                key_ref=response["KeyId"],  # always the ARN, whatever key_id (alias, id) says
                algorithm=response.get("EncryptionAlgorithm", ALGORITHM),
            )

        return self._call("wrap", attempt)

    def _source_arn(self, wrapped: WrappedKey) -> str:
        if wrapped.algorithm != ALGORITHM or not wrapped.key_ref.startswith("arn:"):
            raise UnwrapFailed(
                f"Wrapped key {wrapped.key_ref!r} ({wrapped.algorithm}) is not an AWS KMS symmetric wrap.",
                provider=self.alias,
            )
        return wrapped.key_ref

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        arn = self._source_arn(wrapped)

        def attempt() -> bytes:
            response = self._request(
                lambda: self._client.decrypt(
                    KeyId=arn,
                    CiphertextBlob=wrapped.ciphertext,
                    EncryptionContext=dict(context),
                    EncryptionAlgorithm=ALGORITHM,
                ),
                unwrapping=True,
            )
            plaintext: bytes = response["Plaintext"]
            return plaintext

        return self._call("unwrap", attempt)

    def rewrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> WrappedKey:
        arn = self._source_arn(wrapped)

        def attempt() -> WrappedKey:
            response = self._request(
                lambda: self._client.re_encrypt(
                    CiphertextBlob=wrapped.ciphertext,
                    SourceKeyId=arn,
                    SourceEncryptionContext=dict(context),
                    SourceEncryptionAlgorithm=ALGORITHM,
                    DestinationKeyId=self.key_id,
                    DestinationEncryptionContext=dict(context),
                    DestinationEncryptionAlgorithm=ALGORITHM,
                ),
                unwrapping=True,
            )
            return WrappedKey(
                ciphertext=response["CiphertextBlob"],
                key_ref=response["KeyId"],
                algorithm=response.get("DestinationEncryptionAlgorithm", ALGORITHM),
            )

        return self._call("rewrap", attempt)
