"""The Respond component, and the rules of an answer langrun lets a flow give its webhook caller.

The rules (status range, headers a flow may not set) are shared with a flow's `static` response setting, which
is checked when the flow is saved (flows/services/webhook_settings.py).
"""

from __future__ import annotations

import re
from typing import Any

from flows.engine.components.core import _formatter, _SafeFormatter
from flows.engine.errors import NodeError
from flows.engine.registry import Component, Input, Output, register

# 2xx, 3xx and 4xx: a 1xx is not an answer, and a 5xx would read as langrun failing (and make senders retry).
ANSWER_STATUS_MIN, ANSWER_STATUS_MAX = 200, 499
# Statuses whose answer has no body: a body given for them is left out.
BODILESS_STATUSES = frozenset({204, 205, 304})
# Headers the server computes or that describe the connection, not the answer; and Set-Cookie (a webhook
# has no session to keep). A flow setting one would make the answer lie about its body, or break its framing.
UNSAFE_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "date",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "server",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")  # RFC 9110's token: a header name
_ONE_FIELD = re.compile(r"^\{([^{}:!]+)\}$")


def answer_status_problem(status: Any) -> str | None:
    """Why `status` cannot be an answer's status, or None."""
    if isinstance(status, bool) or not isinstance(status, int) or not ANSWER_STATUS_MIN <= status <= ANSWER_STATUS_MAX:
        return f"The status must be a whole number from {ANSWER_STATUS_MIN} to {ANSWER_STATUS_MAX}, got {status!r}."
    return None


def answer_headers_problem(headers: Any) -> str | None:
    """Why `headers` cannot be an answer's headers, or None (a template's text, or the values it rendered)."""
    if not isinstance(headers, dict):
        return 'The headers must be an object such as {"X-Handled-By": "langrun"}.'
    if len(headers) > MAX_HEADERS:
        return f"At most {MAX_HEADERS} headers."
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):  # `$` alone would let a final line break through
            return f"Header name {name[:100]!r} is not a valid HTTP header name."
        if name.lower() in UNSAFE_HEADERS:
            return f"Header {name} cannot be set: the server sets it (not allowed: {', '.join(sorted(UNSAFE_HEADERS))})."
        if not isinstance(value, str):
            return f"Header {name}'s value must be text."
        if len(value) > MAX_HEADER_VALUE or not value.isascii() or not value.isprintable():
            return f"Header {name}'s value must be at most {MAX_HEADER_VALUE} printable ASCII characters on one line."
    return None


@register
class Respond(Component):
    """The answer to the webhook request of a flow whose `response` mode is `flow`: a status, headers and a body.

    A text `body` is a template: `{field}` placeholders as in Template, filled from `data` and named inputs;
    a body that is exactly one placeholder (`{reply}`) is that value itself. An object or list is sent as JSON,
    its strings filled the same way. Header values are templates too. Text is sent as text/plain, anything
    else as JSON, unless the headers set Content-Type. Elsewhere (the run API, the admin) it only records the answer.
    """

    name = "Respond"
    quick = True
    description = "Answers the webhook request (flow response mode): status, headers and a body with {field} placeholders."
    inputs = (
        Input("data", "any", required=False, description="An object whose keys fill the placeholders."),
        Input("status", "int", required=False, default=200, description=f"The HTTP status ({ANSWER_STATUS_MIN} to {ANSWER_STATUS_MAX})."),
        Input(
            "headers",
            "object",
            required=False,
            description="Headers of the answer; values may hold {field} placeholders.",
            connectable=False,
        ),
        Input(
            "body",
            "any",
            required=False,
            default="",
            description='Text with {field} placeholders, exactly "{field}" for that value as is, or an object/list sent as JSON.',
            connectable=False,
        ),
    )
    outputs = (Output("response", "object", "The answer: {status, headers, body}."),)
    extra_inputs = Input("*", "any", required=False, description="A named value for the placeholder of the same name.")

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        problems = []
        if "status" in params and (problem := answer_status_problem(params["status"])):
            problems.append(("status", problem, "status_range"))
        if params.get("headers") is not None and (problem := answer_headers_problem(params["headers"])):
            problems.append(("headers", problem, "header_not_allowed"))
        elif isinstance(params.get("headers"), dict):
            problems += [("headers", p, "template") for p in map(_template_problem, params["headers"].values()) if p]
        problems += [("body", p, "template") for p in map(_template_problem, _strings(params.get("body"))) if p]
        return problems

    def run(self, *, data: Any = None, status: int = 200, headers: dict | None = None, body: Any = "", **named: Any) -> dict[str, Any]:
        if data is not None and not isinstance(data, dict):
            raise NodeError(f"Respond needs an object as data, got {type(data).__name__}.")
        if problem := answer_status_problem(status):
            raise NodeError(problem)
        formatter = _SafeFormatter(limit=getattr(self.context, "max_output_bytes", None), deadline=getattr(self.context, "deadline", None))
        values = {**(data or {}), **named}
        try:
            rendered_headers = {name: formatter.vformat(value, (), values) for name, value in (headers or {}).items()}
            rendered_body = _fill(body, formatter, values)
        except (ValueError, IndexError) as exc:
            raise NodeError(f"Respond's template is malformed: {exc}") from exc
        if problem := answer_headers_problem(rendered_headers):
            raise NodeError(problem)
        return {"response": {"status": status, "headers": rendered_headers, "body": "" if body is None else rendered_body}}


def _fill(value: Any, formatter: _SafeFormatter, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _ONE_FIELD.match(value)
        return formatter.get_field(whole[1], (), values)[0] if whole else formatter.vformat(value, (), values)
    if isinstance(value, dict):
        return {k: _fill(v, formatter, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, formatter, values) for v in value]
    return value


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _template_problem(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        list(_formatter.parse(text))
    except ValueError as exc:
        return f"Template is malformed: {exc}"
    return None
