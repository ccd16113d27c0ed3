"""The first upload handler: no uploaded file is stored past a size limit.

Django caps the fields of a form (``DATA_UPLOAD_MAX_MEMORY_SIZE``) but not its files: without this,
an upload is streamed whole to memory or a temporary file before any view can look at its size.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler


class TruncatingUploadHandler(FileUploadHandler):
    """Passes each file's first ``DATASET_FILE_MAX_BYTES`` + 1 bytes on to the next handlers and
    drops the rest. The stored file is then one byte over the limit, so the form that checks
    ``UploadedFile.size`` refuses it as too large, having held no more than that.

    (A case file is the only upload the service takes; its limit bounds every upload.)"""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.remaining = settings.DATASET_FILE_MAX_BYTES + 1

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self.remaining <= 0:
            return None  # the next handlers never see it
        kept = raw_data[: self.remaining]
        self.remaining -= len(kept)
        return kept

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file
