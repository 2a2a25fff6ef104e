"""The request as a flow sees it and a run records it: method, headers (lower-cased) and query, secrets masked.

Secrets never reach a flow or the database: the caller's credentials (`x-api-key`, `authorization`, `cookie`),
Langflow's per-run variable headers and the signature headers of the verification the flow uses are replaced by MASK, `x-api-key` is dropped from the query and a `callback_url` masked.
"""

from __future__ import annotations

from typing import Any

from flows.models import Flow
from webhooks.signatures import webhook_signature_header_names

MASK = "***"
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization", "cookie"})
QUERY_DROPPED = frozenset({"x-api-key"})
# A callback URL may carry its receiver's token: recorded by name only (webhooks/alerts/services/outbox.py looks for the name).
QUERY_MASKED = frozenset({"callback_url"})
# Langflow's X-LANGFLOW-GLOBAL-VAR-<NAME> headers carry a variable's value for one run (often a credential).
VARIABLE_HEADER_PREFIX = "x-langflow-global-var-"
# CGI names that carry request headers without the HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def webhook_masked_headers(*, flow: Flow) -> frozenset[str]:
    """The header names (lower-case) whose values a flow's record of a request never holds."""
    signed = webhook_signature_header_names(flow=flow)
    return CREDENTIAL_HEADERS | frozenset(signed) if signed else CREDENTIAL_HEADERS


def webhook_masked_query(*, flow: Flow) -> str | None:
    """The query parameter whose value is masked: a token preset's, when it is sent in the query."""
    preset = flow.verification_settings
    return preset.get("query") if preset is not None and preset["provider"] == "token" else None


def webhook_request_headers(*, meta, masked: frozenset[str]) -> dict[str, str]:
    headers = {}
    for name, value in meta.items():
        if name.startswith("HTTP_"):
            key = name[5:].replace("_", "-").lower()
        elif name in _UNPREFIXED:
            if not value:  # Django's test client and some servers set an empty CONTENT_TYPE/LENGTH for no body
                continue
            key = _UNPREFIXED[name]
        else:
            continue
        headers[key] = MASK if key in masked or key.startswith(VARIABLE_HEADER_PREFIX) else value
    return headers


def webhook_request_query(*, query, masked: str | None = None) -> dict[str, Any]:
    """The query string as an object: a repeated key becomes a list of its values, in order."""
    result: dict[str, Any] = {}
    for key, values in query.lists():
        if key.lower() in QUERY_DROPPED:
            continue
        result[key] = MASK if key == masked or key in QUERY_MASKED else values[0] if len(values) == 1 else list(values)
    return result


def webhook_request_record(*, request, flow: Flow) -> dict[str, Any]:
    """`{method, headers, query}` of a Django request to `flow`'s webhook, masked."""
    return {
        "method": request.method,
        "headers": webhook_request_headers(meta=request.META, masked=webhook_masked_headers(flow=flow)),
        "query": webhook_request_query(query=request.GET, masked=webhook_masked_query(flow=flow)),
    }
