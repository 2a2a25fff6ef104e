"""Query-string filtering for list endpoints (django-filter), with FastAPI-shaped errors."""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters

from langrun.exceptions import RequestValidationError


def query_value(query, name: str) -> str | None:
    """A query parameter an endpoint reads itself, given at most once (else a 422 at `["query", name]`); None when absent."""
    values = query.getlist(name)
    if len(values) > 1:
        raise RequestValidationError.single(["query", name], f"Give {name} once.", "too_long")
    return values[0] if values else None


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, strict: a filter given twice, an empty non-text filter, or an
    invalid value is a 422 located at `["query", name]` (django-filter alone would ignore the first two)."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        errors = []
        for name, field in filterset.filters.items():
            values = request.query_params.getlist(name)
            if len(values) > 1:
                errors.append({"loc": ["query", name], "msg": f"Give {name} once.", "type": "too_long"})
            elif values == [""] and not isinstance(field, django_filters.CharFilter):
                errors.append({"loc": ["query", name], "msg": "Input should not be empty.", "type": "missing"})
        if not errors and not filterset.is_valid():
            errors = [
                {"loc": ["query", name], "msg": str(message), "type": getattr(error, "code", None) or "value_error"}
                for name, field_errors in filterset.errors.as_data().items()
                for error in field_errors
                for message in error.messages
            ]
        if errors:
            raise RequestValidationError(errors)
        return filterset.qs


class OrderingFilter(filters.OrderingFilter):
    """DRF's `?ordering=`, strict: one of the documented values (a field, `-` for descending), else a 422."""

    def get_ordering(self, request, queryset, view):
        values = request.query_params.getlist(self.ordering_param)
        if not values:
            return self.get_default_ordering(view)
        allowed = self._choices(view)
        if len(values) > 1 or values[0] not in allowed:
            raise RequestValidationError.single(["query", self.ordering_param], f"Input should be one of: {', '.join(allowed)}.", "enum")
        return [values[0]]

    def _choices(self, view) -> list[str]:
        return [f"{sign}{field}" for field in view.ordering_fields for sign in ("", "-")]

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.ordering_param,
                "required": False,
                "in": "query",
                "description": "Sort by this field; a leading '-' sorts in descending order.",
                "schema": {"type": "string", "enum": self._choices(view)},
            }
        ]
