"""The core components: a webhook's payload in, text formatting, named outputs."""

from __future__ import annotations

import contextvars
import functools
import itertools
import re
import string
import time
from typing import Any

from flows.engine.components.data import REGEX_TIMEOUT, regex_search
from flows.engine.errors import NodeError
from flows.engine.limits import InlineBudget, OutputTooLarge
from flows.engine.registry import Component, Input, Output, register


@register
class Webhook(Component):
    """The request's payload, as parsed by the webhook endpoint.

    JSON bodies arrive as their value, form bodies as an object, other text as `{"payload": text}`.
    `headers`, `query` and `method` are the request's (secrets masked by the webhook); a run no request
    started (API, admin) produces only `data`, so nodes fed only by the others are skipped.
    With a `schema` (JSON Schema), the webhook endpoint refuses a payload that does not match it
    (422, one entry per violation) before accepting the run; the node checks it again when it runs.
    """

    name = "Webhook"
    quick = True
    description = "Starts a flow with the payload of the webhook request."
    inputs = (
        Input(
            "schema",
            "object",
            required=False,
            description="JSON Schema the payload must match; the webhook answers 422 otherwise.",
            connectable=False,
        ),
    )
    outputs = (
        Output("data", "any", "The parsed request payload (a GET's: its query)."),
        Output("headers", "object", "The request's headers, names lower-cased; credentials and signatures masked as ***."),
        Output("query", "object", "The query string; a repeated key gives a list. Without x-api-key."),
        Output("method", "str", "The request's HTTP method."),
    )

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        schema = params.get("schema")
        if schema is None:
            return []
        import jsonschema  # only flows with a schema pay for importing it

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            return [("schema", f"Not a valid JSON Schema: {exc.message}", "json_schema")]
        if problem := _schema_reference_problem(schema):
            return [("schema", problem, "json_schema")]
        return []

    def run(self, *, schema: dict | None = None) -> dict[str, Any]:
        if schema:
            problems = payload_schema_violations(schema, self.context.payload, context=self.context)
            if problems:
                path, msg, _ = problems[0]
                where = "/".join(map(str, path)) or "(the payload)"
                raise NodeError(f"The payload does not match the Webhook's schema at {where}: {msg}")
        request = self.context.request
        if request is None:  # not started by a request (API, admin): nothing to read, and today's record unchanged
            return {"data": self.context.payload}
        return {
            "data": self.context.payload,
            "headers": request.get("headers") or {},
            "query": request.get("query") or {},
            "method": request.get("method"),
        }


def payload_schema_violations(schema: dict, payload: Any, *, context: Any = None) -> list[tuple[list, str, str]]:
    """Every way `payload` breaks `schema`, as `(path in the payload, message, failing keyword)`, in path order.

    The schema's regular expressions (`pattern`, `patternProperties`) share REGEX_TIMEOUT seconds (less when
    the run `context` has less time left); one still matching then is a violation that says so. The whole check
    takes at most SCHEMA_TIMEOUT seconds (a schema whose branches each descend again, `anyOf` of two `$ref`s to
    itself, tries 2**depth ways): a check still running then is the one violation `timeout` (the webhook checks
    in the web process, where other requests wait for it). `uniqueItems` is checked in linear time. At most
    MAX_VIOLATIONS are reported, each message shortened to MAX_MESSAGE characters.
    """
    import jsonschema
    from referencing import Registry
    from referencing.exceptions import Unresolvable

    budget = _RegexBudget(context)
    token = _regex_budget.set(budget)
    try:
        # An empty registry: a reference is followed within the schema only, never fetched (jsonschema's default
        # would request any URL a flow names, from the web and the workers).
        cls = _bounded_validator(jsonschema.validators.validator_for(schema))
        validator = cls(schema, format_checker=jsonschema.FormatChecker(), registry=Registry())
        found = itertools.islice(validator.iter_errors(payload), MAX_VIOLATIONS)
        errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    except _SchemaCheckTooLong:
        return [([], f"Checking the payload against the Webhook's schema took longer than {budget.check_seconds:.2g} s.", "timeout")]
    except Unresolvable as exc:  # a schema stored before references were checked when a flow is saved
        return [([], f"The Webhook's schema has a $ref that cannot be resolved: {str(exc)[:200]}", "$ref")]
    except BaseException as exc:
        # `{"$ref": "#"}`: a reference back to where it started, without reading deeper into the payload, until the
        # stack runs out; the RecursionError may surface as the panic of the Rust library resolving references (a
        # BaseException, which no `except Exception` of a web or worker process would stop).
        if not isinstance(exc, RecursionError) and type(exc).__name__ != "PanicException":
            raise
        return [([], "The Webhook's schema refers to itself without end: a $ref leads back to where it started.", "$ref")]
    finally:
        _regex_budget.reset(token)
    return [(list(e.absolute_path), _shortened(e.message), str(e.validator)) for e in errors]


# A 422 reports at most this many violations, each message at most MAX_MESSAGE characters: a message may repeat the
# value it is about (the whole array, for uniqueItems), and every item of a large body may break the schema.
MAX_VIOLATIONS = 50
MAX_MESSAGE = 300


def _shortened(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    head = MAX_MESSAGE // 2
    return f"{message[:head]} … {message[-(MAX_MESSAGE - head - 3) :]}"


_REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_SCHEMA_URI = "urn:langrun:webhook-schema"


def _schema_reference_problem(schema: dict) -> str | None:
    """Why a schema's references cannot stand, or None: each must point to a part of the schema itself."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = Registry().with_resource(_SCHEMA_URI, resource).resolver(_SCHEMA_URI)
    for ref in _schema_references(schema):
        if not ref.startswith("#"):
            return f"$ref {ref[:100]!r} points outside the schema: only references within it (#/...) are followed."
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f"$ref {ref[:100]!r} does not point to a part of the schema."
    return None


def _schema_references(schema: Any) -> list[str]:
    found, pending = [], [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            found += [node[k] for k in _REFERENCE_KEYWORDS if isinstance(node.get(k), str)]
            pending += node.values()
        elif isinstance(node, list):
            pending += node
    return found


# Seconds a whole payload check may take (less when the run has less time left); its regexes share REGEX_TIMEOUT.
SCHEMA_TIMEOUT = 5.0


class _SchemaCheckTooLong(Exception):
    pass


class _RegexBudget:
    """The time a payload check's regular expressions may take together, and the check as a whole."""

    def __init__(self, context: Any):
        remaining = context.remaining() if context is not None and hasattr(context, "remaining") else None
        self.seconds = REGEX_TIMEOUT if remaining is None else min(REGEX_TIMEOUT, remaining)
        self.deadline = time.monotonic() + self.seconds
        self.check_seconds = SCHEMA_TIMEOUT if remaining is None else min(SCHEMA_TIMEOUT, remaining)
        self.check_deadline = time.monotonic() + self.check_seconds

    def check(self) -> None:
        if time.monotonic() >= self.check_deadline:
            raise _SchemaCheckTooLong

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def search(self, pattern: str, text: str) -> bool:
        """Raises NodeError when the budget is spent, before or while matching."""
        if time.monotonic() >= self.deadline:
            raise NodeError(f"The schema's regular expressions took longer than {self.seconds:.2g} s in all.")
        return regex_search(pattern, text, context=self)


_regex_budget: contextvars.ContextVar[_RegexBudget] = contextvars.ContextVar("regex_budget")


@functools.lru_cache(maxsize=16)
def _bounded_validator(cls):
    """`cls` with the keywords that run a schema's regular expressions on the payload under the check's budget.

    (`unevaluatedProperties` with `patternProperties`, of the 2019-09 and 2020-12 drafts, still matches without one.)
    """
    import jsonschema

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string"):
            try:
                matched = _regex_budget.get().search(patrn, instance)
            except NodeError as exc:
                yield jsonschema.ValidationError(str(exc))
            else:
                if not matched:
                    yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator, patterns, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                try:
                    matched = _regex_budget.get().search(patrn, key)
                except NodeError as exc:
                    yield jsonschema.ValidationError(str(exc), path=[key])
                    return
                if matched:
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator, additional, instance, schema):
        # jsonschema matches the keys against patternProperties itself, without a time limit: the keys
        # the patterns match are found here and handed to it as declared properties instead.
        patterns = schema.get("patternProperties")
        if patterns and validator.is_type(instance, "object"):
            declared = schema.get("properties", {})
            matched = {}
            for key in instance:
                if key in declared:
                    continue
                try:
                    if any(_regex_budget.get().search(patrn, key) for patrn in patterns):
                        matched[key] = True
                except NodeError as exc:
                    yield jsonschema.ValidationError(str(exc))
                    return
            schema = {**schema, "patternProperties": {}, "properties": {**declared, **matched}}
        yield from original_additional(validator, additional, instance, schema)

    def unique_items(validator, unique, instance, schema):
        # jsonschema compares unhashable items (objects, lists) pairwise: a 1 MiB array of small objects took hours.
        if unique and validator.is_type(instance, "array"):
            seen = set()
            for item in instance:
                key = _json_equality_key(item)
                if key in seen:
                    yield jsonschema.ValidationError(f"{instance!r} has non-unique elements")
                    return
                seen.add(key)

    keywords = {"pattern": pattern}
    if "patternProperties" in cls.VALIDATORS:
        keywords["patternProperties"] = pattern_properties
    original_additional = cls.VALIDATORS.get("additionalProperties")
    if original_additional is not None:
        keywords["additionalProperties"] = additional_properties
    if "uniqueItems" in cls.VALIDATORS:
        keywords["uniqueItems"] = unique_items
    # Every keyword first looks at the clock: a check past its time stops wherever it is.
    keywords = {name: _timed(function) for name, function in {**cls.VALIDATORS, **keywords}.items()}
    return jsonschema.validators.extend(cls, keywords)


def _timed(function):
    def keyword(validator, value, instance, schema):
        _regex_budget.get().check()
        return function(validator, value, instance, schema)

    return keyword


def _json_equality_key(value: Any) -> Any:
    """A hashable key equal for two JSON values exactly when JSON Schema's equality holds (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("c", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, dict):
        return ("o", frozenset((name, _json_equality_key(member)) for name, member in value.items()))
    if isinstance(value, list | tuple):
        return ("a", tuple(_json_equality_key(member) for member in value))
    return ("x", repr(value))


# `{name}`, `{customer.name}`, `{items.0}`; format specs are short and widths bounded.
_FIELD = re.compile(r"^[^.\[\]]+(\.[^.\[\]]+)*$")
_MAX_SPEC = 16
_MAX_WIDTH = 1000  # the most a spec's width or precision may be
# Python's format-spec mini-language: [[fill]align][sign]["z"]["#"]["0"][width][grouping]["." precision][type].
_SPEC = re.compile(
    r"(?:(?P<fill>.)?[<>=^])?[-+ ]?z?\#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?",
    re.DOTALL,
)


class _SafeFormatter(string.Formatter):
    """str.format without attribute access, indexing syntax or unbounded padding.

    A spec is parsed as the mini-language and its width and precision bounded before it is applied
    (a nested `{x:{w}}` is judged by the spec it resolves to); what the fields render is counted
    against `limit` characters (the run's output limit) as they are rendered.
    """

    def __init__(self, limit: int | None = None, deadline: float | None = None):
        self.limit, self.deadline = limit, deadline
        self.rendered = 0
        self.budget = InlineBudget()  # a giant template leaves the event loop other runs share

    def get_field(self, field_name: str, args, kwargs):
        if not _FIELD.match(field_name):
            raise NodeError(f"Template field {{{field_name}}} is not allowed: use names like {{name}} or {{customer.name}}.")
        value: Any = kwargs
        walked = []
        for part in field_name.split("."):
            walked.append(part)
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                available = ", ".join(sorted(map(str, value))) if isinstance(value, dict) else "none"
                raise NodeError(f"Template key {'.'.join(walked)!r} is missing from the input (available keys: {available}).")
        return value, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        self.budget.check()
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise NodeError("The template was still rendering at the run's time limit.")
        if format_spec:
            _check_spec(format_spec)
        try:
            text = super().format_field(value, format_spec)
        except (ValueError, TypeError, OverflowError) as exc:
            raise NodeError(f"Template format spec {format_spec!r} does not fit value {value!r}: {exc}") from exc
        if format_spec and len(text) > 2 * _MAX_WIDTH and len(text) > len(super().format_field(value, "")) + 2 * _MAX_WIDTH:
            raise NodeError(f"Template format spec {format_spec!r} makes {len(text)} characters of value {str(value)[:100]!r}.")
        if self.limit is not None:
            self.rendered += len(text)
            if self.rendered > self.limit:
                raise OutputTooLarge(self.limit, "The rendered text")
        return text

    def check_unused_args(self, used_args, args, kwargs) -> None:
        return None


def _check_spec(spec: str) -> None:
    parsed = _SPEC.fullmatch(spec)
    if parsed is None:
        raise NodeError(f"Template format spec {spec!r} is not a valid format spec.")
    for part in ("width", "precision"):
        if parsed[part] is not None and int(parsed[part]) > _MAX_WIDTH:
            raise NodeError(f"Template format spec {spec!r} is too long: its {part} may be at most {_MAX_WIDTH}.")
    if len(spec) > _MAX_SPEC:
        raise NodeError(f"Template format spec {spec!r} is too long.")


_formatter = _SafeFormatter()  # only parses templates; rendering uses a formatter of its own per run


@register
class Template(Component):
    """Renders text from an object and named inputs, e.g. `Hello {name}!` or `Summarise: {text}`.

    Fields name keys of the `data` object or other named inputs (edges or params with any
    identifier as name; they win over `data`'s keys); dots walk into nested objects and lists.
    Nothing else is evaluated.
    """

    name = "Template"
    quick = True
    description = "Formats text with {field} placeholders filled from the input object and named inputs."
    inputs = (
        Input("data", "any", required=False, description="An object whose keys fill the placeholders."),
        Input("template", "str", description="Text with {field} placeholders.", connectable=False),
    )
    outputs = (Output("text", "str", "The rendered text."),)
    extra_inputs = Input("*", "any", required=False, description="A named value for the placeholder of the same name.")

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        template = params.get("template")
        if isinstance(template, str):
            try:
                list(_formatter.parse(template))
            except ValueError as exc:
                return [("template", f"Template is malformed: {exc}", "template")]
        return []

    def run(self, *, template: str, data: Any = None, **named: Any) -> dict[str, Any]:
        if data is not None and not isinstance(data, dict):
            raise NodeError(f"Template needs an object as input, got {_json_type(data)}.")
        values = {**(data or {}), **named}
        try:
            formatter = _SafeFormatter(
                limit=getattr(self.context, "max_output_bytes", None), deadline=getattr(self.context, "deadline", None)
            )
            return {"text": formatter.vformat(template, (), values)}
        except (ValueError, IndexError) as exc:
            raise NodeError(f"Template is malformed: {exc}") from exc


@register
class Output(Component):
    """Makes what reaches it part of the run's `outputs`, under its `name` (or its node id).

    Its own output carries the value on, so a flow can also chain from it.
    """

    name = "Output"
    quick = True
    description = "Records its input as one of the run's named outputs."
    inputs = (
        Input("value", "any", description="The value to record."),
        Input("name", "str", required=False, description="Key in the run's outputs (default: the node id).", connectable=False),
    )
    outputs = (Output("value", "any", "The recorded value."),)

    def run(self, *, value: Any, name: str | None = None) -> dict[str, Any]:
        self.context.outputs[name or self.node_id] = value
        return {"value": value}


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
