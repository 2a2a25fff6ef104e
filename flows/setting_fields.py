"""The fields of a flow's settings in the API: JSON objects and lists in the API, checked by the services
(flows/services/webhook_settings.py, flows/services/concurrency.py), stored as text or columns in the database."""

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils import html

from flows.examples import GREETING_GRAPH
from flows.exceptions import WebhookSettingInvalid
from flows.models import WEBHOOK_HANDSHAKES, WEBHOOK_METHODS
from flows.services.webhook_settings import RESPONSE_MODES, VERIFICATION_PROVIDERS, webhook_methods_parse
from langrun.serializers import StrictCharField


class _ListSetting(serializers.Field):
    """A setting that is a list: a form gives it by repeating its key."""

    def get_value(self, dictionary):
        if html.is_html_input(dictionary) and self.field_name in dictionary:
            return dictionary.getlist(self.field_name)
        return super().get_value(dictionary)


class _ObjectSetting(serializers.Field):
    """A setting that is an object, which a form cannot hold: a form's text (even empty) is refused, not read as
    null or as the default."""

    def get_value(self, dictionary):
        if html.is_html_input(dictionary) and self.field_name in dictionary:
            return dictionary[self.field_name]
        return super().get_value(dictionary)


@extend_schema_field({"type": "object", "additionalProperties": True, "example": GREETING_GRAPH})
class GraphField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_METHODS)}, "minItems": 1, "default": ["POST"]})
class MethodsField(_ListSetting):
    """A flow's `methods`: a list in the API, canonical text in the database."""

    def to_representation(self, value: str) -> list[str]:
        return value.split(",") if value else ["POST"]

    def to_internal_value(self, data) -> str:
        if not isinstance(data, list):
            raise serializers.ValidationError('Give a list of HTTP methods, e.g. ["POST"].', code="list_type")
        try:
            return ",".join(webhook_methods_parse(data))
        except WebhookSettingInvalid as exc:
            raise serializers.ValidationError(str(exc), code=exc.type) from exc


# Described without constraints: a form-encoded request cannot carry an object, and the service checks it anyway
# (an unknown provider or a missing secret is a 422 naming the field).
@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "additionalProperties": True,
        "description": (
            f'A verification preset, or null (or {{}}) for none: {{"provider": one of {", ".join(VERIFICATION_PROVIDERS)}}}; '
            'a token preset also names "header" or "query".'
        ),
        "example": {"provider": "stripe"},
    }
)
class VerificationField(_ObjectSetting):
    """A flow's verification preset: an object in the API, canonical JSON text in the database (checked by the service)."""

    def to_representation(self, value: str):
        return json.loads(value) if value else None

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError('Give an object such as {"provider": "stripe"}, or null.', code="dict_type")
        return data  # checked by flows.services.webhook_settings, which knows whether the flow has its secret


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_HANDSHAKES)}, "default": []})
class HandshakesField(_ListSetting):
    """A flow's `handshakes`: a list in the API, canonical text in the database (checked by the service)."""

    def to_representation(self, value: str) -> list[str]:
        return value.split(",") if value else []

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError('Give a list such as ["slack"].', code="list_type")
        return data  # checked by flows.services.webhook_settings, which knows whether the flow has its secret


_JMESPATH_KEY = {
    "type": "string",
    "nullable": True,
    "maxLength": 500,
    "description": 'A JMESPath expression over {"headers", "query", "payload"}; null: one key for the whole flow.',
}


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 2147483647}, "key": _JMESPATH_KEY},
        "required": ["limit"],
        "additionalProperties": False,
        "example": {"limit": 1, "key": "payload.customer_id"},
    }
)
class ConcurrencyField(_ObjectSetting):
    """A flow's concurrency: an object in the API, `max_concurrent_runs` and `concurrency_key` in the database (checked by the service)."""

    def to_representation(self, value):
        return value

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                'Give an object such as {"limit": 1, "key": "payload.customer_id"}, or null.', code="dict_type"
            )
        return data


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "limit": {"type": "integer", "minimum": 1, "maximum": 2147483647},
            "period": {"type": "integer", "minimum": 1, "maximum": 2147483647, "description": "Seconds."},
            "key": _JMESPATH_KEY,
        },
        "required": ["limit", "period"],
        "additionalProperties": False,
        "example": {"limit": 10, "period": 60, "key": "payload.customer_id"},
    }
)
class ThrottleField(ConcurrencyField):
    """A flow's throttle: an object in the API, `throttle_limit`, `throttle_period` and `throttle_key` in the database."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError('Give an object such as {"limit": 10, "period": 60}, or null.', code="dict_type")
        return data


RESPONSE_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": (
        "What the webhook answers. accepted (default): the 202 with run_id and status_url. static: a fixed answer, "
        "sent once the run is recorded: status 200-499 (default 200), headers (not those the server sets: "
        "Content-Length, Transfer-Encoding, Connection, Set-Cookie …), body (text, or any JSON). flow: the request "
        "waits up to timeout seconds (default 10, at most LANGRUN_WEBHOOK_MAX_WAIT) for the run and answers what its "
        "Respond node produced (without one: the run's outputs as JSON; a run that failed first: 502); not done "
        "in time: the 202. A flow with a Respond node needs flow mode. Null or {}: accepted."
    ),
    "properties": {
        "mode": {"type": "string", "enum": list(RESPONSE_MODES), "default": "accepted"},
        "status": {"type": "integer", "minimum": 200, "maximum": 499, "default": 200, "description": "static: the status."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "static: the headers."},
        "body": {"description": "static: the body; text is sent as text/plain, anything else as JSON."},
        "timeout": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "default": 10,
            "description": "flow: seconds the request waits.",
        },
    },
    "example": {"mode": "static", "status": 200, "headers": {"X-Handled-By": "langrun"}, "body": "ok"},
}


@extend_schema_field(RESPONSE_SCHEMA)
class ResponseField(_ObjectSetting):
    """A flow's `response`: an object in the API (`{"mode": "accepted"}` by default), canonical JSON text in the database."""

    def to_representation(self, value: str):
        return json.loads(value) if value else {"mode": "accepted"}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError('Give an object such as {"mode": "flow", "timeout": 10}, or null.', code="dict_type")
        return data  # checked by flows.services.webhook_settings, with the flow's graph (a Respond node needs flow mode)


@extend_schema_field(RESPONSE_SCHEMA)
class ResponseExportField(serializers.JSONField):
    """A flow's `response` in its native export: the object itself."""


class DedupeKeyField(StrictCharField):
    """A flow's `dedupe_key`: null in the API for none ("" in the database); checked by the service."""

    def to_representation(self, value):
        return value or None
