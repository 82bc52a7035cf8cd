"""Key-management errors. Providers translate SDK exceptions into these at their boundary."""

from __future__ import annotations

from core.errors import DomainError


class KmsError(DomainError):
    """Root: the key service could not do what was asked. Answered 503 + Retry-After.

    The message can name key ids and paths: operators read it in the log, clients a fixed sentence.
    """

    status_code = 503
    code = "kms_error"
    retry_after = 30
    log_when_answered = True

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider

    def public_detail(self) -> str:
        return "The key service is unavailable; nothing was changed. Try again later."

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class KeyUnavailable(KmsError):
    """The provider or its key cannot be reached or is not configured (master key missing, KMS down).

    ``transient`` marks failures worth another attempt (throttling, 5xx, timeouts, connection errors); the
    shared retry policy (``kms.retry``) retries only those. Access denied or a disabled key are not transient.
    """

    code = "kms_unavailable"

    def __init__(self, message: str, *, provider: str | None = None, transient: bool = False) -> None:
        super().__init__(message, provider=provider)
        self.transient = transient


class KeyNotFound(KmsError):
    """The key reference recorded on a blob is not known to the provider (a retired master key)."""

    code = "kms_key_not_found"

    def __init__(self, message: str, *, provider: str | None = None, key_ref: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.key_ref = key_ref


class UnwrapFailed(KmsError):
    """The wrapped key did not authenticate: wrong key, wrong context (another blob's key) or tampering.

    An integrity failure, not an outage: 500 with no Retry-After (a client retrying would retry forever), and
    logged when answered; the download path also marks the blob (blobs.services.blob_mark_integrity_failure).
    """

    status_code = 500
    code = "kms_unwrap_failed"

    def public_detail(self) -> str:
        return "The file's key failed its integrity check; retrying will not help."

    def response_headers(self) -> dict[str, str]:
        return {}


class KeyMismatch(KmsError):
    """A master key id now names other key bytes than the ones this installation recorded for it (a wrong
    key pasted under an existing id): nothing may be wrapped under it, or those blobs would be lost."""

    code = "kms_key_mismatch"

    def __init__(self, message: str, *, provider: str | None = None, key_ref: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.key_ref = key_ref
