"""The API's JSON parser: DRF's, refusing what no database column can store."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def json_unstorable(value: Any) -> tuple[str, str] | None:
    """Why a parsed JSON value cannot be stored, as `(message, error type)`, or None when it can.

    NUL characters and unpaired surrogates both parse as valid JSON escapes
    (`\\u0000`, `\\ud800`), but PostgreSQL refuses them (and no text column
    holds a lone surrogate): unchecked they would surface as a 500 on save.
    Iterative, so any depth the JSON parser accepted is fine here.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "JSON contains a \\u0000 character, which cannot be stored.", "string_nul"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "JSON contains an unpaired surrogate escape.", "string_unicode"
    return None


def json_storable_check(value: Any) -> None:
    """ParseError (a 422 in this API) when `value` holds what no database column can store."""
    problem = json_unstorable(value)
    if problem is not None:
        raise ParseError(problem[0])


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: too-deep nesting, NUL and lone surrogates are a 422, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON is nested too deeply.") from exc
        json_storable_check(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser; a non-empty body in which no part could be found is a 422, not an empty form."""

    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        request = (parser_context or {}).get("request")
        length = int((request.META.get("CONTENT_LENGTH") if request is not None else 0) or 0)
        if length > 0 and not result.data and not result.files:
            raise ParseError("Multipart body without any part.")
        return result
