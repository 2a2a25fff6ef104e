"""Query-string filtering for list endpoints (django-filter), with FastAPI-shaped errors."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend

from langrun.exceptions import RequestValidationError


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend; an invalid filter value is a 422 located at `["query", name]`."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise RequestValidationError(
                [
                    {"loc": ["query", name], "msg": str(message), "type": getattr(error, "code", None) or "value_error"}
                    for name, errors in filterset.errors.as_data().items()
                    for error in errors
                    for message in error.messages
                ]
            )
        return filterset.qs
