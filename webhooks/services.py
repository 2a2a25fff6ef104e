"""The webhook's rules: who is calling, which flow they mean, and what the body says.

Each function raises an API exception carrying its status and Langflow's message;
nothing here writes to the database.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.db.models import F
from rest_framework import exceptions, status

from flows.models import Flow
from langrun.authentication import INVALID_API_KEY
from langrun.exceptions import Conflict, PayloadTooLarge, RequestValidationError
from langrun.models import User
from langrun.services import api_key_authenticate, api_key_matches, api_key_prefix, api_key_record_use

MISSING_API_KEY = "API key required when webhook authentication is enabled"
ACCESS_DENIED = "Access denied: You can only execute webhooks for flows you own"
EMPTY_BODY = "Request body is empty. You should provide a JSON payload containing the flow ID."
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000


class EmptyBody(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = EMPTY_BODY
    default_code = "empty_body"


def webhook_user_id_parse(*, raw: str | None) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise RequestValidationError.single(
            ["query", "user_id"], f"Input should be a valid UUID, got {raw[:100]!r}.", "uuid_parsing"
        ) from exc


def webhook_caller(*, key: str | None) -> User | None:
    """The user a webhook runs as when authentication is on; None when it is off."""
    if not settings.LANGRUN_WEBHOOK_AUTH:
        return None
    if not key:
        raise exceptions.PermissionDenied(MISSING_API_KEY)
    api_key = api_key_authenticate(key=key)
    if api_key is None:
        raise exceptions.PermissionDenied(INVALID_API_KEY)
    return api_key.user


def webhook_caller_and_flow(*, key: str | None, identifier: str, user_id: uuid.UUID | None) -> tuple[User | None, Flow]:
    """The user a webhook runs as and the flow it names, with the errors of webhook_caller and webhook_flow_lookup.

    The usual call (an active key of the flow's owner) costs one query for key,
    owner and flow together; anything else takes the step-by-step path, which
    finds the precise error.
    """
    if settings.LANGRUN_WEBHOOK_AUTH and key and user_id is None:
        flow = _flow_of_key(key=key, identifier=identifier)
        if flow is not None:
            return flow.user, flow
    caller = webhook_caller(key=key)
    return caller, webhook_flow_lookup(identifier=identifier, caller=caller, user_id=user_id)


def _flow_of_key(*, key: str, identifier: str) -> Flow | None:
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    flows = Flow.objects.select_related("user").order_by()
    flows = flows.filter(user__is_active=True, user__api_keys__prefix=prefix, user__api_keys__is_active=True)
    try:
        flows = flows.filter(pk=uuid.UUID(identifier))
    except ValueError:
        flows = flows.filter(endpoint_name=identifier)
    found = flows.annotate(key_id=F("user__api_keys__id"), key_hash=F("user__api_keys__hashed_key"))[:1]
    if not found or not api_key_matches(hashed_key=found[0].key_hash, key=key):
        return None
    flow = found[0]
    api_key_record_use(api_key_id=flow.key_id)
    return flow


def webhook_flow_lookup(*, identifier: str, caller: User | None, user_id: uuid.UUID | None) -> Flow:
    """The flow named by a UUID (its id) or anything else (its endpoint name), scoped to the caller.

    With authentication on, only the caller's flows are candidates. With it off,
    `user_id` picks the owner when several users share an endpoint name.
    """
    not_found = exceptions.NotFound(f"Flow identifier {identifier} not found")
    if caller is not None and user_id is not None and user_id != caller.pk:
        raise exceptions.PermissionDenied(ACCESS_DENIED)
    try:
        flow_id = uuid.UUID(identifier)
    except ValueError:
        flow_id = None
    # No default ordering (at most two rows are wanted); the owner is loaded only when the caller is unknown.
    flows = Flow.objects.order_by() if caller is not None else Flow.objects.select_related("user").order_by()
    if flow_id is not None:
        flow = flows.filter(pk=flow_id).first()
        if flow is None or (user_id is not None and flow.user_id != user_id):
            raise not_found
        if caller is not None and flow.user_id != caller.pk:
            raise exceptions.PermissionDenied(ACCESS_DENIED)
        return flow
    owner = caller.pk if caller is not None else user_id
    candidates = list(flows.filter(endpoint_name=identifier, **({"user_id": owner} if owner else {}))[:2])
    if not candidates:
        raise not_found
    if len(candidates) > 1:
        raise Conflict(f"Several users have a flow with endpoint name {identifier}; add ?user_id=<owner's id> to choose one.")
    return candidates[0]


def webhook_body_check_size(*, content_length: str | None) -> None:
    try:
        length = int(content_length or 0)
    except ValueError:
        length = 0
    if length > settings.LANGRUN_MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body is larger than {settings.LANGRUN_MAX_BODY_BYTES} bytes.")


def webhook_payload_decode(*, body: bytes, content_type: str) -> tuple[str, Any]:
    """The body as text and as the payload a Webhook node gives.

    JSON (any value) is parsed whatever the content type, as Langflow does; a
    body declared as JSON that does not parse is a 422. Form bodies become an
    object; other text becomes `{"payload": text}`.
    """
    if not body:
        raise EmptyBody()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestValidationError.single(
            ["body"], f"Request body is not valid UTF-8: {exc.reason} at byte {exc.start}.", "unicode_decode"
        ) from exc
    if "\x00" in text:
        raise RequestValidationError.single(["body"], "Request body contains a NUL character, which cannot be stored.", "string_nul")
    media_type = content_type.split(";", 1)[0].strip().lower()
    declared_json = media_type == "application/json" or media_type.endswith("+json")
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise RequestValidationError.single(["body"], "JSON is nested too deeply.", "json_invalid") from exc
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) and declared_json:
            raise RequestValidationError.single(
                ["body"], f"JSON decode error: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos}).", "json_invalid"
            ) from exc
        if not isinstance(exc, json.JSONDecodeError):  # NaN / Infinity
            raise RequestValidationError.single(["body"], str(exc), "json_invalid") from exc
        if media_type == FORM_MEDIA_TYPE:
            return text, _form_payload(text)
        return text, {"payload": text}
    if "\\u" in text:
        try:
            _check_strings(payload)
        except RecursionError as exc:
            raise RequestValidationError.single(["body"], "JSON is nested too deeply.", "json_invalid") from exc
    return text, payload


def _reject_constant(name: str) -> None:
    raise ValueError(f"JSON value {name} is not allowed: use a number or null.")


def _check_strings(value: Any) -> None:
    """Escapes can smuggle in what no database stores: NUL and unpaired surrogates."""
    if isinstance(value, str):
        strings = [value]
    elif isinstance(value, dict):
        strings = list(value)
        for item in value.values():
            _check_strings(item)
    elif isinstance(value, list):
        strings = []
        for item in value:
            _check_strings(item)
    else:
        return
    for s in strings:
        if "\x00" in s:
            raise RequestValidationError.single(["body"], "JSON contains a \\u0000 character, which cannot be stored.", "string_nul")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestValidationError.single(["body"], "JSON contains an unpaired surrogate escape.", "string_unicode") from exc


def _form_payload(text: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        raise RequestValidationError.single(["body"], f"Form body has more than {MAX_FORM_FIELDS} fields.", "too_long") from exc
    payload: dict[str, Any] = {}
    for key, value in pairs:
        if key in payload:
            existing = payload[key]
            payload[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            payload[key] = value
    return payload
