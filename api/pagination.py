"""Page-number pagination, as strict as the schema says it is.

DRF serves the first page for an empty ``page`` and the default size for a ``page_size`` it
cannot read (``true``, ``null``, ``-3``), and silently cuts a larger one to ``max_page_size``: a
client with a bug gets an answer other than the one it asked for, and never hears of it. Here
each is a 400 problem pointing at the parameter, and the schema publishes the same bounds
(``minimum``, ``maximum``). A page past the last one is a 404 (``not-found``), as in DRF.
"""

from __future__ import annotations

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

MAX_DIGITS = 18


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

    def _number(self, request, name: str, *, maximum: int | None = None) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        if not (raw.isascii() and raw.isdigit()) or not raw.strip("0"):
            raise ValidationError({name: ["A whole number, 1 or more."]})
        # int() refuses more than 4,300 digits (a ValueError, CVE-2020-10735); no page or size
        # needs more than 18, so a longer number is read as past any bound without converting it.
        digits = raw.lstrip("0")
        number = int(digits) if len(digits) <= MAX_DIGITS else None
        if maximum is not None and (number is None or number > maximum):
            raise ValidationError({name: [f"At most {maximum}."]}, code="max_value")
        if number is None:  # a page past the last one: what DRF answers for it
            raise NotFound(self.invalid_page_message)
        return number

    def get_page_size(self, request) -> int:
        size = self._number(request, self.page_size_query_param, maximum=self.max_page_size)
        return self.page_size if size is None else size

    def get_page_number(self, request, paginator) -> int:
        # No ``page=last`` (DRF's alias): the schema says a page is a number.
        number = self._number(request, self.page_query_param)
        return 1 if number is None else number

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] |= {"minimum": 1, "maximum": self.max_page_size}
        return parameters
