"""The global upload handler: every multipart file is encrypted as it arrives (architecture.md §5).

Django parses multipart bodies before most views run (CSRF middleware reads ``request.POST``; the admin
is CSRF-protected), so this handler is installed for the whole project in ``FILE_UPLOAD_HANDLERS``. It
replaces Django's memory and temp-file handlers: plaintext never reaches disk. Each file becomes a
``pending`` blob that a view or form claims with ``blob_claim``; ``BlobErrorMiddleware`` removes the ones
nobody claimed when the response is done.

Errors raised inside Django's parser would turn into a bare 500 wherever the parse happened, so the
handler cleans up, records the domain error on the request and stops the upload; the middleware then
answers with that error (413, 503, 507) once.
"""

from __future__ import annotations

import io
from typing import NoReturn

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest

from core.errors import DomainError
from kms.exceptions import KmsError

from .disposition import FilenameError, upload_filename
from .exceptions import BlobError, InvalidFilename, UploadThrottled
from .metrics import ABORTED, ERROR
from .models import Blob
from .permissions import may_upload
from .services import BlobUpload, blob_delete
from .throttling import upload_wait

UPLOADS_ATTR = "_blob_uploads"
#: The multipart field every upload form and the API use.
UPLOAD_FIELD = "file"
ERROR_ATTR = "_blob_upload_error"


class EncryptedUploadedFile(UploadedFile):
    """What ``request.FILES`` holds: a reference to an encrypted ``pending`` blob, never plaintext."""

    def __init__(self, upload: BlobUpload, *, name: str, content_type: str | None, charset: str | None):
        # An empty file object: reading an encrypted upload back as plaintext is not possible by design.
        super().__init__(io.BytesIO(), name, content_type, upload.size, charset)
        self.upload = upload

    @property
    def blob(self) -> Blob:
        return self.upload.blob


class EncryptingUploadHandler(FileUploadHandler):
    # Bigger reads than Django's 64 KiB default: fewer Python round trips per segment, memory still bounded.
    chunk_size = 1 << 20

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self._upload: BlobUpload | None = None

    def _uploads(self) -> list[BlobUpload]:
        uploads = getattr(self.request, UPLOADS_ATTR, None)
        if uploads is None:
            uploads = []
            setattr(self.request, UPLOADS_ATTR, uploads)
        return uploads

    def _fail(self, exc: DomainError) -> NoReturn:
        self._abort(error=exc.code)
        setattr(self.request, ERROR_ATTR, exc)
        # connection_reset: do not read (and discard) the rest of a body we have already refused.
        raise StopUpload(connection_reset=True)

    def _abort(self, *, outcome: str = ERROR, error: str | None = None) -> None:
        if self._upload is not None:
            upload, self._upload = self._upload, None
            upload.abort(outcome=outcome, error=error)

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict | None = None,
    ) -> None:
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        user = getattr(self.request, "user", None)
        if not may_upload(user):
            raise SkipFile()  # nobody may store this: skip it without writing anything
        # Only the one file any view claims is encrypted: each file costs a data key (a KMS call) and a
        # stored object, so other fields and further files are skipped unread, not stored and discarded.
        if field_name != UPLOAD_FIELD or self._uploads():
            raise SkipFile()
        assert self.request is not None  # Django hands every upload handler its request
        if getattr(self.request, ERROR_ATTR, None) is not None:
            # Already refused (an undecodable part filename, blobs.middleware): encrypt nothing more.
            raise StopUpload(connection_reset=True)
        if (wait := upload_wait(self.request)) is not None:
            self._fail(UploadThrottled(wait=wait))
        # Django has decoded the part's filename (raw UTF-8, or RFC 2231/8187 with errors="replace"): the
        # rule raw bodies follow decides whether it is a name at all, before a data key or a row exists.
        try:
            name = upload_filename(file_name)
        except FilenameError:
            self._fail(InvalidFilename())
        try:
            upload = BlobUpload(owner=user, filename=name, content_type=content_type)
        except (BlobError, KmsError) as exc:
            self._fail(exc)
        self._upload = upload
        self._uploads().append(upload)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self._upload is None:
            return None
        try:
            self._upload.write(raw_data)
        except (BlobError, KmsError) as exc:
            self._fail(exc)
        except BaseException:
            self._abort()
            raise
        return None

    def file_complete(self, file_size: int) -> EncryptedUploadedFile | None:
        if self._upload is None:
            return None
        upload = self._upload
        try:
            upload.finish()
        except (BlobError, KmsError) as exc:
            self._fail(exc)
        except BaseException:
            self._abort()
            raise
        self._upload = None
        return EncryptedUploadedFile(
            upload, name=upload.blob.filename, content_type=upload.blob.content_type, charset=self.charset
        )

    def upload_interrupted(self) -> None:
        # The body ended inside a file (client went away or a truncated request): nothing of it stays.
        self._abort(outcome=ABORTED)


def discard_uploads(request: HttpRequest, *, claimed_too: bool, outcome: str = ERROR) -> int:
    """Remove this request's encrypted uploads that no view claimed — and, with ``claimed_too``, the
    claimed ones as well (the request failed as a whole). ``outcome`` of an unfinished upload: ``aborted``
    when the client went away. Returns how many were removed."""
    removed = 0
    for upload in getattr(request, UPLOADS_ATTR, ()):
        if upload.blob.state == upload.blob.State.PENDING:
            upload.abort(outcome=outcome)
            removed += 1
        elif claimed_too:
            blob_delete(blob=upload.blob)
            removed += 1
    return removed
