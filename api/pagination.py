from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        """DRF ignores a ``page_size`` it cannot read and serves the default page; here it is
        refused like any other bad parameter (a 400 problem), and a larger one than
        ``max_page_size`` is served that many."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: ["A whole number, 1 or more."]})
        return min(int(raw), self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in {self.page_query_param, self.page_size_query_param}:
                parameter["schema"]["minimum"] = 1
        return parameters
