"""A JSON parser that refuses oversized bodies before reading them into memory, and JSON that
parses but cannot be answered or stored.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check guards ``request.body``. DRF from 3.16 on hands a
JSON parser ``request.body``, so that check runs first and raises ``RequestDataTooBig``, which
``api.problems`` answers as the same 413; older DRF reads the stream itself and skips it. Either
way the limit holds: here by ``Content-Length`` first, then by never reading more than the limit
plus one byte.

Python's ``json`` is laxer than JSON, and what it lets through fails later as a 500:

- ``NaN``, ``Infinity`` and numbers that overflow to infinity (``1e400``) are not JSON; the
  renderer refuses to write them back and PostgreSQL's ``jsonb`` refuses to store them;
- nesting deeper than the interpreter's recursion limit raises ``RecursionError``;
- ``"\\u0000"`` is valid JSON, but PostgreSQL's ``text`` and ``jsonb`` cannot hold it.

So those are refused here, as 400s, before any view sees the body.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework.exceptions import APIException, ErrorDetail, ParseError, ValidationError
from rest_framework.parsers import JSONParser


class RequestTooLarge(APIException):
    """413; defined here rather than in ``api.problems`` (which maps it) because ``problems``
    imports DRF's views, whose ``APIView`` imports this module: importing ``problems`` from here
    would be circular when ``problems`` is the first of the two to load (``api.runtime``)."""

    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


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
            data = json.loads(
                raw.decode("utf-8"), parse_constant=_not_json, parse_float=_finite_float
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ParseError("The body is not valid JSON: it is nested too deeply.") from exc
        path = _null_character_path(data)
        if path is not None:
            raise ValidationError(_error_at(path, NULL_CHARACTER))
        return data


NULL_CHARACTER = ErrorDetail(
    "Null characters (\\u0000) are not allowed.", code="null_characters_not_allowed"
)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _null_character_path(data: Any) -> list[str | int] | None:
    """Where the first string (key or value) holding a NUL is; walked without recursion."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return path
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, i], item) for i, item in enumerate(value))
    return None


def _error_at(path: list[str | int], error: ErrorDetail) -> Any:
    """A serializer-style error detail placing ``error`` at ``path``, so the problem document
    points at it (``api.problems`` turns the nesting into a JSON Pointer)."""
    detail: Any = [error]
    for token in reversed(path):
        detail = [{}] * token + [detail] if isinstance(token, int) else {token: detail}
    return detail
