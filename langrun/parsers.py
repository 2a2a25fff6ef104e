"""The API's JSON parser: DRF's, refusing what no database column can store."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def json_unstorable(value: Any) -> tuple[str, str] | None:
    """Why a parsed JSON value cannot be stored and read back, as `(message, error type)`, or None when it can.

    NUL characters and unpaired surrogates both parse as valid JSON escapes
    (`\\u0000`, `\\ud800`), but PostgreSQL refuses them (and no text column
    holds a lone surrogate); a number too large for a float (`1e999`) parses as
    infinity, which neither JSON column takes; and a value nested deeper than
    LANGRUN_MAX_JSON_DEPTH is stored but cannot be rendered again. Unchecked,
    each would surface as a 500 on save or on every later read. Iterative, so
    any depth the JSON parser accepted is fine here.
    """
    max_depth = settings.LANGRUN_MAX_JSON_DEPTH
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return too_deep_problem()
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "JSON contains a \\u0000 character, which cannot be stored.", "string_nul"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "JSON contains an unpaired surrogate escape.", "string_unicode"
        elif isinstance(item, float) and not math.isfinite(item):
            return NON_FINITE_MESSAGE, "finite_number"
    return None


NON_FINITE_MESSAGE = "JSON numbers must be finite: NaN, Infinity and numbers too large for a float (such as 1e999) are not allowed."


def too_deep_problem() -> tuple[str, str]:
    return f"JSON is nested too deeply: at most {settings.LANGRUN_MAX_JSON_DEPTH} levels of objects and arrays.", "json_invalid"


def json_storable_check(value: Any) -> None:
    """ParseError (a 422 in this API) when `value` holds what no database column can store."""
    problem = json_unstorable(value)
    if problem is not None:
        raise ParseError(problem[0])


def json_text_unstorable(text: str) -> tuple[str, str] | None:
    """For text taken as JSON when it parses as JSON (/run's `input_value`): why its value cannot be stored, or None.

    Text that does not parse (NaN and Infinity are not JSON) is no JSON value, and None too.
    """
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        return too_deep_problem()
    except ValueError:
        return None
    return json_unstorable(value)


def _not_json(name: str) -> None:  # NaN, Infinity, -Infinity: Python's json takes them, JSON does not
    raise ValueError(NON_FINITE_MESSAGE)


def json_document_loads(text: str) -> Any:
    """A JSON document read from a file (a flow export), refused as the API's parser refuses a body: ValueError, with
    the reason, for text that is not JSON, NaN or Infinity, nesting too deep for the parser or past
    LANGRUN_MAX_JSON_DEPTH, or what no database column can store (json_unstorable)."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError(too_deep_problem()[0]) from None
    problem = json_unstorable(value)
    if problem is not None:
        raise ValueError(problem[0])
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: too-deep nesting, non-finite numbers, NUL and lone surrogates are a 422, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(too_deep_problem()[0]) from exc
        json_storable_check(data)
        return data


# What a multipart body adds to the files it carries (boundaries, part headers), allowed on top of a file limit.
MULTIPART_OVERHEAD = 64 * 1024


def max_body_bytes(view) -> int:
    """The largest request body `view` takes: its own `max_body_bytes()`, else LANGRUN_MAX_BODY_BYTES."""
    own = getattr(view, "max_body_bytes", None)
    return own() if own is not None else settings.LANGRUN_MAX_BODY_BYTES


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser. A body whose Content-Length passes the view's limit (max_body_bytes) is a 413
    before any of it is read (Django would spool its files to disk first); a non-empty body in which no part
    could be found is a 422, not an empty form."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            length = int((request.META.get("CONTENT_LENGTH") if request is not None else 0) or 0)
        except ValueError:
            length = 0
        limit = max_body_bytes((parser_context or {}).get("view"))
        if length > limit:
            from langrun.exceptions import PayloadTooLarge  # imports DRF's views, which import this module

            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        result = super().parse(stream, media_type, parser_context)
        if length > 0 and not result.data and not result.files:
            raise ParseError("Multipart body without any part.")
        return result
