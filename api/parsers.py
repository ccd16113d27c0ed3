"""A JSON parser that refuses oversized bodies before reading them into memory.

DRF reads the request stream itself, which skips Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check
(that one guards ``request.body``), so the limit is enforced here: by ``Content-Length`` first, then
by never reading more than the limit plus one byte.
"""

from __future__ import annotations

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .problems import RequestTooLarge


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = f"The body is larger than {limit} bytes."
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(too_large)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(too_large)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc
