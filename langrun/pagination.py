"""limit/offset pagination that refuses malformed values instead of quietly ignoring them."""

from __future__ import annotations

from django.conf import settings
from django.db.models import TextField
from django.db.models.functions import Cast, Length
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.utils.urls import replace_query_param

from langrun.authentication import url_without_api_key
from langrun.exceptions import RequestValidationError


class Pagination(LimitOffsetPagination):
    """DRF's limit/offset pagination; a malformed, repeated or out-of-range `limit`/`offset` is a 422.
    Its links, in JSON and in the browsable API, never carry an API key given as `?x-api-key=`."""

    max_limit = 1000

    def _param(self, request, name: str, minimum: int, maximum: int | None) -> int | None:
        values = request.query_params.getlist(name)
        if not values:
            return None
        loc = ["query", name]
        if len(values) > 1:
            raise RequestValidationError.single(loc, f"Give {name} once.", "too_long")
        try:
            value = int(values[0])
        except ValueError as exc:
            raise RequestValidationError.single(loc, f"Input should be a valid integer, got {values[0][:50]!r}.", "int_parsing") from exc
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"{minimum} or more"
            raise RequestValidationError.single(loc, f"Input should be {bound}.", "out_of_range")
        return value

    def get_limit(self, request):
        limit = self._param(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request):
        return self._param(request, self.offset_query_param, 0, None) or 0

    def get_next_link(self):
        link = super().get_next_link()
        return link and url_without_api_key(link)

    def get_previous_link(self):
        link = super().get_previous_link()
        return link and url_without_api_key(link)

    def get_html_context(self):
        # The browsable API's page numbers are built from the request's own URL, not from get_next_link.
        context = super().get_html_context()
        context["page_links"] = [link._replace(url=link.url and url_without_api_key(link.url)) for link in context["page_links"]]
        return context

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_limit, "default": self.default_limit})
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update({"minimum": 0, "default": 0})
        return parameters


class SizeBoundedPagination(Pagination):
    """A page also ends once the JSON of its rows' `sized_field` passes LANGRUN_MAX_RUN_OUTPUT_BYTES characters (one
    row at least): rows whose field may each be as large as that cap would make a page of `limit` times it. `next`
    goes on from the first row left out, with the same `limit`. A subclass names the field."""

    sized_field = ""

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.asked_limit = self.get_limit(request)
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        if self.count == 0 or self.offset > self.count:
            return []
        cap = settings.LANGRUN_MAX_RUN_OUTPUT_BYTES
        if cap:
            window = queryset.annotate(_size=Length(Cast(self.sized_field, TextField())))[self.offset : self.offset + self.limit]
            rows, total = 0, 0
            for size in window.values_list("_size", flat=True):
                total += size or 0
                if rows and total > cap:
                    break
                rows += 1
            self.limit = rows
        return list(queryset[self.offset : self.offset + self.limit])

    def get_next_link(self):
        link = super().get_next_link()
        return link and replace_query_param(link, self.limit_query_param, self.asked_limit)
