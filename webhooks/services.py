"""The webhook's rules for a request: what its body says, whether it repeats a delivery, its limits, and its run.

Who calls and which flow they mean is webhooks/targets.py; signatures are webhooks/signatures.py. Each function
raises an API exception carrying its status and Langflow's message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Prefetch
from rest_framework import exceptions, status

from flows.metrics import webhook_wait_recorded
from flows.models import Flow, FlowRun, FlowVersion, NodeResult
from flows.services.concurrency import jmespath_search
from flows.services.runs import RunConditionFailed, flow_run_create, flow_run_flow_found
from flows.services.variables import variables_from_headers
from flows.services.versions import flow_version_traits
from flows.services.waits import flow_run_wait
from langrun.exceptions import PayloadTooLarge, RequestValidationError
from langrun.filters import query_value
from langrun.parsers import NON_FINITE_MESSAGE, json_unstorable, too_deep_problem
from langrun.services import api_key_record_use
from webhooks import handshakes, inbound
from webhooks.alerts.services.subscriptions import alert_url_check, run_callback_set
from webhooks.signatures import InvalidSignature, webhook_signature_verify
from webhooks.targets import MISSING_API_KEY, WebhookTarget

EMPTY_BODY = "Request body is empty. You should provide a JSON payload containing the flow ID."
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000
SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")

logger = logging.getLogger(__name__)


class WebhookMethodNotAllowed(exceptions.MethodNotAllowed):
    """405: the flow does not accept this method; `allowed` is what it does accept (the answer's `Allow`)."""

    def __init__(self, method: str, allowed: tuple[str, ...]):
        self.allowed = allowed
        super().__init__(method)


def webhook_method_check(*, flow: Flow, method: str) -> None:
    if method not in flow.allowed_methods:
        raise WebhookMethodNotAllowed(method, flow.allowed_methods)


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


def webhook_intake(*, target: WebhookTarget, retarget, request, body: bytes, waits: bool) -> FlowRun:
    """Check a request against its flow and record its run; a sender's handshake raises HandshakeAnswer. Takes
    Django's request.

    The checks, in order: a handshake answered before verification (Meta's), the signature, the handshakes of an
    authenticated request, the method, the `?callback_url=`, the idempotency key and the rate limits. Then the
    payload is decoded (a GET's is its query) and checked against the version's JSON Schemas, the request recorded
    (masked as the flow says) and checked, deduplicated by the flow's `dedupe_key` or the request's idempotency key,
    and `filtered` when the flow's `accept_if` refuses it; a `callback_url` is recorded with the run in the same
    transaction (a worker never sees the run without it). `waits`: the caller waits for the run (`?wait=`), so its
    answer is counted under its own code, not from the ledger (flows/metrics.py).

    A target the process remembered is checked by the INSERT itself. When it no longer holds (a key revoked, a
    flow's settings, version or signing secret changed ...) nothing was written; then, as after any refusal decided
    on a remembered target, `retarget()` reads the key and the flow again (raising as the first lookup would) and
    the request is decided again, from its first check, on what it found. Either way it counts once against the
    rate limits.
    """
    limits_counted = []  # by the first pass that reached them

    def intake(target: WebhookTarget) -> FlowRun:
        flow, meta, query = target.flow, request.META, request.GET
        handshakes.webhook_handshake_before_verification(flow=flow, method=request.method, query=query)
        webhook_signature_check(target=target, body=body, headers=meta)
        handshakes.webhook_handshake_after_verification(flow=flow, method=request.method, query=query, body=body)
        webhook_method_check(flow=flow, method=request.method)
        # Checked once the caller is known: the guard resolves the host, which an anonymous request must not make us do.
        callback_url = webhook_callback_parse(raw=query_value(query, "callback_url"))
        sender_key = webhook_idempotency_key(headers=meta, flow=flow)  # a malformed one is a 422 before the request counts
        if not limits_counted:
            webhook_rate_limit_check(flow=flow, key_id=target.credential_id)
            limits_counted.append(True)
        content_type = meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", ""))  # with its parameters, as sent
        record = inbound.webhook_request_record(request=request, flow=flow)
        if request.method == "GET":  # a GET's payload is its query (Meta's and Graph's verification calls, links)
            text, payload, content_type = "", record["query"], ""
        else:
            text, payload = webhook_payload_decode(body=body, content_type=content_type)
        webhook_request_check(record=record)
        webhook_payload_check_schema(version=target.version, payload=payload)
        create = functools.partial(
            flow_run_create,
            flow=flow,
            user=target.caller or flow.user,
            trigger=FlowRun.Trigger.WEBHOOK,
            payload=payload,
            body=text,
            content_type=content_type,
            idempotency_key=webhook_dedupe_value(flow=flow, record=record, payload=payload) or sender_key,
            version=target.version,
            only_if=target.only_if,
            request=record,
            filtered=not webhook_accepts(flow=flow, record=record, payload=payload),
            request_variables=variables_from_headers(meta=meta),
        )
        # A flow that answers for itself (its `response`) is answered under its own code, as a caller who waits.
        answered_by_code = waits or bool(flow.response)
        if not (answered_by_code or callback_url):
            run = create()
        else:
            try:
                with transaction.atomic():
                    run = create()
                    if not run.deduplicated and run.status != FlowRun.Status.FILTERED:  # the ledger counts a filtered run as its 200
                        if answered_by_code:
                            webhook_wait_recorded()
                        if callback_url:
                            run_callback_set(run=run, url=callback_url)
            except (IntegrityError, OperationalError) as exc:  # the run's flow, deleted meanwhile, is checked at the commit
                flow_run_flow_found(flow, exc)
                raise
        run.flow = flow  # the flow as this request found it: its `response` decides the answer
        run.webhook_caller = target.caller if target.api_key_id is not None else None  # not a token's sender, nor a signer's
        return run

    try:
        run = intake(target)
    except (exceptions.APIException, RunConditionFailed) as exc:
        if target.only_if is None or isinstance(exc, exceptions.Throttled):
            raise
        return intake(retarget())  # decided on what the process remembered: decided again on what the database holds now
    if target.only_if is not None:  # read now, a key's use was counted by its lookup
        api_key_record_use(api_key_id=target.api_key_id)
    return run


def webhook_callback_parse(*, raw: str | None) -> str | None:
    """The `?callback_url=` a request gives its run, checked by the outbound address guard (422 when refused)."""
    if not raw:
        return None
    alert_url_check(url=raw, loc=["query", "callback_url"])
    return raw


def webhook_signature_check(*, target: WebhookTarget, body: bytes, headers) -> None:
    """webhook_signature_verify; without a key, a signature that does not hold is a request without credentials."""
    try:
        webhook_signature_verify(flow=target.flow, body=body, headers=headers)
    except InvalidSignature:
        if target.credential_id is None and settings.LANGRUN_WEBHOOK_AUTH:  # as _webhook_flow_of_signed refuses it
            raise exceptions.PermissionDenied(MISSING_API_KEY) from None
        raise


def webhook_request_check(*, record: dict) -> None:
    """422 for a header or query value the database cannot store (a NUL, percent-encoded in the query)."""
    if json_unstorable(record) is None:  # one walk for the usual request; the culprit is looked for only otherwise
        return
    for part, loc in (("query", "query"), ("headers", "header")):
        for name, value in record[part].items():
            problem = json_unstorable(value)
            if problem is not None:
                raise RequestValidationError.single([loc, name], *problem)


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
    """422 with one entry per violation (at most 50) when the payload breaks the JSON Schema of a Webhook node of the version.

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

IDEMPOTENCY_HEADERS = ("HTTP_IDEMPOTENCY_KEY", "HTTP_WEBHOOK_ID")
SIGNED_ID_HEADERS = ("HTTP_WEBHOOK_ID",)
GITHUB_ID_HEADERS = ("HTTP_X_GITHUB_DELIVERY", "HTTP_IDEMPOTENCY_KEY")
MAX_IDEMPOTENCY_KEY = 255
# A preset's own delivery id where a header carries it (Stripe's and Slack's are in the body).
PRESET_ID_HEADERS = {
    "standard": SIGNED_ID_HEADERS,
    "github": GITHUB_ID_HEADERS,
    "shopify": ("HTTP_X_SHOPIFY_WEBHOOK_ID", "HTTP_IDEMPOTENCY_KEY"),
}


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


def webhook_idempotency_key(*, headers, flow: Flow) -> str | None:
    """The sender's deduplication key: `Idempotency-Key`, else Standard Webhooks' `webhook-id`.

    On a flow with a signing secret (the request's signature was verified) the signed delivery's own id
    decides, whatever `Idempotency-Key` says: `webhook-id`, which the signature covers, or GitHub's
    `X-GitHub-Delivery` (then `Idempotency-Key` only when GitHub's header is missing). A captured request
    sent again with a new `Idempotency-Key` is then the same delivery, not a new run.
    """
    names = IDEMPOTENCY_HEADERS
    preset = flow.verification_settings if flow.signing_secret else None
    if preset is not None:
        names = PRESET_ID_HEADERS.get(preset["provider"], ("HTTP_IDEMPOTENCY_KEY",))
    elif flow.signing_secret:
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


# Each preset's own delivery id, used when the flow sets no `dedupe_key` of its own.
PRESET_DEDUPE_KEYS = {
    "standard": 'headers."webhook-id"',
    "github": 'headers."x-github-delivery"',
    "stripe": "payload.id",
    "slack": "payload.event_id",
    "shopify": 'headers."x-shopify-webhook-id"',
}


def webhook_dedupe_value(*, flow: Flow, record: dict, payload: Any) -> str | None:
    """The delivery's deduplication key from the flow's `dedupe_key` (or its preset's delivery id), or None.

    A string or number found is the key (one that is too long, or not printable ASCII, by its SHA-256);
    anything else (nothing, an object, a list, true/false) leaves the request to the headers' rule.
    """
    expression = flow.dedupe_key
    if not expression and flow.signing_secret and (preset := flow.verification_settings) is not None:
        expression = PRESET_DEDUPE_KEYS.get(preset["provider"], "")
    if not expression:
        return None
    try:
        value = jmespath_search(expression, {"headers": record["headers"], "query": record["query"], "payload": payload})
    except Exception:  # a function applied to the wrong type: this request has no key  # noqa: BLE001
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_IDEMPOTENCY_KEY or not text.isprintable() or not text.isascii():
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def webhook_accepts(*, flow: Flow, record: dict, payload: Any) -> bool:
    """Whether the flow's `accept_if` holds for the request (JMESPath truth: not false, null, "", [] or {}).

    An expression that fails on this request (a function given the wrong type) does not hold: the request is filtered.
    """
    if not flow.accept_if:
        return True
    try:
        value = jmespath_search(flow.accept_if, {"headers": record["headers"], "query": record["query"], "payload": payload})
    except Exception:  # noqa: BLE001
        return False
    return value not in (None, False, "", [], {})


def webhook_rate_limit_check(*, flow: Flow, key_id: uuid.UUID | None) -> None:
    """Count the request against the per-flow and per-key limits (per minute, in the shared cache); 429 past one.

    `key_id` is the API key's or the ingest token's: each counts against LANGRUN_RATE_LIMIT_KEY.

    Counting is best effort: when the cache is unreachable the request passes (and the failure is logged), so a
    cache outage never turns into refused webhooks.
    """
    limits = [("flow", flow.pk, settings.LANGRUN_RATE_LIMIT_FLOW)]
    if key_id is not None:
        limits.append(("key", key_id, settings.LANGRUN_RATE_LIMIT_KEY))
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
    # Digits with an optional fraction: float() would also take signs, spaces, underscores and exponents.
    seconds = float(raw) if SECONDS.fullmatch(raw) else float("nan")
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
