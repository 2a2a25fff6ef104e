"""The webhook's rules: who is calling, which flow they mean, and what the body says.

Each function raises an API exception carrying its status and Langflow's message;
nothing here writes runs (the signing-secret functions save the flow, the rate limit counts in the cache).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import standardwebhooks
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Prefetch
from django.utils import timezone
from rest_framework import exceptions, status

from flows.metrics import webhook_wait_recorded
from flows.models import ENDPOINT_NAME_RE, Flow, FlowRun, FlowVersion, NodeResult
from flows.services import RunConditionFailed, flow_run_create, flow_run_wait, flow_version_current, flow_version_traits
from langrun.authentication import INVALID_API_KEY
from langrun.db import loaded_instance
from langrun.exceptions import Conflict, PayloadTooLarge, RequestValidationError
from langrun.models import ApiKey, User
from langrun.parsers import NON_FINITE_MESSAGE, json_unstorable, too_deep_problem
from langrun.services import api_key_authenticate, api_key_digest, api_key_matches, api_key_prefix, api_key_record_use

MISSING_API_KEY = "API key required when webhook authentication is enabled"
ACCESS_DENIED = "Access denied: You can only execute webhooks for flows you own"
EMPTY_BODY = "Request body is empty. You should provide a JSON payload containing the flow ID."
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000

logger = logging.getLogger(__name__)
ENDPOINT_NAME = re.compile(ENDPOINT_NAME_RE)


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


@dataclass(frozen=True)
class WebhookTarget:
    """Who calls and what runs: the API key's id and its user (None without authentication), the flow and the version a run executes.

    `only_if` is set when the process remembered the target instead of reading it now: the condition
    (SQL and its parameters) under which it still holds, which the run's INSERT checks.
    """

    api_key_id: uuid.UUID | None
    caller: User | None
    flow: Flow
    version: FlowVersion
    only_if: tuple[str, list] | None = None


def webhook_caller_and_flow(
    *, key: str | None, identifier: str, user_id: uuid.UUID | None, signed: bool, fresh: bool = False
) -> WebhookTarget:
    """Who calls and which flow they mean, with the webhook's auth rules.

    With authentication on, a request needs an API key, or a signature on a flow
    that has a signing secret (checked later, on the body). The usual call (an
    active key of the flow's owner) costs one query for key, owner, flow and
    version together, or none when the process already knows them (then the
    target carries the condition the run's INSERT checks; `fresh` reads them
    again); anything else takes the step-by-step path, which finds the precise error.
    """
    auth = settings.LANGRUN_WEBHOOK_AUTH
    if auth and key and user_id is None:
        target = _webhook_target_of_key(key=key, identifier=identifier, fresh=fresh)
        if target is not None:
            return target
    api_key = webhook_api_key(key=key) if auth else None
    if auth and api_key is None:
        if not signed:
            raise exceptions.PermissionDenied(MISSING_API_KEY)
        flow = _webhook_flow_of_signed(identifier=identifier, user_id=user_id)
        return WebhookTarget(api_key_id=None, caller=None, flow=flow, version=flow_version_current(flow=flow))
    caller = api_key.user if api_key is not None else None
    flow = webhook_flow_lookup(identifier=identifier, caller=caller, user_id=user_id)
    api_key_id = api_key.pk if api_key is not None else None
    return WebhookTarget(api_key_id=api_key_id, caller=caller, flow=flow, version=flow_version_current(flow=flow))


def _webhook_flow_of_signed(*, identifier: str, user_id: uuid.UUID | None) -> Flow:
    """The flow a signature without an API key may stand for: one with a signing secret (checked later, on the body).

    Anything else answers as a request without credentials: until the signature is verified, a caller
    must not learn whether a name exists, is shared, or belongs to a signed flow.
    """
    try:
        flow = webhook_flow_lookup(identifier=identifier, caller=None, user_id=user_id)
    except (exceptions.NotFound, Conflict):
        flow = None
    if flow is None or not flow.signing_secret:
        raise exceptions.PermissionDenied(MISSING_API_KEY)
    return flow


# Key, owner, flow and current version in one hand-written query: built with the ORM, the same
# join cost about 1.5 ms of CPU per webhook to compile, ten times what the database takes to run it.
# Only the columns the webhook reads are selected; the instances built from them defer the rest,
# so code that reads another field still gets it (with a query of its own: the expiry of a previous
# signing secret, read only while a flow has one).
_TARGET_SQL = """SELECT f.id, f.user_id, f.current_version_id, f.signing_secret, f.signing_secret_previous,
       v.number, k.id, k.hashed_key
FROM {flow} f
JOIN {user} u ON u.id = f.user_id
JOIN {key} k ON k.user_id = u.id
JOIN {version} v ON v.id = f.current_version_id
WHERE k.prefix = %s AND k.is_active AND u.is_active AND f.{column} = %s
LIMIT 1"""

# What a remembered target assumes, checked by the run's INSERT in the same statement: the key is still
# active, its owner too, and the flow still has that identifier, that owner, version and signing secrets.
_TARGET_HOLDS_SQL = """EXISTS (SELECT 1 FROM {flow} f
JOIN {user} u ON u.id = f.user_id
JOIN {key} k ON k.user_id = u.id
WHERE f.id = %s AND f.{column} = %s AND f.current_version_id = %s AND f.signing_secret = %s
    AND f.signing_secret_previous = %s AND k.id = %s AND k.hashed_key = %s AND k.is_active AND u.is_active)"""


@functools.cache
def _target_sql(template: str, column: str) -> str:
    tables = {"flow": Flow, "user": User, "key": ApiKey, "version": FlowVersion}
    return template.format(column=column, **{name: connection.ops.quote_name(model._meta.db_table) for name, model in tables.items()})


class KnownTargets:
    """The targets this process has found, by the key's digest and the flow identifier, as _TARGET_SQL's row.

    A webhook whose key and flow the process already knows skips the lookup (a round trip and about a fifth
    of the webhook's CPU), and its INSERT checks _TARGET_HOLDS_SQL instead. When that no longer holds nothing
    is written, and the webhook reads the target again. At most `size`; the oldest go first. A process's
    threads share it, so every access holds the lock.
    """

    def __init__(self, *, size: int):
        self.size = size
        self._items: dict[tuple[str, str], tuple[tuple, str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[tuple, str, Any] | None:
        with self._lock:
            return self._items.get(key)

    def remember(self, key: tuple[str, str], value: tuple[tuple, str, Any]) -> None:
        with self._lock:
            self._items.pop(key, None)
            while self._items and len(self._items) >= self.size:
                del self._items[next(iter(self._items))]
            self._items[key] = value

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_known_targets = KnownTargets(size=1024)


def _webhook_target_of_key(*, key: str, identifier: str, fresh: bool = False) -> WebhookTarget | None:
    """The target when `key` is an active key of an active user who owns the flow; None for anything else."""
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    digest = api_key_digest(key)
    if fresh:
        _known_targets.forget((digest, identifier))
    elif (known := _known_targets.get((digest, identifier))) is not None:
        row, column, value = known
        flow_id, _, version_id, secret, previous_secret, _, api_key_id, key_hash = row
        holds = [flow_id, value, version_id, secret, previous_secret, api_key_id, key_hash]
        return _webhook_target_of_row(row, only_if=(_target_sql(_TARGET_HOLDS_SQL, column), holds))
    try:
        value, column = Flow._meta.pk.get_db_prep_value(uuid.UUID(identifier), connection), "id"
    except ValueError:
        if not ENDPOINT_NAME.fullmatch(identifier):
            return None
        value, column = identifier, "endpoint_name"
    with connection.cursor() as cursor:
        cursor.execute(_target_sql(_TARGET_SQL, column), [prefix, value])
        row = cursor.fetchone()
    if row is None or not api_key_matches(hashed_key=row[7], key=key):
        return None
    _known_targets.remember((digest, identifier), (row, column, value))
    return _webhook_target_of_row(row, only_if=None)


def _webhook_target_of_row(row: tuple, *, only_if: tuple[str, list] | None) -> WebhookTarget:
    flow_id, user_id, version_id, secret, previous_secret, version_number, api_key_id, _ = row
    as_uuid = Flow._meta.pk.to_python  # UUIDs as UUIDs on every database (SQLite returns their hex)
    flow = loaded_instance(
        Flow, id=as_uuid(flow_id), user_id=as_uuid(user_id), current_version_id=version_id,
        signing_secret=secret, signing_secret_previous=previous_secret,
    )  # fmt: skip
    flow.user = loaded_instance(User, id=flow.user_id, is_active=True)
    version = loaded_instance(FlowVersion, id=version_id, flow_id=flow.pk, number=version_number)
    flow.current_version = version
    api_key_id = as_uuid(api_key_id)
    if only_if is None:  # read now: the key is active. A remembered one is counted once its INSERT accepted it.
        api_key_record_use(api_key_id=api_key_id)
    return WebhookTarget(api_key_id=api_key_id, caller=flow.user, flow=flow, version=version, only_if=only_if)


def webhook_run_create(
    *,
    target: WebhookTarget,
    retarget,
    body: bytes,
    headers,
    payload: Any,
    text: str,
    content_type: str,
    idempotency_key: str | None,
    waits: bool = False,
) -> FlowRun:
    """Record the webhook's run: the payload checked against the version's JSON Schemas, then the INSERT.

    A target the process remembered is checked by the INSERT itself. When it no longer holds (a key
    revoked, a flow's version or signing secret changed ...) nothing was written, and a payload it
    refuses may be one the current version takes: then `retarget()` reads the key and the flow
    again (raising as the first lookup would), and the signature and the payload are checked
    against what it found before the run is recorded. `waits`: the caller waits for the run (`?wait=`),
    so its answer is counted under its own code, not from the ledger (flows/metrics.py).
    """
    insert = functools.partial(
        _webhook_run_insert, payload=payload, text=text, content_type=content_type, idempotency_key=idempotency_key, waits=waits
    )
    if target.only_if is not None:
        try:
            webhook_payload_check_schema(version=target.version, payload=payload)
            run = insert(target)
            api_key_record_use(api_key_id=target.api_key_id)
            return run
        except (RequestValidationError, RunConditionFailed):
            pass  # decided on what the process remembered: decided again on what the database holds now
        target = retarget()
        webhook_signature_verify(flow=target.flow, body=body, headers=headers)
    webhook_payload_check_schema(version=target.version, payload=payload)
    return insert(target)


def webhook_signature_check(*, target: WebhookTarget, retarget, body: bytes, headers) -> WebhookTarget:
    """webhook_signature_verify; a remembered target's refusal is decided again on the key and flow read now.

    Returns the target the rest of the request uses: the one given, or the one read again.
    """
    try:
        webhook_signature_verify(flow=target.flow, body=body, headers=headers)
    except InvalidSignature:
        if target.api_key_id is None and settings.LANGRUN_WEBHOOK_AUTH:
            # No key, and a signature that does not hold: as a request without credentials (_webhook_flow_of_signed).
            raise exceptions.PermissionDenied(MISSING_API_KEY) from None
        if target.only_if is None:
            raise
        target = retarget()
        webhook_signature_verify(flow=target.flow, body=body, headers=headers)
    return target


def _webhook_run_insert(target: WebhookTarget, *, payload, text, content_type, idempotency_key, waits) -> FlowRun:
    create = functools.partial(
        flow_run_create,
        flow=target.flow,
        user=target.caller or target.flow.user,
        trigger=FlowRun.Trigger.WEBHOOK,
        payload=payload,
        body=text,
        content_type=content_type,
        idempotency_key=idempotency_key,
        version=target.version,
        only_if=target.only_if,
    )
    if not waits:
        return create()
    with transaction.atomic():
        run = create()
        if not run.deduplicated:
            webhook_wait_recorded()
    return run


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
    joined = ("current_version",) if caller is not None else ("user", "current_version")
    flows = Flow.objects.select_related(*joined).order_by()
    if flow_id is not None:
        flow = flows.filter(pk=flow_id).first()
        if flow is None or (user_id is not None and flow.user_id != user_id):
            raise not_found
        if caller is not None and flow.user_id != caller.pk:
            raise exceptions.PermissionDenied(ACCESS_DENIED)
        return flow
    if not ENDPOINT_NAME.fullmatch(identifier):  # no flow has such a name; and NUL cannot even be queried on PostgreSQL
        raise not_found
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
        payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise RequestValidationError.single(["body"], *too_deep_problem()) from exc
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) and declared_json:
            raise RequestValidationError.single(
                ["body"], f"JSON decode error: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos}).", "json_invalid"
            ) from exc
        if not isinstance(exc, json.JSONDecodeError):  # NaN, Infinity, 1e999
            raise RequestValidationError.single(["body"], str(exc), "finite_number") from exc
        if media_type == FORM_MEDIA_TYPE:
            payload = _form_payload(text)
            problem = json_unstorable(payload)  # a NUL may come percent-encoded
            if problem is not None:
                raise RequestValidationError.single(["body"], *problem) from None
            return text, payload
        return text, {"payload": text}
    # Walked only when it may matter: an escape (NUL, a lone surrogate) or enough brackets to nest too deep.
    needs_walk = "\\u" in text or text.count("[") + text.count("{") > settings.LANGRUN_MAX_JSON_DEPTH
    problem = json_unstorable(payload) if needs_walk else None
    if problem is not None:
        raise RequestValidationError.single(["body"], *problem)
    return text, payload


def _reject_constant(name: str) -> None:
    raise ValueError(f"JSON value {name} is not allowed: use a number or null.")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(NON_FINITE_MESSAGE)
    return value


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


def webhook_payload_check_schema(*, version: FlowVersion, payload: Any) -> None:
    """422 with one entry per violation when the payload breaks the JSON Schema of a Webhook node of the version.

    `loc` is `["body", <path in the payload>...]`, `msg` the validator's message and
    `type` the failing keyword (`required`, `type`, `minimum` ...).
    """
    from flows.engine.components.core import payload_schema_violations

    for schema in _webhook_schemas(version):
        violations = payload_schema_violations(schema, payload)
        if violations:
            raise RequestValidationError([{"loc": ["body", *path], "msg": msg, "type": keyword} for path, msg, keyword in violations])


def _webhook_schemas(version: FlowVersion) -> tuple[dict, ...]:
    return flow_version_traits(flow_id=version.flow_id, version_id=version.pk).webhook_schemas


# --- Reliability and security ------------------------------------------------------

SIGNING_SECRET_PREFIX = "whsec_"
SIGNATURE_REQUIRED = "This flow requires signed webhook requests (webhook-signature or X-Hub-Signature-256)."
SIGNATURE_INVALID = "Invalid webhook signature."
IDEMPOTENCY_HEADERS = ("HTTP_IDEMPOTENCY_KEY", "HTTP_WEBHOOK_ID")
SIGNED_ID_HEADERS = ("HTTP_WEBHOOK_ID",)
GITHUB_ID_HEADERS = ("HTTP_X_GITHUB_DELIVERY", "HTTP_IDEMPOTENCY_KEY")
MAX_IDEMPOTENCY_KEY = 255
_SIGNATURE_ENTRY = re.compile(r"^v1,[A-Za-z0-9+/=]{1,200}$")


class InvalidSignature(exceptions.APIException):
    """401: the flow has a signing secret and the request is not signed with it."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = SIGNATURE_INVALID
    default_code = "invalid_signature"


def webhook_body_read(*, stream, content_length: str | None) -> bytes:
    """The raw body, never reading more than LANGRUN_MAX_BODY_BYTES + 1 bytes whatever Content-Length claims."""
    webhook_body_check_size(content_length=content_length)
    limit = settings.LANGRUN_MAX_BODY_BYTES
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    return b"".join(chunks)


def webhook_api_key(*, key: str | None) -> ApiKey | None:
    """The active API key a request carries; PermissionDenied for a key that is not one. None when there is no key."""
    if not key:
        return None
    api_key = api_key_authenticate(key=key)
    if api_key is None:
        raise exceptions.PermissionDenied(INVALID_API_KEY)
    return api_key


def webhook_is_signed(*, headers) -> bool:
    return bool(headers.get("HTTP_WEBHOOK_SIGNATURE") or headers.get("HTTP_X_HUB_SIGNATURE_256"))


def webhook_signature_verify(*, flow: Flow, body: bytes, headers) -> None:
    """Check a signed request against the flow's signing secrets (current, and previous during its grace period).

    Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`; 5 minutes of tolerance; several
    space-separated signatures) is checked by the `standardwebhooks` library; GitHub's `X-Hub-Signature-256:
    sha256=<hex>` is an HMAC-SHA256 of the body keyed with the secret as written. Comparisons are constant-time.
    Raises InvalidSignature (401); does nothing for a flow without a secret.
    """
    secrets_ = webhook_signing_secrets(flow=flow)
    if not secrets_:
        return
    if not webhook_is_signed(headers=headers):
        raise InvalidSignature(SIGNATURE_REQUIRED)
    standard = headers.get("HTTP_WEBHOOK_SIGNATURE")
    if standard:
        entries = [e for e in standard.split(" ") if _SIGNATURE_ENTRY.match(e)]
        swh_headers = {
            "webhook-id": headers.get("HTTP_WEBHOOK_ID", ""),
            "webhook-timestamp": headers.get("HTTP_WEBHOOK_TIMESTAMP", ""),
            "webhook-signature": " ".join(entries),
        }
        for secret in secrets_:
            try:
                standardwebhooks.Webhook(secret).verify(body, swh_headers, json_parse=False)
            except Exception:  # noqa: S112 - every failure (bad header, encoding, timestamp, mismatch) is "not this secret"
                continue
            return
        raise InvalidSignature()
    github = headers.get("HTTP_X_HUB_SIGNATURE_256", "")
    given = github[len("sha256=") :].strip().lower() if github.startswith("sha256=") else ""
    for secret in secrets_:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), given.encode("ascii", "replace")):
            return
    raise InvalidSignature()


def webhook_signing_secrets(*, flow: Flow) -> list[str]:
    secrets_ = [flow.signing_secret] if flow.signing_secret else []
    if flow.signing_secret_previous:  # its expiry is read only then (the webhook's lookup defers it)
        expires = flow.signing_secret_previous_expires_at
        if expires and expires > timezone.now():
            secrets_.append(flow.signing_secret_previous)
    return secrets_


def webhook_signing_secret_rotate(*, flow: Flow, grace_seconds: int | None = None) -> str:
    """Give the flow a new signing secret and return it (the only time it is shown).

    The previous secret, if any, is still accepted for `grace_seconds`
    (LANGRUN_SIGNING_SECRET_GRACE by default; 0 revokes it at once).
    """
    if grace_seconds is None:
        grace_seconds = settings.LANGRUN_SIGNING_SECRET_GRACE
    secret = SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    now = timezone.now()
    if flow.signing_secret and grace_seconds > 0:
        flow.signing_secret_previous = flow.signing_secret
        flow.signing_secret_previous_expires_at = now + timedelta(seconds=grace_seconds)
    else:
        flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", None
    flow.signing_secret = secret
    flow.save(update_fields=["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "updated_at"])
    return secret


def webhook_signing_secret_remove(*, flow: Flow) -> None:
    """Stop requiring signatures for the flow (and forget both secrets)."""
    flow.signing_secret, flow.signing_secret_previous, flow.signing_secret_previous_expires_at = "", "", None
    flow.save(update_fields=["signing_secret", "signing_secret_previous", "signing_secret_previous_expires_at", "updated_at"])


def webhook_idempotency_key(*, headers, flow: Flow) -> str | None:
    """The sender's deduplication key: `Idempotency-Key`, else Standard Webhooks' `webhook-id`.

    On a flow with a signing secret (the request's signature was verified) the signed delivery's own id
    decides, whatever `Idempotency-Key` says: `webhook-id`, which the signature covers, or GitHub's
    `X-GitHub-Delivery` (then `Idempotency-Key` only when GitHub's header is missing). A captured request
    sent again with a new `Idempotency-Key` is then the same delivery, not a new run.
    """
    names = IDEMPOTENCY_HEADERS
    if flow.signing_secret:
        names = SIGNED_ID_HEADERS if headers.get("HTTP_WEBHOOK_SIGNATURE") else GITHUB_ID_HEADERS
    for header in names:
        value = headers.get(header)
        if value is None:
            continue
        if not value or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable() or not value.isascii():
            name = header[5:].replace("_", "-").title()
            raise RequestValidationError.single(
                ["header", name], f"{name} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters.", "string_pattern_mismatch"
            )
        return value
    return None


def webhook_rate_limit_check(*, flow: Flow, api_key_id: uuid.UUID | None) -> None:
    """Count the request against the per-flow and per-key limits (per minute, in the shared cache); 429 past one.

    Counting is best effort: when the cache is unreachable the request passes (and the failure is logged), so a
    cache outage never turns into refused webhooks.
    """
    limits = [("flow", flow.pk, settings.LANGRUN_RATE_LIMIT_FLOW)]
    if api_key_id is not None:
        limits.append(("key", api_key_id, settings.LANGRUN_RATE_LIMIT_KEY))
    now = time.time()
    window = int(now // 60)
    for scope, ident, limit in limits:
        if limit <= 0:
            continue
        key = f"ratelimit:{scope}:{ident}:{window}"
        try:
            cache.add(key, 0, timeout=120)
            count = cache.incr(key)
        except Exception:
            logger.warning("Rate-limit counter unavailable; letting the request through", exc_info=True)
            return
        if count > limit:
            raise exceptions.Throttled(
                wait=max(1, math.ceil((window + 1) * 60 - now)),
                detail=f"Rate limit exceeded: at most {limit} webhook requests per minute for this {scope}.",
            )


def webhook_wait_parse(*, raw: str | None) -> float:
    """Seconds the caller asked to wait for the run (`?wait=`), capped by LANGRUN_WEBHOOK_MAX_WAIT; 0 when absent."""
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds < 0:
        raise RequestValidationError.single(
            ["query", "wait"], f"Input should be a number of seconds, 0 or more, got {raw[:100]!r}.", "float_parsing"
        )
    return min(seconds, settings.LANGRUN_WEBHOOK_MAX_WAIT)


def webhook_run_wait(*, run: FlowRun, seconds: float) -> FlowRun | None:
    """The run with its node results once it has finished, waiting up to `seconds`; None if it is still going."""
    if seconds <= 0:
        return None
    run = flow_run_wait(run_id=run.id, timeout=seconds)
    if run.status not in FlowRun.TERMINAL:
        return None
    return FlowRun.objects.prefetch_related(Prefetch("node_results", queryset=NodeResult.objects.order_by("order"))).get(pk=run.pk)
