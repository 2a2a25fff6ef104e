"""One error shape for the whole API, FastAPI's: `{"detail": "..."}`, or for 422
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

# DRF's error codes, renamed where FastAPI has a name of its own.
_TYPES = {"required": "missing", "null": "missing", "invalid": "value_error", "unique": "unique"}


class RequestValidationError(exceptions.APIException):
    """A request that is well-formed HTTP but whose content is invalid: 422 with located errors."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "Validation error"
    default_code = "validation_error"

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__(self.default_detail)

    @classmethod
    def single(cls, loc: list, msg: str, type_: str) -> RequestValidationError:
        return cls([{"loc": list(loc), "msg": msg, "type": type_}])


class DomainError(Exception):
    """A failure an app's services raise, carrying the HTTP status and error `code` the API answers it with.

    `errors`, when given, are FastAPI's located errors (`loc`, `msg`, `type`) for a 422; otherwise the
    message is the `detail`.
    """

    status = status.HTTP_400_BAD_REQUEST
    code = "error"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.errors = errors


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


def flatten_errors(detail: Any, loc: list) -> list[dict[str, Any]]:
    """Turn DRF's nested error detail into FastAPI's flat list of located errors."""
    if isinstance(detail, dict):
        return [e for key, value in detail.items() for e in flatten_errors(value, [*loc, key] if key != "non_field_errors" else loc)]
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [e for item in detail for e in flatten_errors(item, loc)]
        return [e for i, item in enumerate(detail) if item for e in flatten_errors(item, [*loc, i])]
    code = getattr(detail, "code", None) or "value_error"
    return [{"loc": loc, "msg": str(detail), "type": _TYPES.get(code, code)}]


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    # Django's upload limits (DATA_UPLOAD_MAX_MEMORY_SIZE = LANGRUN_MAX_BODY_BYTES, and the field and file counts)
    # would otherwise be an HTML 400 page.
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"Request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = PayloadTooLarge(f"Request has too many form fields or files: {exc}")
    if isinstance(exc, DomainError):
        return Response({"detail": exc.errors if exc.errors else str(exc)}, status=exc.status)
    if isinstance(exc, RequestValidationError):
        return Response({"detail": exc.errors}, status=exc.status_code)
    if isinstance(exc, exceptions.ValidationError):
        return Response({"detail": flatten_errors(exc.detail, ["body"])}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, exceptions.ParseError):
        return Response(
            {"detail": [{"loc": ["body"], "msg": str(exc.detail), "type": "json_invalid"}]}, status=status.HTTP_422_UNPROCESSABLE_ENTITY
        )
    response = exception_handler(exc, context)
    if response is not None and not (isinstance(response.data, dict) and "detail" in response.data):
        response.data = {"detail": response.data}
    return response
