"""A flow's webhook settings: checked and put in their stored form when a flow is saved or imported."""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings

from flows.engine.components.respond import BODILESS_STATUSES, answer_headers_problem, answer_status_problem
from flows.exceptions import WebhookSettingInvalid
from flows.models import WEBHOOK_HANDSHAKES, WEBHOOK_METHODS


def webhook_methods_parse(value: Any) -> tuple[str, ...]:
    """The methods a flow accepts, upper-cased, without repeats, in WEBHOOK_METHODS order.

    Takes a list of names or their stored text ("GET,POST"); raises WebhookSettingInvalid for
    anything else, an unknown method or none at all.
    """
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise WebhookSettingInvalid("methods", 'Give a list of HTTP methods, e.g. ["POST"].', "list_type")
    wanted = {m.strip().upper() for m in value}
    unknown = sorted(wanted - set(WEBHOOK_METHODS))
    if unknown:
        raise WebhookSettingInvalid("methods", f"Unknown method {', '.join(unknown)}: use {', '.join(WEBHOOK_METHODS)}.", "enum")
    if not wanted:
        raise WebhookSettingInvalid("methods", "Give at least one method.", "too_short")
    return tuple(m for m in WEBHOOK_METHODS if m in wanted)


# The verification presets: each provider's scheme is checked in webhooks/signatures.py.
VERIFICATION_PROVIDERS = ("standard", "github", "stripe", "slack", "shopify", "token")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def webhook_verification_parse(value: Any, *, has_secret: bool) -> str:
    """The stored form of a verification preset: canonical JSON, or "" for none (Standard Webhooks or GitHub).

    `{"provider": "token"}` also names where the token is: `"header"` or `"query"` (one of them). A preset
    needs the flow's secret to be set first (POST /flows/{id}/signing-secret); raises WebhookSettingInvalid.
    """
    if value is None or value == {} or value == "":
        return ""
    if not isinstance(value, dict):
        raise WebhookSettingInvalid("verification", 'Give an object such as {"provider": "stripe"}.', "dict_type")
    provider = value.get("provider")
    if provider not in VERIFICATION_PROVIDERS:
        raise WebhookSettingInvalid(
            "verification", f"Unknown provider {provider!r}: use one of {', '.join(VERIFICATION_PROVIDERS)}.", "enum"
        )
    allowed = {"provider", "header", "query"} if provider == "token" else {"provider"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise WebhookSettingInvalid("verification", f"Unknown field {', '.join(extra)} for provider {provider}.", "extra_forbidden")
    if provider == "token":
        places = [k for k in ("header", "query") if k in value]
        if len(places) != 1:
            raise WebhookSettingInvalid("verification", "A token preset names exactly one of header or query.", "missing")
        name = value[places[0]]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() == "x-api-key":
            raise WebhookSettingInvalid(
                "verification",
                f"The token's {places[0]} must be a name of letters, digits, '-', '_' or '.' (not x-api-key).",
                "string_pattern_mismatch",
            )
        if places[0] == "header" and "_" in name:
            # gunicorn (and nginx by default) drop such headers: every request would then be refused.
            raise WebhookSettingInvalid(
                "verification", "The token's header cannot hold an underscore: web servers drop such headers.", "string_pattern_mismatch"
            )
    if not has_secret:
        raise WebhookSettingInvalid(
            "verification",
            "This preset needs the flow's secret: set it first with POST /api/v1/flows/{id}/signing-secret.",
            "missing_secret",
        )
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


MAX_DEDUPE_KEY = 500


def webhook_handshakes_parse(value: Any, *, has_secret: bool) -> str:
    """The stored form of `handshakes` ("slack,graph"); Meta's needs the flow's secret (its verify token)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(h, str) for h in value):
        raise WebhookSettingInvalid("handshakes", 'Give a list such as ["slack"].', "list_type")
    unknown = sorted(set(value) - set(WEBHOOK_HANDSHAKES))
    if unknown:
        raise WebhookSettingInvalid("handshakes", f"Unknown handshake {', '.join(unknown)}: use {', '.join(WEBHOOK_HANDSHAKES)}.", "enum")
    if "meta" in value and not has_secret:
        raise WebhookSettingInvalid(
            "handshakes", "Meta's handshake checks hub.verify_token against the flow's secret: set it first.", "missing_secret"
        )
    return ",".join(h for h in WEBHOOK_HANDSHAKES if h in value)


def webhook_dedupe_key_parse(value: Any, *, field: str = "dedupe_key") -> str:
    """A JMESPath expression setting (`dedupe_key`, `accept_if`), checked (it must compile); "" for none."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > MAX_DEDUPE_KEY:
        raise WebhookSettingInvalid(field, f"Give a JMESPath expression of at most {MAX_DEDUPE_KEY} characters.", "string_type")
    import jmespath
    import jmespath.exceptions

    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        raise WebhookSettingInvalid(field, f"Not a valid JMESPath expression: {exc}", "jmespath") from exc
    except RecursionError:  # the parser recurses once per level of nesting
        raise WebhookSettingInvalid(field, "Not a valid JMESPath expression: it is nested too deeply.", "jmespath") from None
    return value


# What the webhook answers (webhooks/answers.py): the 202 (stored as ""), a fixed answer, or what the run produced.
RESPONSE_MODES = ("accepted", "static", "flow")
RESPONSE_FLOW_TIMEOUT = 10.0
MAX_RESPONSE = 16384  # characters of the stored JSON: a static answer is an acknowledgement, not a document
_RESPONSE_FIELDS = {"accepted": {"mode"}, "static": {"mode", "status", "headers", "body"}, "flow": {"mode", "timeout"}}


def webhook_response_parse(value: Any) -> str:
    """The stored form of `response`: canonical JSON with its defaults filled in, or "" for the 202 (`accepted`).

    `static`: `status` (200 to 499, default 200), `headers` (none the server sets) and `body` (text, or any JSON);
    `flow`: `timeout`, the seconds the request waits for its run (default 10, at most LANGRUN_WEBHOOK_MAX_WAIT).
    """
    if value is None or value == "" or value == {}:
        return ""
    if not isinstance(value, dict):
        raise WebhookSettingInvalid("response", 'Give an object such as {"mode": "flow", "timeout": 10}.', "dict_type")
    mode = value.get("mode")
    if mode not in RESPONSE_MODES:
        raise WebhookSettingInvalid("response", f"Unknown mode {mode!r}: use one of {', '.join(RESPONSE_MODES)}.", "enum")
    extra = sorted(set(value) - _RESPONSE_FIELDS[mode])
    if extra:
        raise WebhookSettingInvalid("response", f"Unknown field {', '.join(extra)} for mode {mode}.", "extra_forbidden")
    if mode == "accepted":
        return ""
    if mode == "static":
        stored = {"mode": mode, "status": value.get("status", 200), "headers": value.get("headers") or {}, "body": value.get("body", "")}
        if problem := answer_status_problem(stored["status"]):
            raise WebhookSettingInvalid("response", problem, "status_range")
        if problem := answer_headers_problem(stored["headers"]):
            raise WebhookSettingInvalid("response", problem, "header_not_allowed")
        if stored["status"] in BODILESS_STATUSES and stored["body"] not in ("", None):
            raise WebhookSettingInvalid("response", f"A {stored['status']} answer has no body: leave body out.", "body_not_allowed")
    else:
        limit = settings.LANGRUN_WEBHOOK_MAX_WAIT
        timeout = value.get("timeout", min(RESPONSE_FLOW_TIMEOUT, limit))
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= limit:
            raise WebhookSettingInvalid(
                "response", f"The timeout must be a number of seconds above 0, at most {limit:g} (LANGRUN_WEBHOOK_MAX_WAIT).", "timeout"
            )
        stored = {"mode": mode, "timeout": timeout}
    try:
        text = json.dumps(stored, sort_keys=True, separators=(",", ":"), allow_nan=False)
        json.dumps(stored, ensure_ascii=False).encode()  # what is sent: UTF-8, which a lone surrogate is not
    except (ValueError, UnicodeEncodeError) as exc:
        raise WebhookSettingInvalid(
            "response", "The body must be JSON in UTF-8 (no NaN, Infinity or lone surrogate).", "json_invalid"
        ) from exc
    if len(text) > MAX_RESPONSE:
        raise WebhookSettingInvalid("response", f"The answer must be at most {MAX_RESPONSE} characters as JSON.", "too_long")
    return text


def webhook_response_graph_check(*, response: str, data: Any) -> None:
    """A Respond node answers only in `flow` mode: 422 on `response` for one in a flow whose mode is another."""
    if response.startswith('{"mode":"flow"'):
        return
    nodes = data.get("nodes") if isinstance(data, dict) else None
    # A graph not yet validated (an import checks its settings first): nodes that are no list are the graph's 422.
    respond = [n.get("id") for n in nodes if isinstance(n, dict) and n.get("type") == "Respond"] if isinstance(nodes, list) else []
    if respond:
        raise WebhookSettingInvalid(
            "response",
            f'Respond node {respond[0]!r} answers the webhook only in flow mode: set response to {{"mode": "flow"}} or remove it.',
            "respond_needs_flow_mode",
        )


def webhook_settings_stored(fields: dict[str, Any], *, has_secret: bool = False) -> dict[str, Any]:
    """`fields` with each webhook setting it holds checked and in its stored form. `has_secret`: the flow has a signing secret."""
    if "methods" in fields:
        fields = {**fields, "methods": ",".join(webhook_methods_parse(fields["methods"]))}
    if "handshakes" in fields:
        fields = {**fields, "handshakes": webhook_handshakes_parse(fields["handshakes"], has_secret=has_secret)}
    if "accept_if" in fields:
        fields = {**fields, "accept_if": webhook_dedupe_key_parse(fields["accept_if"], field="accept_if")}
    if "dedupe_key" in fields:
        fields = {**fields, "dedupe_key": webhook_dedupe_key_parse(fields["dedupe_key"])}
    if "verification" in fields:
        fields = {**fields, "verification": webhook_verification_parse(fields["verification"], has_secret=has_secret)}
    if "response" in fields:
        fields = {**fields, "response": webhook_response_parse(fields["response"])}
    return fields
