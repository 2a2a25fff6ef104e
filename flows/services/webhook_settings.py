"""A flow's webhook settings: checked and put in their stored form when a flow is saved or imported."""

from __future__ import annotations

import json
import re
from typing import Any

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
        if not isinstance(name, str) or not _NAME.match(name) or name.lower() == "x-api-key":
            raise WebhookSettingInvalid(
                "verification",
                f"The token's {places[0]} must be a name of letters, digits, '-', '_' or '.' (not x-api-key).",
                "string_pattern_mismatch",
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
    return value


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
    return fields
