"""The size limit on what a node produces, and how a value's size is measured without writing it out."""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from flows.engine.errors import NodeError

# The default of RunContext.max_output_bytes (the service sets LANGRUN_MAX_OUTPUT_BYTES).
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class OutputTooLarge(NodeError):
    """A node's output, or a value a component was building, passed the run's output limit."""

    def __init__(self, limit: int, what: str = "its output"):
        super().__init__(f"{what} is larger than the limit of {limit} bytes (LANGRUN_MAX_OUTPUT_BYTES).")


class _Passed(Exception):
    pass


def json_size(value: Any, *, limit: int) -> int:
    """The size of `value` written as compact JSON in UTF-8, or a number above `limit` as soon as it passes it.

    A container reached again through another reference is measured once and counted each time, so
    a value of a few shared lists that would write out as gigabytes is measured in microseconds, and
    a large value is only walked until it passes the limit. Values JSON cannot hold count as their
    text (as the run's record writes them). Raises NodeError for a value nested too deeply to write.
    """
    measured: dict[int, int] = {}

    def size(item: Any, total: int) -> int:
        kind = type(item)
        if kind is str:
            return len(encode_basestring(item).encode("utf-8", "surrogatepass"))
        if item is None or item is True:
            return 4
        if item is False:
            return 5
        if kind is float:
            return len(repr(item)) if item - item == 0 else 9  # NaN and the infinities: at most "-Infinity"
        if kind is int:
            try:
                return len(repr(item))
            except ValueError:  # too many digits to write out as text
                return item.bit_length() * 30103 // 100000 + 2
        if kind is dict or kind is list or kind is tuple:
            key = id(item)
            known = measured.get(key)
            if known is not None:
                return known
            own = 1 + max(len(item), 1)  # brackets and separators
            if kind is dict:
                for name, member in item.items():
                    own += 1 + size(name if type(name) is str else str(name), total + own) + size(member, total + own)
                    if total + own > limit:
                        raise _Passed
            else:
                for member in item:
                    own += size(member, total + own)
                    if total + own > limit:
                        raise _Passed
            measured[key] = own
            return own
        return size(str(item), total)

    try:
        result = size(value, 0)
    except _Passed:
        return limit + 1
    except RecursionError:
        raise NodeError("A value is nested too deeply to be recorded.") from None
    return result if result <= limit else limit + 1


def check_output_size(value: Any, *, limit: int | None, what: str = "its output") -> None:
    """Raise OutputTooLarge when `value` written as JSON would be larger than `limit` bytes (None: no limit)."""
    if limit is not None and json_size(value, limit=limit) > limit:
        raise OutputTooLarge(limit, what)
