"""The API's JSON parser: DRF's, refusing what no database column can store."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def json_storable_check(value: Any) -> None:
    """Raise ParseError for NUL characters or unpaired surrogates anywhere in a parsed JSON value.

    Both parse as valid JSON escapes (`\\u0000`, `\\ud800`), but PostgreSQL refuses
    them: without this check they would surface as a 500 on save.
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
                raise ParseError("JSON contains a \\u0000 character, which cannot be stored.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParseError("JSON contains an unpaired surrogate escape.") from exc


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
