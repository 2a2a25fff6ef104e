"""OpenAPI generation: the API's shared error schemas, documented on every operation, and the API-key scheme."""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_field
from rest_framework import permissions, serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


@extend_schema_field({"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}})
class LocField(serializers.ListField):
    pass


class ValidationIssueSerializer(serializers.Serializer):
    loc = LocField(help_text='Path to the bad value: "body", "query" or "path" first, then keys and indexes.')
    msg = serializers.CharField()
    type = serializers.CharField(help_text="A machine-readable code, e.g. missing, value_error, unknown_node.")


class ValidationErrorSerializer(serializers.Serializer):
    detail = ValidationIssueSerializer(many=True)


VALIDATION_EXAMPLE = OpenApiExample(
    "Validation error",
    value={"detail": [{"loc": ["body", "data", "nodes", 2, "type"], "msg": "Unknown component type 'Nope'.", "type": "unknown_component"}]},
    response_only=True,
    status_codes=["422"],
)


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def validation_error(description: str = "Invalid input: every problem with its location.") -> OpenApiResponse:
    return OpenApiResponse(ValidationErrorSerializer, description=description, examples=[VALIDATION_EXAMPLE])


FORBIDDEN = error("No valid API key or session, or not allowed for this user.")
NOT_FOUND = error("No such object among yours.")
UNSUPPORTED_MEDIA = error("The request's Content-Type is not one this operation parses.")
TOO_LARGE = error("The body is larger than LANGRUN_MAX_BODY_BYTES, or has too many form fields or files.")


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, adding the error responses every operation can give.

    403 (authentication), 404 (path parameters), 413 and 415 (request bodies; no 415
    where any content type is parsed) and 422 (any input, including a NUL character in
    a parameter) use the shared error schemas; an operation's own
    `@extend_schema(responses=...)` entries win.
    """

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        defaults = {"422": validation_error()}
        if not any(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions()):
            defaults["403"] = FORBIDDEN
        if "{" in self.path:
            defaults["404"] = NOT_FOUND
        if self.method in ("POST", "PUT", "PATCH") and self._get_request_body():
            defaults["413"] = TOO_LARGE
            if not any(parser.media_type == "*/*" for parser in self.view.get_parsers()):
                defaults["415"] = UNSUPPORTED_MEDIA
        for code, response in defaults.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "langrun.authentication.ApiKeyAuthentication"
    name = ["ApiKeyHeader", "ApiKeyQuery"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "An API key (`sk-…`)."},
            {"type": "apiKey", "in": "query", "name": "x-api-key", "description": "The same key as a query parameter; the header wins."},
        ]

    def get_security_requirement(self, auto_schema):
        return [{"ApiKeyHeader": []}, {"ApiKeyQuery": []}]


def optional_slash_paths(endpoints, **kwargs):
    """Routes match with or without a trailing slash; document collections as `/flows/` and the rest as `/flows/{id}`.

    A collection is a viewset's list/create route, or a view on a path without parameters
    (`/components/`, `/flows/upload/`); a viewset's other actions are not (`/users/whoami`).
    """
    result = []
    for path, path_regex, method, callback in endpoints:
        actions = set((getattr(callback, "actions", None) or {}).values())
        collection = bool(actions & {"list", "create"}) if actions else "{" not in path
        if path.endswith("/") and path_regex.endswith("/?$") and not collection:
            path = path[:-1]
        result.append((path, path_regex, method, callback))
    return result
