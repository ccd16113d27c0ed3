"""A JSON parser that refuses oversized bodies before reading them into memory, and JSON that
parses but cannot be answered or stored.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check guards ``request.body``. DRF from 3.16 on hands a
JSON parser ``request.body``, so that check runs first and raises ``RequestDataTooBig``, which
``api.problems`` answers as the same 413; older DRF reads the stream itself and skips it. Either
way the limit holds: here by ``Content-Length`` first, then by never reading more than the limit
plus one byte.

What the body holds is checked by ``registry.strictjson``, the parser every caller's JSON goes
through (the runtime views' too): ``NaN``, infinities, NULs, unpaired surrogates and deep nesting
are refused there, as 400s, before any view sees the body.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser

from registry.strictjson import JSONRefused, strict_json_loads


class RequestTooLarge(APIException):
    """413; defined here rather than in ``api.problems`` (which maps it) because ``problems``
    imports DRF's views, whose ``APIView`` imports this module: importing ``problems`` from here
    would be circular when ``problems`` is the first of the two to load (``api.fastpath``)."""

    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class JSONBodyRefused(APIException):
    """400: the body is not JSON this service accepts; ``api.problems`` answers it as
    ``malformed-request`` or ``validation-error`` with ``errors`` pointing at each value."""

    status_code = 400
    default_code = "invalid_json"

    def __init__(self, refused: JSONRefused) -> None:
        super().__init__(str(refused))
        self.malformed = refused.malformed
        self.errors = [error.as_dict() for error in refused.errors]


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
            return strict_json_loads(raw)
        except JSONRefused as exc:
            raise JSONBodyRefused(exc) from exc
