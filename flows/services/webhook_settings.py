"""A flow's webhook settings: checked and put in their stored form when a flow is saved or imported."""

from __future__ import annotations

from typing import Any

from flows.exceptions import WebhookSettingInvalid
from flows.models import WEBHOOK_METHODS


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


def webhook_settings_stored(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with each webhook setting it holds checked and in its stored form."""
    if "methods" in fields:
        fields = {**fields, "methods": ",".join(webhook_methods_parse(fields["methods"]))}
    return fields
